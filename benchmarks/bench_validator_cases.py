"""Benchmark: ingest every valid R4 case of the FHIR validator test suite, each as its own export.

The reference validator's test suite (``FHIR/fhir-test-cases``, ``validator/manifest.json``) records, for each case,
whether the Java reference validator accepts it. A case it accepts is valid FHIR R4, so Shipa must keep every resource
in it (issue 14): findings are allowed, quarantine is not, except for JSON with comments (not JSON; documented).
This script ingests each valid case alone (``<tmp>/fhir/<name>.json``, one worker, the real ingest stage in this one
process) and prints, per case, the report's resource counts and every quarantined resource with its defect and
diagnostics, then the summary line and the quarantine reasons grouped across cases.

The case list is ``tests/data/fhir-test-cases/cases.json`` (the pinned commit, the selection rule, every case); the
case files come from a local copy of the repository at that commit:

    python benchmarks/bench_validator_cases.py --git-dir /path/to/fhir-test-cases/.git     # files via git show
    python benchmarks/bench_validator_cases.py --cases /path/to/fhir-test-cases            # a checkout or tree
    python benchmarks/bench_validator_cases.py --git-dir ... --invalid                     # also the invalid cases
    python benchmarks/bench_validator_cases.py --git-dir ... --write-cases                 # regenerate cases.json

With ``--cases`` each file is checked against the git blob id recorded in cases.json, so a checkout at another commit
is refused rather than measured. ``--invalid`` (for issue 15) ingests the cases the reference validator rejects and
counts how many Shipa quarantines at least one resource of. A few minutes in all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CASES_JSON = REPO / "tests" / "data" / "fhir-test-cases" / "cases.json"
PINNED_COMMIT = "2dee8a0f8fa0b948b4cd28f0edfc34a0322318fe"
SOURCE_URL = "https://github.com/FHIR/fhir-test-cases"
BENCH_KEY = "benchmark-key-0123456789abcdef01"  # 32 bytes: a test key, never a real one

# Manifest keys that make the validator load content beyond the case file and the R4 core specification (profiles,
# packages, supporting resources, logical models, fetched references, matchetypes, advisors, certificates, IPS):
# a case that needs them says nothing about plain R4 validity.
EXTERNAL_KEYS = (
    "profile",
    "profiles",
    "supporting",
    "supporting5",
    "packages",
    "package-map",
    "logical",
    "fetcher",
    "matchetype",
    "advisor",
    "certificate",
    "ips",
)
# Manifest keys that describe a case rather than set the validator up; every other key is a validator option.
DESCRIPTIVE_KEYS = frozenset(
    {"name", "file", "version", "module", "description", "explanation", "documentation", "comment", "tags", "java"}
)
IMPLEMENTATION_KEYS = frozenset({"firely-sdk-current", "firely-sdk-wip", "brianpos", "dotnet-brianpos"})
ERROR_SEVERITIES = ("error", "fatal")

SELECTION_RULE = (
    "validator/manifest.json test-cases with version 4.0 or 4.0.x (R4) and a .json file; not use-test false; none of "
    "the keys " + ", ".join(EXTERNAL_KEYS) + " (content beyond the case file and the R4 core spec); an expected "
    "outcome for the Java reference validator ('java': an inline errorCount, or an OperationOutcome file under "
    "validator/outcomes/ whose issues of severity error or fatal are counted; cases without one are left out). "
    "errorCount 0 = valid, > 0 = invalid. A valid case whose file an earlier valid case already lists is kept with "
    "duplicate_of and not ingested again. 'options' lists the case's other validator settings (for example "
    "allow-comments)."
)

Reader = Callable[[str], bytes | None]


# --- case files -----------------------------------------------------------------------------------------------------


def git_reader(git_dir: Path, commit: str) -> Reader:
    """Read ``<repo path>`` at ``commit`` from a git directory (None where the file or its blob is absent)."""

    def read(path: str) -> bytes | None:
        done = subprocess.run(
            ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"], capture_output=True, check=False
        )
        return done.stdout if done.returncode == 0 else None

    return read


def tree_reader(root: Path) -> Reader:
    """Read ``<repo path>`` from a checkout or extracted tree (``root`` may also be its ``validator/`` folder)."""
    if not (root / "validator").is_dir() and (root / "manifest.json").is_file():
        root = root.parent  # given the validator folder itself

    def read(path: str) -> bytes | None:
        file = root / path
        return file.read_bytes() if file.is_file() else None

    return read


def blob_id(data: bytes) -> str:
    """Git's blob id of ``data``, to tell a file at the pinned commit from another version."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def strip_json_comments(text: str) -> str:
    """``text`` without ``//`` and ``/* */`` comments outside strings (enough to tell JSON-with-comments apart)."""
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < n and text[i] not in "\r\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def json_kind(data: bytes) -> str:
    """``json``, ``json-with-comments`` (valid once comments are removed) or ``not-json``."""
    try:
        json.loads(data)
        return "json"
    except ValueError:
        pass
    try:
        json.loads(strip_json_comments(data.decode("utf-8-sig")))
        return "json-with-comments"
    except ValueError:
        return "not-json"


# --- selection ------------------------------------------------------------------------------------------------------


def _error_messages(outcome: dict[str, Any]) -> list[str]:
    messages = []
    for issue in outcome.get("issue", []):
        if issue.get("severity") in ERROR_SEVERITIES:
            text = (issue.get("details") or {}).get("text") or issue.get("diagnostics") or issue.get("code", "")
            where = ", ".join(issue.get("expression") or issue.get("location") or [])
            messages.append(f"{where}: {text}"[:240] if where else str(text)[:240])
    return messages


def expected_outcome(case: dict[str, Any], read: Reader) -> tuple[int, list[str], str] | None:
    """The Java validator's expected error count, error messages and where they come from; None where unknown."""
    java = case.get("java")
    if isinstance(java, dict) and isinstance(java.get("errorCount"), int):
        messages = [str(m.get("message", m))[:240] for m in java.get("output", []) if isinstance(m, dict)]
        return java["errorCount"], messages, "manifest"
    if isinstance(java, str):
        path = f"validator/outcomes/{java}"
        data = read(path)
        if data is None:
            return None
        messages = _error_messages(json.loads(data))
        return len(messages), messages, path
    return None


def _is_r4(case: dict[str, Any]) -> bool:
    version = str(case.get("version", ""))
    return version == "4.0" or version.startswith("4.0.")


def select_cases(read: Reader, commit: str) -> dict[str, Any]:
    """Build the case list (the content of cases.json) from the manifest at ``commit``."""
    manifest_data = read("validator/manifest.json")
    if manifest_data is None:
        raise SystemExit("validator/manifest.json not found in the given fhir-test-cases copy")
    manifest = json.loads(manifest_data)
    cases: list[dict[str, Any]] = []
    left_out: dict[str, int] = defaultdict(int)
    first_valid: dict[str, str] = {}
    for case in manifest["test-cases"]:
        if not (_is_r4(case) and str(case.get("file", "")).endswith(".json")):
            continue
        if case.get("use-test") is False:
            left_out["use-test false"] += 1
            continue
        external = [key for key in EXTERNAL_KEYS if key in case]
        if external:
            left_out["needs " + external[0]] += 1
            continue
        expected = expected_outcome(case, read)
        if expected is None:
            left_out["no expected outcome for the java validator"] += 1
            continue
        error_count, messages, outcome_source = expected
        path = f"validator/{case['file']}"
        data = read(path)
        if data is None:
            left_out["case file absent at this commit"] += 1
            continue
        valid = error_count == 0
        entry: dict[str, Any] = {
            "name": case["name"],
            "file": path,
            "blob": blob_id(data),
            "bytes": len(data),
            "module": case.get("module"),
            "expected": "valid" if valid else "invalid",
            "errorCount": error_count,
            "outcome": outcome_source,
            "json_with_comments": json_kind(data) == "json-with-comments",
            "options": {k: v for k, v in case.items() if k not in DESCRIPTIVE_KEYS | IMPLEMENTATION_KEYS},
        }
        for folder in ("valid", "comments", "invalid"):
            copy = CASES_JSON.parent / folder / Path(path).name
            if copy.is_file() and blob_id(copy.read_bytes()) == entry["blob"]:
                entry["subset"] = f"{folder}/{copy.name}"
        if not valid:
            entry["errors"] = messages[:5]
        if valid and path in first_valid:
            entry["duplicate_of"] = first_valid[path]
        elif valid:
            first_valid[path] = case["name"]
        cases.append(entry)
    valid_cases = [c for c in cases if c["expected"] == "valid" and "duplicate_of" not in c]
    return {
        "source": SOURCE_URL,
        "commit": commit,
        "manifest": "validator/manifest.json",
        "licence": "Apache-2.0 (LICENSE.txt of the repository)",
        "selection_rule": SELECTION_RULE,
        "counts": {
            "valid": len(valid_cases),
            "valid_json_with_comments": sum(c["json_with_comments"] for c in valid_cases),
            "valid_duplicates": sum("duplicate_of" in c for c in cases),
            "invalid": sum(c["expected"] == "invalid" for c in cases),
            "left_out": dict(sorted(left_out.items())),
        },
        "cases": cases,
    }


# --- ingest ---------------------------------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _findings(fhir: dict[str, Any]) -> int | None:
    """Resources accepted with findings, wherever the report keeps the count (its keys are still changing)."""
    resources = fhir.get("resources", {})
    for key in ("accepted_with_findings", "with_findings", "findings"):
        value = resources.get(key, fhir.get(key))
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            total = value.get("total", value.get("resources"))
            if isinstance(total, int):
                return total
            return sum(v for v in value.values() if isinstance(v, int))
        if isinstance(value, list):
            return len(value)
    return None


def ingest_case(name: str, data: bytes, workdir: Path) -> dict[str, Any]:
    """Ingest one case file as its own export; return its counts and quarantine records."""
    from pipelines.config import IngestParams
    from pipelines.stages import ingest

    base = workdir / _safe_name(name)
    (base / "in" / "fhir").mkdir(parents=True)
    (base / "in" / "fhir" / f"{_safe_name(name)}.json").write_bytes(data)
    started = time.perf_counter()
    try:
        report = ingest.run(IngestParams(workers=1), base / "in", base / "out", key=BENCH_KEY, progress=False)
    except Exception as exc:  # a crash is a result here: report it and go on to the next case
        return {"name": name, "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    quarantine_file = base / "out" / "quarantine" / "fhir.ndjson"
    text = quarantine_file.read_text(encoding="utf-8") if quarantine_file.is_file() else ""
    records = read_records(text)
    fhir = report.get("fhir") or {}
    return {
        "name": name,
        "resources": fhir.get("resources", {}),
        "findings": _findings(fhir),
        "reconciles": fhir.get("reconciles"),
        "quarantine": records,
        # NDJSON has one record a line; more lines than records means a record was split over lines
        "quarantine_ndjson": len([line for line in text.splitlines() if line.strip()]) == len(records),
        "seconds": seconds,
    }


def read_records(text: str) -> list[dict[str, Any]]:
    """The JSON values in ``text`` one after another, whether one a line (NDJSON) or spread over lines."""
    decoder = json.JSONDecoder()
    records: list[dict[str, Any]] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return records
        value, pos = decoder.raw_decode(text, pos)
        records.append(value)


def _issues(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(expression, diagnostics) of each issue of a quarantine record's OperationOutcome."""
    issues = (record.get("outcome") or {}).get("issue") or [{}]
    return [(", ".join(i.get("expression") or []), str(i.get("diagnostics", ""))) for i in issues]


def _counts_cell(result: dict[str, Any]) -> str:
    res = result.get("resources", {})
    cells = [str(res.get(k, "-")) for k in ("read", "accepted", "quarantined")]
    cells.append("-" if result.get("findings") is None else str(result["findings"]))
    known = {"read", "accepted", "quarantined", "findings", "with_findings", "accepted_with_findings"}
    other = ",".join(f"{k}={v}" for k, v in res.items() if k not in known and v)
    return " ".join(f"{c:>5}" for c in cells) + f"  {other}"


def run_cases(
    cases: list[dict[str, Any]], read: Reader, verify_blobs: bool, label: str
) -> tuple[list[dict[str, Any]], int]:
    """Ingest each case; print a row per case and the quarantined resources under it. Returns results, missing."""
    results: list[dict[str, Any]] = []
    missing = 0
    print(f"\n{label} ({len(cases)})")
    print(f"{'case':45} {'read':>5} {'accep':>5} {'quar':>5} {'find':>5}  other / reconciles / seconds")
    with tempfile.TemporaryDirectory(prefix="shipa-validator-cases-") as tmp:
        for case in cases:
            data = read(case["file"])
            if data is None or (verify_blobs and blob_id(data) != case["blob"]):
                why = "absent" if data is None else "differs from the pinned commit"
                print(f"{case['name']:45} SKIPPED: {case['file']} {why}")
                missing += 1
                continue
            result = ingest_case(case["name"], data, Path(tmp))
            result["case"] = case
            results.append(result)
            if "error" in result:
                print(f"{case['name']:45} INGEST FAILED: {result['error']}")
                continue
            print(
                f"{case['name']:45} {_counts_cell(result)} reconciles={result['reconciles']} {result['seconds']:.2f}s",
                flush=True,
            )
            if not result["quarantine_ndjson"]:
                print("    NOTE: quarantine/fhir.ndjson is not NDJSON here (a record spans several lines)")
            for record in result["quarantine"]:
                rid = f"{record.get('resource_type') or '?'}/{record.get('resource_id') or '(no id)'}"
                for expression, diagnostics in _issues(record):
                    where = f" [{expression}]" if expression else ""
                    print(f"    quarantined {rid}: {record.get('defect')}{where}: {diagnostics}")
    return results, missing


def _reason_key(record: dict[str, Any]) -> str:
    expression, diagnostics = _issues(record)[0]
    # the element, ids, numbers and quoted values vary per resource; the reason is what is left
    if expression:
        diagnostics = diagnostics.replace(expression, "<element>")
    diagnostics = re.sub(r"'[^']*'|\"[^\"]*\"|\b[0-9a-f-]{8,}\b|\d+", "…", diagnostics)
    return f"{record.get('defect')}: {diagnostics}"


def print_reasons(results: list[dict[str, Any]]) -> None:
    """Quarantine reasons across cases: reason -> resources and the cases they are in."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for result in results:
        for record in result.get("quarantine", []):
            reasons[_reason_key(record)].append(result["name"])
    if not reasons:
        return
    print("\nquarantine reasons (each quarantined resource counted once, by its first issue)")
    for reason, names in sorted(reasons.items(), key=lambda kv: (-len(set(kv[1])), kv[0])):
        print(f"  {len(names):3d} resources, {len(set(names)):2d} cases  {reason}")
        print(f"       {', '.join(sorted(set(names)))}")


# --- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", type=Path, help="a local fhir-test-cases checkout or extracted tree")
    source.add_argument("--git-dir", type=Path, help="a fhir-test-cases git directory (files read at --commit)")
    parser.add_argument("--commit", default=None, help="with --git-dir: the commit (default: the one in cases.json)")
    parser.add_argument("--cases-json", type=Path, default=CASES_JSON, help="the case list")
    parser.add_argument("--invalid", action="store_true", help="also ingest the invalid cases (issue 15)")
    parser.add_argument("--only", action="append", default=[], help="run only this case (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the per-case results here")
    parser.add_argument("--write-cases", action="store_true", help="regenerate --cases-json from the manifest")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.write_cases:
        commit = args.commit or PINNED_COMMIT
        if args.git_dir:
            full = subprocess.run(
                ["git", "--git-dir", str(args.git_dir), "rev-parse", f"{commit}^{{commit}}"],
                capture_output=True,
                text=True,
                check=True,
            )
            commit = full.stdout.strip()
        read = git_reader(args.git_dir, commit) if args.git_dir else tree_reader(args.cases)
        listing = select_cases(read, commit)
        args.cases_json.parent.mkdir(parents=True, exist_ok=True)
        args.cases_json.write_text(json.dumps(listing, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.cases_json}: {json.dumps(listing['counts'])}")
        return 0

    listing = json.loads(args.cases_json.read_text(encoding="utf-8"))
    commit = args.commit or listing["commit"]
    if args.git_dir:
        found = subprocess.run(
            ["git", "--git-dir", str(args.git_dir), "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        if found.returncode:
            parser.error(f"--git-dir {args.git_dir}: not a git directory holding commit {commit}")
    elif not args.cases.is_dir():
        parser.error(f"--cases {args.cases}: folder not found")
    read = git_reader(args.git_dir, commit) if args.git_dir else tree_reader(args.cases)
    chosen = [c for c in listing["cases"] if not args.only or c["name"] in args.only]
    valid = [c for c in chosen if c["expected"] == "valid" and "duplicate_of" not in c]
    import pipelines

    print(f"fhir-test-cases {commit[:12]}: {len(valid)} valid R4 cases, each ingested as its own export (1 worker)")
    print(f"Shipa code: {Path(pipelines.__file__).parent}")
    started = time.perf_counter()
    results, missing = run_cases(valid, read, args.cases is not None, "valid cases")
    ok = [r for r in results if "error" not in r]
    kept = [r for r in ok if not r["quarantine"] and r["resources"].get("quarantined", 0) == 0]
    quarantined = [r for r in ok if r not in kept]
    with_comments = [r for r in quarantined if r["case"]["json_with_comments"]]
    print_reasons(quarantined)
    failed = len(results) - len(ok)
    print(
        f"\nvalid cases: {len(valid)}, none quarantined: {len(kept)}, quarantined: {len(quarantined)} "
        f"(of which JSON with comments: {len(with_comments)})"
        + (f", ingest failed: {failed}" if failed else "")
        + (f", skipped (file absent or not at the pinned commit): {missing}" if missing else "")
        + f"; {time.perf_counter() - started:.1f}s"
    )
    not_reconciled = [r["name"] for r in ok if r["reconciles"] is not True]
    if not_reconciled:
        print(f"reports that do not reconcile: {', '.join(not_reconciled)}")

    invalid_results: list[dict[str, Any]] = []
    if args.invalid:
        invalid = [c for c in chosen if c["expected"] == "invalid"]
        invalid_results, missing = run_cases(invalid, read, args.cases is not None, "invalid cases")
        done = [r for r in invalid_results if "error" not in r]
        caught = [r for r in done if r["quarantine"] or r["resources"].get("quarantined", 0)]
        flagged = [r for r in done if r not in caught and r.get("findings")]
        print(
            f"\ninvalid cases: {len(invalid)}, quarantined: {len(caught)}, accepted with findings only: "
            f"{len(flagged)}, accepted clean: {len(done) - len(caught) - len(flagged)}"
            + (f", ingest failed: {len(invalid_results) - len(done)}" if len(done) < len(invalid_results) else "")
            + (f", skipped: {missing}" if missing else "")
        )
    if args.json:
        slim = [{k: v for k, v in r.items() if k != "case"} for r in results + invalid_results]
        args.json.write_text(json.dumps(slim, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: Shipa's FHIR ingest against a naive validate-and-append loop (and fhiry where it is installed).

Every measurement runs in its own subprocess on the same input and reports resources/s and peak RSS (the main
process, and for Shipa also its largest worker). Two input sizes show whether memory stays flat.

Input: the built-in synthetic cohort (``pipelines.synth``, bulk NDJSON, no images) sized to about ``--sizes``
resources, or, with ``--source synthea``, the Synthea R4 sample replicated with fresh ids (its non-LOINC
Observation codes replaced by valid LOINC codes so that the input is mostly clean).

    python benchmarks/bench_ingest.py --sizes 200000,400000          # the acceptance run (minutes on 2 cores)
    python benchmarks/bench_ingest.py --sizes 5000,10000 --work /tmp/bench-ingest   # a quick check

fhiry is not a Shipa dependency (it pulls google-cloud-bigquery); install it beside the venv and point at it:
``pip install --target /tmp/fhiry-lib --no-deps fhiry prodict timeago et_xmlfile openpyxl``, then
``--fhiry-path /tmp/fhiry-lib``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"
BENCH_KEY = "benchmark-key-0123456789abcdef"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CIEL = re.compile(rb'"code":"[0-9]+A{10,}"')
FHIRY_HINT = "pip install --target /tmp/fhiry-lib --no-deps fhiry prodict timeago et_xmlfile openpyxl"


# --- input ----------------------------------------------------------------------------------------------------------


def _count_resources(fhir_dir: Path) -> int:
    n = 0
    for path in fhir_dir.rglob("*.ndjson"):
        with path.open("rb") as fh:
            n += sum(1 for line in fh if line.strip())
    return n


def make_cohort_input(target: int, out: Path) -> int:
    """Generate the synthetic cohort with about ``target`` resources (bulk NDJSON, no images)."""
    from pipelines.config import SynthesizeParams
    from pipelines.stages import synthesize

    per_patient = 45.0
    n_patients = max(10, int(target / per_patient))
    for _ in range(3):
        params = SynthesizeParams(n_patients=n_patients, imaging_rate=0.0, format="ndjson")
        synthesize.run(params, out, progress=False)
        count = _count_resources(out / "fhir")
        if count >= target:
            return count
        n_patients = int(n_patients * target / count) + 10
    return count


def make_synthea_input(target: int, out: Path) -> int:
    """Replicate the Synthea sample's patient Bundles with fresh ids until about ``target`` resources."""
    import orjson

    fhir = out / "fhir"
    fhir.mkdir(parents=True, exist_ok=True)
    patients = [p for p in sorted(SYNTHEA.glob("*.json")) if "Information" not in p.name]
    shared = [p for p in sorted(SYNTHEA.glob("*.json")) if "Information" in p.name]
    count = 0
    for path in shared:
        data = path.read_bytes()
        (fhir / path.name).write_bytes(data)
        count += len(orjson.loads(data)["entry"])
    texts = [_CIEL.sub(b'"code":"8867-4"', p.read_bytes()) for p in patients]
    sizes = [len(orjson.loads(t)["entry"]) for t in texts]
    replica = 0
    while count < target:
        for text, size in zip(texts, sizes, strict=True):

            def fresh(m: re.Match[bytes], r: int = replica) -> bytes:
                return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{r}:{m.group(0).decode()}")).encode()

            (fhir / f"patient-{replica:05d}-{count}.json").write_bytes(_UUID.sub(fresh, text))
            count += size
        replica += 1
    return count


# --- measured runs (each in its own process) --------------------------------------------------------------------


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds used by this process and its finished children (the pool workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run_shipa(input_dir: Path, out: Path, workers: int) -> dict[str, Any]:
    from pipelines.config import IngestParams
    from pipelines.stages import ingest

    start, cpu = time.perf_counter(), _cpu_s()
    report = ingest.run(IngestParams(workers=workers), input_dir, out, key=BENCH_KEY, progress=False)
    seconds = time.perf_counter() - start
    return {
        "resources": report["fhir"]["resources"]["read"],
        "seconds": seconds,
        "cpu_s": _cpu_s() - cpu,
        "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
        "peak_worker_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN),
    }


def run_naive(input_dir: Path, dump: bool = False, fastcheck: bool = False) -> dict[str, Any]:
    """Validate each resource with its R4B model, one by one, appending the parsed dict (or ``model_dump()``).

    The stock fhir.resources unless ``fastcheck``: then with Shipa's cached element checks installed first
    (:mod:`pipelines.fhir.fastcheck`), to show how much of Shipa's lead comes from them. Nothing else of Shipa is
    imported here, because importing ``pipelines.fhir.validate`` installs them.
    """
    import orjson

    if fastcheck:
        from pipelines.fhir.fastcheck import install

        install()
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    start, cpu = time.perf_counter(), _cpu_s()
    kept: list[dict[str, Any]] = []
    n = 0

    def one(obj: Any) -> None:
        nonlocal n
        n += 1
        try:
            model = get_fhir_model_class(obj["resourceType"]).model_validate(obj)
        except (ValidationError, KeyError, TypeError, ValueError):
            return
        kept.append(model.model_dump() if dump else obj)

    for path in sorted(p for p in input_dir.rglob("*") if p.suffix in (".ndjson", ".json")):
        if path.suffix == ".ndjson":
            with path.open("rb") as fh:
                for line in fh:
                    if line.strip():
                        try:
                            one(orjson.loads(line))
                        except orjson.JSONDecodeError:
                            n += 1
        else:
            doc = orjson.loads(path.read_bytes())
            for entry in doc.get("entry", []):
                if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                    one(entry["resource"])
    seconds = time.perf_counter() - start
    return {
        "resources": n,
        "seconds": seconds,
        "cpu_s": _cpu_s() - cpu,
        "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
        "kept": len(kept),
    }


def _fhiry_input(input_dir: Path, out: Path, limit: int) -> tuple[Path, int, int]:
    """Every k-th parseable NDJSON line (all resource types, at most about ``limit`` in all), for fhiry.

    fhiry stops at the first line that is not JSON (the cohort has a few on purpose) and flattens about a hundred
    resources a second here, so it runs on a sample; its rate is per resource like the others'. Returns
    (folder, resources kept, unparseable lines left out).
    """
    import orjson

    total = _count_resources(input_dir / "fhir")
    stride = max(1, -(-total // limit))
    target = out / "fhiry-input"
    target.mkdir(parents=True, exist_ok=True)
    kept = broken = seen = 0
    for path in sorted((input_dir / "fhir").glob("*.ndjson")):
        with path.open("rb") as src, (target / path.name).open("wb") as dst:
            for line in src:
                if not line.strip():
                    continue
                seen += 1
                try:
                    orjson.loads(line)
                except orjson.JSONDecodeError:
                    broken += 1
                    continue
                if seen % stride == 0:
                    dst.write(line)
                    kept += 1
    return target, kept, broken


def run_fhiry(input_dir: Path, out: Path, limit: int) -> dict[str, Any]:
    """fhiry's parallel NDJSON flattening (a process per core, one pandas frame; no validation), on a sample."""
    try:
        import fhiry.parallel as fp  # type: ignore[import-not-found]
    except ImportError:
        return {"skipped": f"fhiry is not installed (not a Shipa dependency; see {FHIRY_HINT}); nothing measured"}
    folder, kept, broken = _fhiry_input(input_dir, out, limit)
    start, cpu = time.perf_counter(), _cpu_s()
    frame = fp.ndjson(str(folder))
    seconds = time.perf_counter() - start
    return {
        "resources": len(frame),
        "seconds": seconds,
        "cpu_s": _cpu_s() - cpu,
        "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
        "peak_worker_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN),
        "note": f"a sample of {kept} resources, without {broken} unparseable lines, which stop fhiry",
    }


def _child(
    kind: str, input_dir: Path, out: Path, workers: int, path: Path | None = None, sample: int = 10000
) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--input", str(input_dir)]
    cmd += ["--out", str(out), "--workers", str(workers), "--fhiry-sample", str(sample)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200000,400000", help="approximate resources per input, comma-separated")
    parser.add_argument("--source", choices=("cohort", "synthea"), default="cohort")
    parser.add_argument("--workers", type=int, default=0, help="Shipa workers (0: one per core)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shipa-bench-ingest"), help="scratch folder")
    parser.add_argument("--skip-naive", action="store_true", help="measure Shipa only")
    parser.add_argument("--fhiry-sample", type=int, default=10000, help="resources fhiry flattens (a sample)")
    parser.add_argument("--fhiry-path", type=Path, help=f"a folder holding fhiry, kept out of the venv ({FHIRY_HINT})")
    parser.add_argument(
        "--child", choices=("shipa", "naive", "naive-fastcheck", "naive-dump", "fhiry"), help=argparse.SUPPRESS
    )
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "shipa":
            result = run_shipa(args.input, args.out, args.workers)
        elif args.child.startswith("naive"):
            result = run_naive(args.input, dump=args.child == "naive-dump", fastcheck=args.child == "naive-fastcheck")
        else:
            result = run_fhiry(args.input, args.out, args.fhiry_sample)
        print(json.dumps(result))
        return

    cores = len(os.sched_getaffinity(0))
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        input_dir = args.work / f"input-{args.source}-{size}"
        if not input_dir.exists():
            maker = make_cohort_input if args.source == "cohort" else make_synthea_input
            count = maker(size, input_dir)
        else:
            count = _count_resources(input_dir / "fhir") if args.source == "cohort" else size
        out = args.work / f"out-{size}"
        shutil.rmtree(out, ignore_errors=True)
        shipa = _child("shipa", input_dir, out, args.workers)
        skipped = {"skipped": "--skip-naive"}
        naive = skipped if args.skip_naive else _child("naive", input_dir, out, 1)
        fast = skipped if args.skip_naive else _child("naive-fastcheck", input_dir, out, 1)
        dump = skipped if args.skip_naive else _child("naive-dump", input_dir, out, 1)
        fhiry = _child("fhiry", input_dir, out, 1, args.fhiry_path, args.fhiry_sample)
        rows.append((size, count, shipa, naive, fast, dump, fhiry))

    print(f"\nFHIR ingest benchmark ({args.source}, {cores} cores, Shipa workers={args.workers or cores})")
    print(
        f"{'input':>10} {'method':>10} {'res/s':>9} {'ratio':>7} {'CPU µs/res':>11} {'peak RSS MB':>12} "
        f"{'worker RSS MB':>14}"
    )
    for _size, count, shipa, naive, fast, dump, fhiry in rows:
        base = shipa.get("resources", count) / shipa["seconds"] if "seconds" in shipa else None
        methods = (("shipa", shipa), ("naive", naive), ("naive+fast", fast), ("naive-dump", dump), ("fhiry", fhiry))
        for name, res in methods:
            if "seconds" not in res:
                print(f"{count:>10} {name:>10}  {res.get('skipped') or res.get('error')}")
                continue
            rate = res["resources"] / res["seconds"]
            ratio = f"{base / rate:.2f}x" if base and name != "shipa" else ""
            worker = f"{res['peak_worker_rss_mb']:.0f}" if "peak_worker_rss_mb" in res else ""
            cpu = f"{res['cpu_s'] / res['resources'] * 1e6:.0f}" if "cpu_s" in res else ""
            print(f"{count:>10} {name:>10} {rate:>9.0f} {ratio:>7} {cpu:>11} {res['peak_rss_mb']:>12.0f} {worker:>14}")
            if res.get("note"):
                print(f"{'':>10} {'':>10}  ({name}: {res['note']})")
    print("ratio = Shipa's resources/s divided by the method's (Shipa validates with R4B too, and also de-identifies,")
    print("checks references, dates, IINs and codes, and writes Parquet tables and quarantine). CPU µs/res counts")
    print("every process; on a busy machine it is the fairer comparison. naive appends the parsed dict after")
    print("validating with the stock fhir.resources; naive+fast does the same with Shipa's cached element checks")
    print("(pipelines/fhir/fastcheck.py) installed; naive-dump appends the validated model's model_dump().")


if __name__ == "__main__":
    main()

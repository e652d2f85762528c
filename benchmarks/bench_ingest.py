"""Benchmark: Shipa's FHIR ingest against the naive stock loop, per core and at N workers.

The naive loop is what someone would write with the stock library: parse each resource (orjson, the faster
parser, so that the baseline is not slowed by the stdlib's) and ``fhir.resources.R4B`` ``model_validate`` it,
counting what validates and keeping nothing (keeping nothing is the fastest and smallest such loop, so it is the
strongest baseline). Two comparisons, each side in its own process tree on the same input:

- per core: ``shipa ingest`` with 1 worker against the naive loop in one process;
- at N workers (``--workers``, default one per core): Shipa with N workers against the naive loop in N processes
  (a ``multiprocessing`` Pool over files, NDJSON files split into byte ranges).

For each it prints resources/s of both sides, the ratio (Shipa / naive; per core, and at N both in total and per
core), CPU µs a resource (every process of the side) and peak memory of each side: the largest single process
(``getrusage``) and the whole process tree (the sum of its processes' PSS, sampled every 0.1 s with psutil).
Shipa does more than the loop: it also de-identifies, checks references, dates, IINs and codes, and writes Parquet
tables and quarantine.

Then Shipa's peak memory as the input grows (``--rss-sizes``, default 100,000 and 200,000 resources; Shipa with N
workers; a size also in ``--sizes`` reuses that run): the largest single process and the process tree at each size,
and the growth from the smallest to the largest in %. The last lines (``summary``) give the per-core ratio, the
N-process ratio, the CPU-time ratios and the memory growth.

Input (``--source``): by default real Synthea R4 output, copied until about each size: the shared sample in
``../shared/data/synthea-r4`` (where present) and the committed ``tests/data/synthea-public`` (see its README), each
set's hospital and practitioner Bundles once and its patient Bundles copied with fresh ids that stay consistent
inside each copy, while ids the shared Bundles hold are kept (see ``make_synthea_input``). Shipa quarantines nothing
of it: the 8 Organizations and Practitioners that the public set's patient Bundles carry and its shared Bundles carry
again with different content are kept as versions (the latest in the tables, the others in ``history``). The copies
repeat the sample's codings, periods and references, which fastcheck's element cache reuses, so Shipa's margin on an
export of distinct patients is smaller. ``--source cohort``: the built-in synthetic cohort (bulk NDJSON, no images).

    python benchmarks/bench_ingest.py                  # 100,000 resources, then 200,000 for memory (~4 min, 2 cores)
    python benchmarks/bench_ingest.py --sizes 30000 --rss-sizes        # one quick size, no memory check (~1 min)
    python benchmarks/bench_ingest.py --sizes 100000 --workers 2 --extras

``--extras`` adds the naive loop with Shipa's cached element checks installed (what they are worth on their own),
the loop also calling ``model_dump()`` on every validated model, and fhiry's flattening where it is installed.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SYNTHEA = REPO.parent / "shared" / "data" / "synthea-r4"
SYNTHEA_PUBLIC = REPO / "tests" / "data" / "synthea-public"
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


def _synthea_sets() -> list[tuple[str, Path]]:
    """The real Synthea R4 sample sets present here: (label, folder), the shared sample first when it exists."""
    sets = [("synthea-r4", SYNTHEA)] if SYNTHEA.is_dir() else []
    return [*sets, ("synthea-public", SYNTHEA_PUBLIC)]


def make_synthea_input(target: int, out: Path) -> int:
    """Replicate the real Synthea R4 sample sets with fresh, self-consistent ids until about ``target`` resources.

    Each set (the shared ``../shared/data/synthea-r4`` where present, and the committed ``tests/data/synthea-public``)
    goes to its own folder: its hospital and practitioner Bundles once, its patient Bundles as often as needed. The
    first copy of a patient Bundle is the real file; every later copy renames each UUID of that Bundle that is not
    also in the set's shared Bundles (entry ids, ``fullUrl``s, the ``urn:uuid`` references to them, the Synthea
    identifiers and the file name) to a UUID of its own, the same way everywhere in the copy, so it stays a whole
    patient record. UUIDs that the shared Bundles hold (Organization, Location and Practitioner ids, and the
    identifiers that conditional references like ``Organization?identifier=...|<uuid>`` search for) are kept, so every
    copy still resolves against the one hospital and practitioner Bundle. The copying used to rename those too, which
    left every copy's conditional references dangling (Shipa quarantined most of the corpus as
    ``dangling_reference``). The public set's shared ids are renamed once, for the whole set: Synthea derives
    Organization ids from the provider's name, so both runs use some of the same ids with different content.

    Left as the real data has it: the public set's patient Bundles carry their Organization and Practitioner, which
    come again, with utilization extensions, in its shared Bundles (what issue 14 asks ingest to keep as versions).
    One change to the content: the shared sample's CIEL concept ids filed under the LOINC system become a valid LOINC
    code, as before.

    Returns:
        The number of resources written.
    """
    import orjson

    fhir = out / "fhir"
    count = 0
    sets = []
    for k, (label, folder) in enumerate(_synthea_sets()):
        target_dir = fhir / f"{k}-{label}"
        target_dir.mkdir(parents=True, exist_ok=True)
        files = sorted(folder.glob("*.json"))
        shared_files = [p for p in files if "Information" in p.name]
        patient_files = [p for p in files if "Information" not in p.name]
        shared_texts = [p.read_bytes() for p in shared_files]
        shared_ids = {u for text in shared_texts for u in _UUID.findall(text)}

        for path, text in zip(shared_files, shared_texts, strict=True):
            (target_dir / path.name).write_bytes(_UUID.sub(_renamer(k, 0, set()), text))
            count += len(orjson.loads(text)["entry"])
        patients = [(p.name.encode(), _CIEL.sub(b'"code":"8867-4"', p.read_bytes())) for p in patient_files]
        sizes = [len(orjson.loads(text)["entry"]) for _, text in patients]
        sets.append((k, target_dir, shared_ids, patients, sizes))
    replica = 0
    while count < target or replica == 0:  # the real patient Bundles at least once
        for k, target_dir, shared_ids, patients, sizes in sets:
            rename = _renamer(k, replica, shared_ids)
            for (name, text), size in zip(patients, sizes, strict=True):
                (target_dir / _UUID.sub(rename, name).decode()).write_bytes(_UUID.sub(rename, text))
                count += size
        replica += 1
    return count


def _renamer(k: int, replica: int, shared_ids: set[bytes]) -> Callable[[re.Match[bytes]], bytes]:
    """The UUID substitution for copy ``replica`` of set ``k``: one fixed mapping, so a copy stays self-consistent.

    UUIDs in ``shared_ids`` (the set's hospital and practitioner Bundles) map per set only, so that every copy of
    the set still points at its one shared Bundle; the others map per copy. Set 0 keeps its shared ids and copy 0
    its own ids: the first copy of the first set is the real data.
    """

    def rename(m: re.Match[bytes]) -> bytes:
        value = m.group(0)
        if value in shared_ids or replica == 0:
            return value if k == 0 else _fresh(f"set{k}", value)
        return _fresh(f"{k}:{replica}", value)

    return rename


def _fresh(namespace: str, value: bytes) -> bytes:
    """A UUID derived from ``value`` in ``namespace``: the same input gives the same UUID in every file of a copy."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{namespace}:{value.decode()}")).encode()


# --- measured runs (each side in its own process tree) ----------------------------------------------------------


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0


def _cpu_s() -> float:
    """CPU seconds used by this process and its finished children (the workers)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _result(resources: int, seconds: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "resources": resources,
        "seconds": seconds,
        "cpu_s": _cpu_s() - cpu,
        "peak_rss_mb": _peak_mb(resource.RUSAGE_SELF),
        "peak_child_rss_mb": _peak_mb(resource.RUSAGE_CHILDREN),
        **extra,
    }


def run_shipa(input_dir: Path, out: Path, workers: int) -> dict[str, Any]:
    """``pipelines.stages.ingest.run`` with ``workers`` validation processes (the stage ``shipa ingest`` runs)."""
    from pipelines.config import IngestParams
    from pipelines.stages import ingest

    start, cpu = time.perf_counter(), _cpu_s()
    report = ingest.run(IngestParams(workers=workers), input_dir, out, key=BENCH_KEY, progress=False)
    seconds = time.perf_counter() - start
    counts = report["fhir"]["resources"]
    return _result(counts["read"], seconds, cpu, quarantined=counts.get("quarantined"))


def _tasks(input_dir: Path, block: int = 4 << 20) -> list[tuple[str, int, int]]:
    """Work units for the naive pool: whole JSON files, and NDJSON files cut into newline-aligned byte ranges."""
    tasks: list[tuple[str, int, int]] = []
    for path in sorted(p for p in input_dir.rglob("*") if p.suffix in (".ndjson", ".json")):
        if path.suffix == ".json":
            tasks.append((str(path), 0, -1))
            continue
        size = path.stat().st_size
        with path.open("rb") as fh:
            start = 0
            while start < size:
                fh.seek(min(start + block, size))
                fh.readline()
                end = min(fh.tell(), size)
                tasks.append((str(path), start, end - start))
                start = end
    return tasks


def naive_task(task: tuple[str, int, int], keep: str = "none", fastcheck: bool = False) -> tuple[int, int]:
    """The naive loop over one work unit: parse, ``model_validate`` with the stock R4B model; (read, valid).

    ``keep``: "none" counts only; "dump" also converts each validated model with ``model_dump()`` (the cost a loop
    that builds tables from the models pays), holding the dumps of this work unit only.
    """
    import orjson
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if fastcheck:
        from pipelines.fhir import fastcheck as fc

        fc.install()
    path, offset, length = task
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read() if length < 0 else fh.read(length)
    if path.endswith(".json"):
        doc = orjson.loads(data)
        objs: Any = (e["resource"] for e in doc.get("entry", []) if isinstance(e, dict) and "resource" in e)
    else:

        def lines() -> Any:
            for line in data.splitlines():
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError:
                        yield None

        objs = lines()
    read = valid = 0
    kept: list[Any] = []
    for obj in objs:
        read += 1
        try:
            model = get_fhir_model_class(obj["resourceType"]).model_validate(obj)
        except (ValidationError, KeyError, TypeError, ValueError):
            continue
        valid += 1
        if keep == "dump":
            kept.append(model.model_dump())
    return read, valid


def run_naive(input_dir: Path, processes: int, keep: str = "none", fastcheck: bool = False) -> dict[str, Any]:
    """The naive loop in one process, or in ``processes`` processes (a Pool over the work units)."""
    import functools

    import orjson  # noqa: F401  (imported before the clock starts, as Shipa's stage module is)
    from fhir.resources import R4B  # noqa: F401

    tasks = _tasks(input_dir)
    fn = functools.partial(naive_task, keep=keep, fastcheck=fastcheck)
    start, cpu = time.perf_counter(), _cpu_s()
    if processes <= 1:
        counts = [fn(t) for t in tasks]
    else:
        import multiprocessing

        with multiprocessing.Pool(processes) as pool:
            counts = pool.map(fn, tasks, chunksize=1)
            pool.close()
            pool.join()
    seconds = time.perf_counter() - start
    return _result(sum(r for r, _ in counts), seconds, cpu, valid=sum(v for _, v in counts))


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


def _tree_pss_mb(proc: Any) -> float:
    """Sum of the PSS (RSS where PSS is unavailable) of ``proc`` and its descendants, in MB."""
    import psutil

    total = 0
    for p in (proc, *proc.children(recursive=True)):
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _child(kind: str, input_dir: Path, out: Path, workers: int, path: Path | None = None, sample: int = 10000) -> dict:
    """Run one measurement in a fresh process; sample its process tree's memory while it runs."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--input", str(input_dir)]
    cmd += ["--out", str(out), "--workers", str(workers), "--fhiry-sample", str(sample)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH", "")) if p)
    shutil.rmtree(out, ignore_errors=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        peak = 0.0
        try:
            import psutil

            handle = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    peak = max(peak, _tree_pss_mb(handle))
                except psutil.NoSuchProcess:
                    break
                time.sleep(0.1)
        except ImportError:
            pass
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        return {"error": stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {proc.returncode}"}
    result = json.loads(stdout.strip().splitlines()[-1])
    if peak:
        result["tree_pss_mb"] = peak
    return result


def _rate(res: dict[str, Any]) -> float:
    return res["resources"] / res["seconds"]


def _cpu_ratio(naive: dict[str, Any], shipa: dict[str, Any]) -> float:
    """How many times more CPU a resource the naive side used (steadier than wall time on a shared machine)."""
    return (naive["cpu_s"] / naive["resources"]) / (shipa["cpu_s"] / shipa["resources"])


def _row(label: str, res: dict[str, Any], base: dict[str, Any] | None, cores: int) -> str:
    if "seconds" not in res:
        return f"  {label:<34} {res.get('skipped') or res.get('error')}"
    rate = _rate(res)
    ratio = f"{_rate(base) / rate:.2f}x" if base and "seconds" in base else ""
    cpu = res["cpu_s"] / res["resources"] * 1e6
    largest = max(res["peak_rss_mb"], res.get("peak_child_rss_mb", 0.0))
    tree = f"{res['tree_pss_mb']:.0f}" if "tree_pss_mb" in res else "n/a"
    return (
        f"  {label:<34} {res['resources']:>9} {rate:>9.0f} {rate / cores:>10.0f} {ratio:>7} {cpu:>8.0f} "
        f"{largest:>10.0f} {tree:>9}"
    )


def _input(args: argparse.Namespace, size: int) -> tuple[Path, int]:
    """The input folder of about ``size`` resources (built once, reused by later runs) and its resource count."""
    input_dir = args.work / f"input-{args.source}-{size}"
    marker = input_dir / "resources.txt"
    if not marker.exists():
        shutil.rmtree(input_dir, ignore_errors=True)
        maker = make_cohort_input if args.source == "cohort" else make_synthea_input
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(maker(size, input_dir)))
    return input_dir, int(marker.read_text())


def _memory(res: dict[str, Any]) -> tuple[float, float]:
    """(largest single process's peak RSS, peak tree PSS) of a run, in MB."""
    return max(res["peak_rss_mb"], res.get("peak_child_rss_mb", 0.0)), res.get("tree_pss_mb", 0.0)


def _growth(small: float, large: float) -> str:
    return f"{(large / small - 1) * 100:+.1f} %" if small else "n/a"


def main() -> None:
    """Build the inputs, run every measurement in its own process, print the tables and the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000", help="approximate resources per speed input, comma-separated")
    parser.add_argument(
        "--rss-sizes",
        nargs="*",
        type=int,
        default=[100000, 200000],
        help="approximate resources of the inputs on which Shipa's peak memory (N workers) is compared, smallest "
        "first (none: skip); a size also in --sizes reuses that run",
    )
    parser.add_argument("--source", choices=("synthea", "cohort"), default="synthea")
    parser.add_argument("--workers", type=int, default=0, help="N for the N-worker comparison (0: one per core)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shipa-bench-ingest"), help="scratch folder")
    parser.add_argument("--extras", action="store_true", help="also naive+fastcheck, naive + model_dump(), fhiry")
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
            keep = "dump" if args.child == "naive-dump" else "none"
            result = run_naive(args.input, args.workers, keep=keep, fastcheck=args.child == "naive-fastcheck")
        else:
            result = run_fhiry(args.input, args.out, args.fhiry_sample)
        print(json.dumps(result))
        return

    cores = len(os.sched_getaffinity(0))
    n = args.workers or cores
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    header = (
        f"  {'':<34} {'resources':>9} {'res/s':>9} {'res/s/core':>10} {'ratio':>7} {'CPU µs':>8} "
        f"{'max proc MB':>10} {'tree MB':>9}"
    )
    print(f"FHIR ingest benchmark: {args.source} input, {cores} cores; N = {n}", flush=True)
    summary = []
    shipa_n: dict[int, tuple[int, dict[str, Any]]] = {}
    failed = False
    for size in sizes:
        input_dir, count = _input(args, size)
        fhir_input = input_dir / "fhir"
        out = args.work / f"out-{size}"
        runs = {
            "shipa-1": _child("shipa", input_dir, out, 1),
            "naive-1": _child("naive", fhir_input, out, 1),
            "shipa-n": _child("shipa", input_dir, out, n),
            "naive-n": _child("naive", fhir_input, out, n),
        }
        shipa_n[size] = (count, runs["shipa-n"])
        print(f"\n{count} resources (per core: 1 process each side; at N: {n} processes each side)")
        print(header)
        print(_row("shipa ingest, 1 worker", runs["shipa-1"], None, 1))
        print(_row("naive loop, 1 process", runs["naive-1"], runs["shipa-1"], 1))
        print(_row(f"shipa ingest, {n} workers", runs["shipa-n"], None, n))
        print(_row(f"naive loop, {n} processes (Pool)", runs["naive-n"], runs["shipa-n"], n))
        quarantined = {runs[k].get("quarantined") for k in ("shipa-1", "shipa-n") if "seconds" in runs[k]}
        print(f"  Shipa quarantined {', '.join(str(q) for q in sorted(quarantined, key=str))} of {count} resources")
        if args.extras:
            extras = (
                ("naive+fastcheck, 1 process", _child("naive-fastcheck", fhir_input, out, 1)),
                ("naive + model_dump() each, 1 process", _child("naive-dump", fhir_input, out, 1)),
                (
                    "fhiry (sample, no validation)",
                    _child("fhiry", input_dir, out, 1, args.fhiry_path, args.fhiry_sample),
                ),
            )
            for label, res in extras:
                print(_row(label, res, runs["shipa-1"], 1))
                if res.get("note"):
                    print(f"  {'':<34} ({res['note']})")
        if all("seconds" in r for r in runs.values()):
            per_core = _rate(runs["shipa-1"]) / _rate(runs["naive-1"])
            at_n = _rate(runs["shipa-n"]) / _rate(runs["naive-n"])
            summary.append((count, per_core, at_n, runs))
        else:
            failed = True
    memory = []
    if args.rss_sizes:
        print(f"\nShipa's peak memory with {n} workers as the input grows")
        print(header)
        for size in args.rss_sizes:
            if size not in shipa_n:
                input_dir, count = _input(args, size)
                shipa_n[size] = (count, _child("shipa", input_dir, args.work / f"out-{size}", n))
            count, res = shipa_n[size]
            print(_row(f"shipa ingest, {n} workers", res, None, n))
            if "seconds" in res:
                memory.append((count, res))
            else:
                failed = True
    print("\nratio = Shipa resources/s / naive loop resources/s on the same input (the same in total and per core,")
    print("as both sides use the same number of processes); res/s/core = res/s / processes of that side; CPU µs =")
    print("CPU time of every process of the side per resource; max proc MB = largest single process's peak RSS;")
    print("tree MB = peak of the sum of the side's processes' PSS (parent and workers together). On a busy machine")
    print("the CPU-time ratio is the steadier one: wall-time ratios move with what else runs.")
    for count, per_core, at_n, runs in summary:
        s1, n1, sn, nn = (runs[k] for k in ("shipa-1", "naive-1", "shipa-n", "naive-n"))
        print(
            f"summary {count} resources: per core (Shipa 1 worker / naive loop 1 process) {per_core:.2f}x "
            f"({_rate(s1):.0f} vs {_rate(n1):.0f} res/s); at N = {n} (Shipa {n} workers / naive loop {n} processes) "
            f"{at_n:.2f}x ({_rate(sn):.0f} vs {_rate(nn):.0f} res/s; per core {_rate(sn) / n:.0f} vs "
            f"{_rate(nn) / n:.0f}); by CPU time (naive CPU µs / Shipa CPU µs a resource) {_cpu_ratio(n1, s1):.2f}x "
            f"at 1, {_cpu_ratio(nn, sn):.2f}x at {n}; peak tree memory {s1.get('tree_pss_mb', 0):.0f} vs "
            f"{n1.get('tree_pss_mb', 0):.0f} MB at 1, {sn.get('tree_pss_mb', 0):.0f} vs "
            f"{nn.get('tree_pss_mb', 0):.0f} MB at {n}; Shipa quarantined {s1.get('quarantined')}"
        )
    if len(memory) >= 2:
        (c0, r0), (c1, r1) = memory[0], memory[-1]
        (p0, t0), (p1, t1) = _memory(r0), _memory(r1)
        print(
            f"summary memory, Shipa {n} workers, {c0} -> {c1} resources: largest process {p0:.0f} -> {p1:.0f} MB "
            f"({_growth(p0, p1)}); process tree PSS {t0:.0f} -> {t1:.0f} MB ({_growth(t0, t1)}); Shipa quarantined "
            f"{r0.get('quarantined')} and {r1.get('quarantined')}"
        )
    if failed:
        sys.exit("bench_ingest: a measurement failed (see the tables above)")


if __name__ == "__main__":
    main()

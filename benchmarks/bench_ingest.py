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

Input (``--source``): by default the real Synthea R4 sample bundles in ``../shared/data/synthea-r4`` copied with
fresh ids until about ``--sizes`` resources (their CIEL concept ids under the LOINC system replaced by a valid LOINC
code); ``--source cohort``: the built-in synthetic cohort (bulk NDJSON, no images). The copies are not clean input
today: Shipa quarantines a growing share of them as ``dangling_reference`` (2,834 of 7,606 resources, 25,506 of
30,342), so the ratio does not show Shipa's rate on clean input.

    python benchmarks/bench_ingest.py                                  # 30,000 and 60,000 resources (minutes)
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
    return _result(report["fhir"]["resources"]["read"], seconds, cpu)


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


def main() -> None:
    """Build the inputs, run every measurement in its own process, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="30000,60000", help="approximate resources per input, comma-separated")
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
    header = (
        f"  {'':<34} {'resources':>9} {'res/s':>9} {'res/s/core':>10} {'ratio':>7} {'CPU µs':>8} "
        f"{'max proc MB':>10} {'tree MB':>9}"
    )
    print(f"FHIR ingest benchmark: {args.source} input, {cores} cores; N = {n}", flush=True)
    summary = []
    for size in (int(s) for s in args.sizes.split(",")):
        input_dir = args.work / f"input-{args.source}-{size}"
        marker = input_dir / "resources.txt"
        if not marker.exists():
            shutil.rmtree(input_dir, ignore_errors=True)
            maker = make_cohort_input if args.source == "cohort" else make_synthea_input
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(maker(size, input_dir)))
        count = int(marker.read_text())
        fhir_input = input_dir / "fhir"
        out = args.work / f"out-{size}"
        runs = {
            "shipa-1": _child("shipa", input_dir, out, 1),
            "naive-1": _child("naive", fhir_input, out, 1),
            "shipa-n": _child("shipa", input_dir, out, n),
            "naive-n": _child("naive", fhir_input, out, n),
        }
        print(f"\n{count} resources (per core: 1 process each side; at N: {n} processes each side)")
        print(header)
        print(_row("shipa ingest, 1 worker", runs["shipa-1"], None, 1))
        print(_row("naive loop, 1 process", runs["naive-1"], runs["shipa-1"], 1))
        print(_row(f"shipa ingest, {n} workers", runs["shipa-n"], None, n))
        print(_row(f"naive loop, {n} processes (Pool)", runs["naive-n"], runs["shipa-n"], n))
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
        ok = all("seconds" in r for r in runs.values())
        if ok:
            per_core = _rate(runs["shipa-1"]) / _rate(runs["naive-1"])
            at_n = _rate(runs["shipa-n"]) / _rate(runs["naive-n"])
            summary.append((count, per_core, at_n, runs))
    print("\nratio = Shipa resources/s / naive loop resources/s on the same input (the same in total and per core,")
    print("as both sides use the same number of processes); res/s/core = res/s / processes of that side; CPU µs =")
    print("CPU time of every process of the side per resource; max proc MB = largest single process's peak RSS;")
    print("tree MB = peak of the sum of the side's processes' PSS (parent and workers together). On a busy machine")
    print("the CPU-time ratio is the steadier one: wall-time ratios move with what else runs.")
    for count, per_core, at_n, runs in summary:
        s1, n1, sn, nn = (runs[k] for k in ("shipa-1", "naive-1", "shipa-n", "naive-n"))
        print(
            f"summary {count} resources: Shipa / naive per core (1 process each) {per_core:.2f}x "
            f"({_rate(s1):.0f} vs {_rate(n1):.0f} res/s); at {n} workers (both {n} processes) {at_n:.2f}x "
            f"({_rate(sn):.0f} vs {_rate(nn):.0f} res/s; per core {_rate(sn) / n:.0f} vs {_rate(nn) / n:.0f}); "
            f"by CPU time (naive CPU µs / Shipa CPU µs a resource) {_cpu_ratio(n1, s1):.2f}x at 1, "
            f"{_cpu_ratio(nn, sn):.2f}x at {n}; "
            f"peak tree memory {s1.get('tree_pss_mb', 0):.0f} vs {n1.get('tree_pss_mb', 0):.0f} MB at 1, "
            f"{sn.get('tree_pss_mb', 0):.0f} vs {nn.get('tree_pss_mb', 0):.0f} MB at {n}"
        )
    if len(summary) < len(args.sizes.split(",")):
        sys.exit("bench_ingest: a measurement failed (see the table above)")


if __name__ == "__main__":
    main()

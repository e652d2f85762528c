"""Benchmark of the synthetic cohort generator against a plain export of the same resources, and its memory.

Each size runs in its own subprocess (so peak RSS is that run's alone), with images at the default rate. The
table shows throughput and memory of each size and their ratios to the first size (flat memory means a ratio
near 1.0 however large the cohort).

Baselines, measured in the same run on the first size's cohort (its FHIR resources read back into memory first,
outside the timing), each in its own subprocess:

- ``stock models``: what a generator written with the stock library pays only to emit those resources: build
  each as a ``fhir.resources.R4B`` model (``model_validate``) and write its ``model_dump_json()`` as a line of
  its type's NDJSON file. It leaves out all the simulation, so Shipa's ratio against it is a lower bound;
- ``json.dumps``: plain ``json.dumps`` of each resource written the same way, the floor of any export (no
  model, no simulation).

The ratio is Shipa's resources/s (the whole generation: simulation, fraud and defects, FHIR, radiographs and
manifests) divided by the baseline's (writing only). Everything runs in one process with one thread.

    python benchmarks/bench_synthesize.py                     # 1,000 and 20,000 patients; baselines at 1,000
    python benchmarks/bench_synthesize.py --sizes 500 5000 --image-size 128 --format bundle --gzip
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from pipelines.synth.cohort import generate
from pipelines.synth.spec import CohortSpec
settings = json.loads(sys.argv[1])
start = time.perf_counter()
counts = generate(CohortSpec.from_mapping(settings), Path(sys.argv[2]), progress=False)
elapsed = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_kib": peak_kib, "radiographs": counts["radiographs"],
                  "claims": counts["claims"]}))
"""

# The baselines: read the cohort's resources back (not timed), then write them the plain way (timed).
_BASELINE = """
import json, resource, sys, time
from pathlib import Path
import orjson
mode, cohort, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
by_type = {}
for path in sorted((cohort / "fhir").rglob("*")):
    if path.suffix == ".gz" or not path.is_file():
        raise SystemExit(f"bench_synthesize: {path}: the baselines read uncompressed NDJSON or Bundles only")
    if path.suffix == ".ndjson":
        docs = []
        for line in path.read_bytes().splitlines():
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pass
    else:
        docs = [e.get("resource") for e in orjson.loads(path.read_bytes()).get("entry", [])]
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
            by_type.setdefault(doc["resourceType"], []).append(doc)
if mode == "models":
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    # Import each model class and validate one resource of each type before the clock starts: pydantic builds a
    # validator per class on first use, a one-off cost that would dominate small cohorts.
    for rtype, docs in by_type.items():
        try:
            get_fhir_model_class(rtype).model_validate(docs[0])
        except (ValidationError, ValueError, TypeError):
            pass
out.mkdir(parents=True, exist_ok=True)
written = invalid = 0
start = time.perf_counter()
for rtype, docs in by_type.items():
    with open(out / f"{rtype}.ndjson", "w", encoding="utf-8") as fh:
        if mode == "models":
            cls = get_fhir_model_class(rtype)
            for doc in docs:
                try:
                    fh.write(cls.model_validate(doc).model_dump_json() + "\\n")
                    written += 1
                except (ValidationError, ValueError, TypeError):
                    invalid += 1
        else:
            for doc in docs:
                fh.write(json.dumps(doc) + "\\n")
                written += 1
elapsed = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "peak_kib": peak_kib, "resources": written + invalid, "invalid": invalid}))
"""


def _count_resources(cohort: Path) -> int:
    """FHIR resources in a generated cohort (NDJSON lines, or Bundle entries)."""
    import gzip

    import orjson

    n = 0
    for path in (cohort / "fhir").rglob("*"):
        if not path.is_file():
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        if ".ndjson" in path.name:
            n += sum(1 for line in data.splitlines() if line.strip())
        else:
            try:
                n += len(orjson.loads(data).get("entry", []))
            except orjson.JSONDecodeError:
                continue
    return n


def run_baseline(mode: str, cohort: Path, workdir: Path) -> dict[str, float]:
    """Write the cohort's resources the plain way (``models`` or ``json``) in a subprocess; its timings."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", _BASELINE, mode, str(cohort), str(workdir / f"baseline-{mode}")]
    done = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """Generate one cohort of ``n`` patients in a subprocess and return its timings and peak memory."""
    settings = {
        "n_patients": n,
        "image_size": args.image_size,
        "imaging_rate": args.imaging_rate,
        "format": args.format,
        "gzip": args.gzip,
        "seed": args.seed,
    }
    out = workdir / f"cohort-{n}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(settings), str(out)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["resources"] = _count_resources(out)
    size_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    result["output_mib"] = size_mib
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse options, run every size, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000], help="cohort sizes (patients)")
    parser.add_argument("--image-size", type=int, default=256, help="radiograph side in pixels")
    parser.add_argument("--imaging-rate", type=float, default=0.4, help="share of patients with a radiograph")
    parser.add_argument("--format", choices=("ndjson", "bundle"), default="ndjson")
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seed", type=int, default=20250101)
    args = parser.parse_args(argv)

    rows = []
    baselines: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="shipa-bench-") as tmp:
        for n in args.sizes:
            r = run_size(n, args, Path(tmp))
            rows.append((n, r))
            print(f"  {n} patients: {r['seconds']:.1f} s", file=sys.stderr, flush=True)
            if n == args.sizes[0] and not args.gzip:
                for mode in ("models", "json"):
                    baselines[mode] = run_baseline(mode, Path(tmp) / f"cohort-{n}", Path(tmp))

    base_rate = rows[0][0] / rows[0][1]["seconds"]
    base_rss = rows[0][1]["peak_kib"]
    print(
        f"synthesize benchmark: format={args.format}{'+gzip' if args.gzip else ''}, images {args.image_size} px "
        f"at rate {args.imaging_rate}, one process, OMP_NUM_THREADS=1"
    )
    header = (
        f"{'patients':>9} {'resources':>9} {'radiographs':>11} {'claims':>8} {'seconds':>8} {'patients/s':>10} "
        f"{'res/s':>7} {'x first':>7} {'peak RSS MiB':>12} {'x first':>7} {'output MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    for n, r in rows:
        rate = n / r["seconds"]
        print(
            f"{n:>9} {r['resources']:>9} {r['radiographs']:>11} {r['claims']:>8} {r['seconds']:>8.1f} {rate:>10.0f} "
            f"{r['resources'] / r['seconds']:>7.0f} {rate / base_rate:>7.2f} {r['peak_kib'] / 1024:>12.1f} "
            f"{r['peak_kib'] / base_rss:>7.2f} {r['output_mib']:>10.1f}"
        )
    if not baselines:
        print("baselines: not run (--gzip: they read uncompressed output)")
        return
    n, first = rows[0]
    shipa_rate = first["resources"] / first["seconds"]
    print(f"\nagainst plain exports of the same {first['resources']} resources ({n} patients; one process each)")
    print(f"{'method':>44} {'resources/s':>11} {'Shipa / it':>10} {'peak RSS MiB':>12}")
    shipa_label = "Shipa generate (all of it, radiographs too)"
    print(f"{shipa_label:>44} {shipa_rate:>11.0f} {'':>10} {first['peak_kib'] / 1024:>12.1f}")
    labels = {
        "models": "stock R4B model + model_dump_json, write",
        "json": "json.dumps, write (no model)",
    }
    for mode, b in baselines.items():
        rate = b["resources"] / b["seconds"]
        print(f"{labels[mode]:>44} {rate:>11.0f} {shipa_rate / rate:>9.2f}x {b['peak_kib'] / 1024:>12.1f}")
    print("ratio = Shipa's resources/s (the whole generation) / the baseline's (writing only; per core = total, all")
    print("one process); the baselines' RSS includes the resources they hold in memory before writing.")


if __name__ == "__main__":
    main()

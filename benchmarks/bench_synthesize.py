"""Benchmark of the synthetic cohort generator: patients per second and peak memory at several cohort sizes.

Each size runs in its own subprocess (so peak RSS is that run's alone), with images at the default rate. The
first size is the baseline: the table shows throughput and memory of the others as ratios to it, so that the
figures compare across machines. Flat memory means a ratio near 1.0 however large the cohort.

    python benchmarks/bench_synthesize.py                     # 1,000 and 20,000 patients
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
    with tempfile.TemporaryDirectory(prefix="shipa-bench-") as tmp:
        for n in args.sizes:
            r = run_size(n, args, Path(tmp))
            rows.append((n, r))
            print(f"  {n} patients: {r['seconds']:.1f} s", file=sys.stderr, flush=True)

    base_rate = rows[0][0] / rows[0][1]["seconds"]
    base_rss = rows[0][1]["peak_kib"]
    print(
        f"synthesize benchmark: format={args.format}{'+gzip' if args.gzip else ''}, images {args.image_size} px "
        f"at rate {args.imaging_rate}, one process, OMP_NUM_THREADS=1"
    )
    header = (
        f"{'patients':>9} {'radiographs':>11} {'claims':>8} {'seconds':>8} {'patients/s':>10} {'x base':>7} "
        f"{'peak RSS MiB':>12} {'x base':>7} {'output MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    for n, r in rows:
        rate = n / r["seconds"]
        print(
            f"{n:>9} {r['radiographs']:>11} {r['claims']:>8} {r['seconds']:>8.1f} {rate:>10.0f} "
            f"{rate / base_rate:>7.2f} {r['peak_kib'] / 1024:>12.1f} {r['peak_kib'] / base_rss:>7.2f} "
            f"{r['output_mib']:>10.1f}"
        )


if __name__ == "__main__":
    main()

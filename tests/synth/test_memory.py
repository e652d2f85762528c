"""Peak memory does not grow with the number of patients (streaming generation)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_CODE = """
import resource, sys
from pathlib import Path
from pipelines.synth.cohort import generate
from pipelines.synth.spec import CohortSpec
spec = CohortSpec(n_patients=int(sys.argv[1]), image_size=32, imaging_rate=0.05, seed=3)
generate(spec, Path(sys.argv[2]), progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(n: int, out: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _CODE, str(n), str(out)],
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return int(done.stdout.strip().splitlines()[-1])


def test_peak_memory_is_flat_in_cohort_size(tmp_path: Path) -> None:
    small = _peak_kib(300, tmp_path / "small")
    large = _peak_kib(3000, tmp_path / "large")
    # Ten times the patients may cost a few MiB of caches and buffers, never memory per patient.
    assert large - small < 10 * 1024, (small, large)

"""Same seed and settings give byte-identical files (also in another process with another hash seed); another
seed gives another cohort; each patient depends only on the seed and its index."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pipelines.synth.cohort import generate

from .cohorts import small_spec


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(("fmt", "gz"), [("ndjson", False), ("ndjson", True), ("bundle", True)])
def test_same_seed_gives_identical_bytes(tmp_path: Path, fmt: str, gz: bool) -> None:
    spec = small_spec(n_patients=25, format=fmt, gzip=gz)
    generate(spec, tmp_path / "a", progress=False)
    generate(spec, tmp_path / "b", progress=False)
    first = _digests(tmp_path / "a")
    assert len(first) > 10 and any(name.startswith("dicom/") for name in first)
    assert first == _digests(tmp_path / "b")

    # Another process, another string-hash seed: still the same bytes.
    settings = orjson.dumps(spec.as_dict()).decode()
    code = (
        "import sys, orjson; from pathlib import Path; from pipelines.synth.cohort import generate; "
        "from pipelines.synth.spec import CohortSpec; "
        "generate(CohortSpec.from_mapping(orjson.loads(sys.argv[1])), Path(sys.argv[2]), progress=False)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, settings, str(tmp_path / "c")], check=True, env=env, timeout=120)
    assert _digests(tmp_path / "c") == first


def test_another_seed_gives_another_cohort(tmp_path: Path) -> None:
    generate(small_spec(n_patients=25), tmp_path / "a", progress=False)
    generate(small_spec(n_patients=25, seed=8), tmp_path / "b", progress=False)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    for name in ("fhir/Patient.ndjson", "fhir/Observation.ndjson", "fhir/Claim.ndjson", "fhir/Organization.ndjson"):
        assert a[name] != b[name], name
    assert {n for n in a if n.startswith("dicom/")}.isdisjoint(n for n in b if n.startswith("dicom/"))


def test_patients_do_not_depend_on_cohort_size(tmp_path: Path) -> None:
    generate(small_spec(n_patients=20, fraud={}), tmp_path / "small", progress=False)
    generate(small_spec(n_patients=30, fraud={}), tmp_path / "big", progress=False)
    for name in ("Patient", "Encounter", "Observation", "Claim"):
        small = (tmp_path / "small" / "fhir" / f"{name}.ndjson").read_bytes()
        big = (tmp_path / "big" / "fhir" / f"{name}.ndjson").read_bytes()
        assert big.startswith(small) and len(big) > len(small), name

"""The ``synthesize`` stage writes atomically: the destination is replaced only by a finished cohort, and a
killed run leaves nothing that looks finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipelines.config import ConfigError, SynthesizeParams
from pipelines.stages.synthesize import run
from pipelines.synth.spec import CohortSpec


def _params(**overrides: object) -> SynthesizeParams:
    base: dict[str, object] = {"n_patients": 20, "image_size": 32, "months": 6, "n_organizations": 6}
    return SynthesizeParams.model_validate(base | overrides)


def test_run_replaces_the_destination_and_returns_counts(tmp_path: Path) -> None:
    out = tmp_path / "data" / "raw"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an older run")
    counts = run(_params(), out, progress=False)
    assert not (out / "stale.txt").exists()
    marker = orjson.loads((out / "COHORT.json").read_bytes())
    assert marker["counts"] == counts and counts["patients"] == 20
    assert marker["params_sha256"] == CohortSpec.from_mapping(_params().model_dump()).sha256()
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw"]  # no temporary folders left


def test_an_impossible_spec_is_a_config_error(tmp_path: Path) -> None:
    params = _params().model_copy(update={"format": "csv"})  # bypasses pydantic, as a hand-built object could
    with pytest.raises(ConfigError, match="format"):
        run(params, tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw").exists()


def test_a_killed_run_leaves_no_finished_looking_folder(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    code = (
        "import sys; from pathlib import Path; from pipelines.config import SynthesizeParams; "
        "from pipelines.stages.synthesize import run; "
        "run(SynthesizeParams(n_patients=200000, image_size=32), Path(sys.argv[1]), progress=False)"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        tmp = tmp_path / f".raw.tmp-{proc.pid}"
        while not (tmp / "manifest" / "dirty.csv").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not out.exists()
    assert tmp.is_dir() and not (tmp / "COHORT.json").exists()
    # The next run clears what the killed one left behind.
    run(_params(), out, progress=False)
    assert (out / "COHORT.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_library_defaults_match_the_params_defaults() -> None:
    assert CohortSpec() == CohortSpec.from_mapping(SynthesizeParams().model_dump())

"""A scratch copy of the repository in which real ``dvc repro`` runs on a tiny cohort."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# Small enough for seconds per stage, big enough that every defect and fraud pattern appears.
TINY_PARAMS: dict[str, dict[str, Any]] = {
    "synthesize": {"n_patients": 200, "image_size": 32, "imaging_rate": 0.7, "n_organizations": 8},
    "ingest": {"workers": 2, "chunk_size": 500, "image_size": 32},
    "train": {"diagnosis": {"image_size": 32, "epochs": 2, "num_threads": 1}},
    "evaluate": {"min_group_size": 5},
    # A tiny cohort's models are too uncertain for the real gate; the gate itself is tested in tests/stages.
    "register": {
        "diagnosis": {"gate": {"min_primary_low": 0.0, "max_ece": None, "max_subgroup_gap": None}},
        "fraud": {"gate": {"min_primary_low": 0.0, "max_ece": None}},
    },
}


def _tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return [f for f in out.decode().split("\0") if f]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def run_cmd(args: list[str], cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run a command with the project's venv first on PATH; fail the test with its output if it fails."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def cmd() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_cmd` as a fixture (test modules do not import each other)."""
    return run_cmd


@pytest.fixture(scope="session")
def tiny_params() -> dict[str, dict[str, Any]]:
    """Params overrides for a pipeline run of seconds per stage."""
    return TINY_PARAMS


@pytest.fixture(scope="session")
def make_workspace(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, dict[str, Any]]], Path]:
    """Return a factory: copy the repository into a fresh git repo with params overridden per section."""

    def make(overrides: dict[str, dict[str, Any]]) -> Path:
        ws = tmp_path_factory.mktemp("workspace")
        for rel in _tracked_files():
            src = REPO_ROOT / rel
            if src.is_file():
                dst = ws / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        params = yaml.safe_load((ws / "params.yaml").read_text())
        for section, values in overrides.items():
            _merge(params.setdefault(section, {}), values)
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_cmd(["git", "init", "-q"], ws)
        run_cmd(["git", "-c", "user.email=ci@shipa.local", "-c", "user.name=ci", "add", "-A"], ws)
        run_cmd(["git", "-c", "user.email=ci@shipa.local", "-c", "user.name=ci", "commit", "-qm", "scratch"], ws)
        return ws

    return make

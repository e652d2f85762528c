"""Every stage command run as a user would outside the repository: from an empty folder, no params.yaml.

Each command is a real subprocess (``python -m pipelines.cli``) whose working directory is an empty folder, with
``MLFLOW_TRACKING_URI`` unset and ``HOME`` elsewhere; every path is given by an option that points to another
folder. The working directory must still be empty afterwards: no checkpoints, no ``mlflow.db``, no ``mlruns``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# Seconds per stage, yet every stage has something to learn from (see tests/integration/conftest.py).
SMALL_PARAMS = {
    "synthesize": {"n_patients": 150, "image_size": 32, "imaging_rate": 0.7, "n_organizations": 6, "seed": 7},
    "ingest": {"workers": 1, "image_size": 32},
    "train": {
        "diagnosis": {"image_size": 32, "epochs": 1, "num_threads": 1, "modes": ["fused"]},
        "fraud": {"epochs": 2, "iforest_trees": 20, "gbm": {"max_iter": 20}},
    },
    "evaluate": {"n_boot": 20, "min_group_size": 5, "fraud_k": 20},
    # A tiny cohort's models are too uncertain for the real gate; the gate itself is tested in tests/stages.
    "register": {
        "diagnosis": {"gate": {"min_primary_low": 0.0, "max_ece": None, "max_subgroup_gap": None}},
        "fraud": {"gate": {"min_primary_low": 0.0, "max_ece": None}},
    },
}


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class Shipa:
    """Runs ``shipa`` in an empty working directory with a clean environment."""

    def __init__(self, root: Path) -> None:
        self.cwd, self.home = root / "cwd", root / "home"
        self.cwd.mkdir()
        self.home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SHIPA_"))}
        env.update(
            HOME=str(self.home),
            PYTHONPATH=str(REPO_ROOT),
            OMP_NUM_THREADS="1",
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="1",
        )
        self.env = env

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == expect, f"shipa {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-3000:]}"
        assert not _tree(self.cwd), f"shipa {' '.join(args)} wrote into the working directory: {_tree(self.cwd)}"
        return proc


@pytest.fixture
def shipa(tmp_path: Path) -> Shipa:
    return Shipa(tmp_path)


@pytest.mark.slow
def test_every_stage_runs_outside_the_repository(shipa: Shipa, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    out.mkdir()
    params = out / "small.yaml"
    params.write_text(yaml.safe_dump(SMALL_PARAMS), encoding="utf-8")
    raw, interim, processed, models = out / "raw", out / "interim", out / "processed", out / "models"
    store = out / "store" / "mlflow.db"
    store.parent.mkdir()
    p, t = ["--params", str(params)], ["--tracking-uri", f"sqlite:///{store}"]

    shipa("synthesize", "--out", str(raw), *p, "--no-progress")
    assert (raw / "manifest").is_dir()
    shipa("ingest", "--input", str(raw), "--out", str(interim), *p, "--no-progress")
    assert (interim / "ingest_report.json").is_file()
    for model in ("diagnosis", "fraud"):
        shipa("features", model, "--interim", str(interim), "--processed", str(processed), *p)
        assert (processed / model / "dataset.parquet").is_file()
        shipa("train", model, "--processed", str(processed), "--models", str(models), *p, *t, "--no-progress")
        assert (models / model / "train").is_dir()
        shipa(
            "evaluate", model, "--processed", str(processed), "--models", str(models),
            "--raw", str(raw), "--interim", str(interim), *p, *t,
        )  # fmt: skip
        assert (models / model / "metrics.json").is_file()
        shipa("register", model, "--processed", str(processed), "--models", str(models), *p, *t)
        registered = json.loads((models / model / "registered.json").read_text(encoding="utf-8"))
        assert registered["version"]
        assert registered["git_commit"] == "unknown", "lineage outside git degrades to 'unknown'"
        assert (models / model / "model_card.md").is_file()
    # Runs, registry and artifacts all live in the store that --tracking-uri named, artifacts beside it.
    assert store.is_file() and (store.parent / "mlartifacts").is_dir()
    # Checkpoints follow --models (a finished run removes them); nothing is left under the working directory.
    assert not (models / "diagnosis" / ".checkpoints").exists()  # removed with its last checkpoint

    import polars as pl

    dataset = pl.read_parquet(processed / "fraud" / "dataset.parquet")
    day = dataset.group_by("asof").len().sort(["len", "asof"], descending=[True, False])["asof"][0]
    shipa("fraud", "worklist", "--date", str(day), "--k", "3", "--processed", str(processed), "--models", str(models))
    assert (models / "fraud" / "worklists" / f"worklist-{day}.parquet").is_file()
    assert {p.name for p in tmp_path.iterdir()} == {"cwd", "home", "elsewhere"}


def test_without_a_params_file_the_built_in_defaults_apply(shipa: Shipa, tmp_path: Path) -> None:
    raw, interim = tmp_path / "raw", tmp_path / "interim"
    made = shipa("synthesize", "--n-patients", "30", "--out", str(raw), "--no-progress")
    assert "using the built-in defaults" in made.stderr
    assert json.loads(made.stdout)
    shipa("ingest", "--input", str(raw), "--out", str(interim), "--workers", "1", "--no-progress")
    report = json.loads((interim / "ingest_report.json").read_text(encoding="utf-8"))
    assert report["fhir"]["tables"]["patients"] > 0


def test_check_params_without_a_params_file_prints_the_built_in_defaults(shipa: Shipa) -> None:
    from pipelines.config import SynthesizeParams

    proc = shipa("check-params")
    effective = json.loads(proc.stdout)
    assert effective["synthesize"] == json.loads(SynthesizeParams().model_dump_json())
    assert {"ingest", "features", "train", "evaluate", "register"} <= set(effective)


def test_a_missing_explicit_params_file_is_one_line_naming_it(shipa: Shipa, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "params.yaml"
    proc = shipa("synthesize", "--out", str(tmp_path / "raw"), "--params", str(missing), expect=2)
    assert proc.stderr.strip().splitlines()[-1] == f"shipa: error: {missing}: params file not found"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "raw").exists()

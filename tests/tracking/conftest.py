"""Fixtures of the tracking tests: a fresh sqlite MLflow store per test (copied from one migrated template),
a scratch git repository, a trivial pyfunc model and real evaluation reports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from .helpers import DVC_LOCK, git, make_report


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite store, made once (creating one costs seconds of migrations)."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    db = folder / "mlflow.db"
    # In a subprocess run from the temp folder, so MLflow's default ./mlruns never lands in the repository.
    code = f"from mlflow import MlflowClient; MlflowClient('sqlite:///{db}').search_experiments()"
    subprocess.run([sys.executable, "-c", code], cwd=folder, check=True, capture_output=True)
    return db


@pytest.fixture(autouse=True)
def _isolated_mlflow(_template_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides the suite-wide fixture: each test gets its own copy of the template store."""
    store = tmp_path / "mlflow"
    store.mkdir()
    shutil.copy(_template_store, store / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")


@pytest.fixture
def tracking_uri(_isolated_mlflow: None, tmp_path: Path) -> str:
    """This test's sqlite tracking URI (artifacts go beside it, under ``mlartifacts/``)."""
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A scratch git repository with a hand-written dvc.lock, params.yaml and one code file, all committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "dvc.lock").write_text(DVC_LOCK)
    (repo / "params.yaml").write_text("train:\n  lr: 0.001\n")
    (repo / "model.py").write_text("WEIGHT = 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    return repo


@pytest.fixture
def input_example() -> pd.DataFrame:
    """The pyfunc's input example."""
    return pd.DataFrame({"x": [0.1, 0.2]})


@pytest.fixture(scope="session")
def good_report() -> dict[str, Any]:
    """A well-ranking model's report (AUROC about 0.9)."""
    return make_report(0.8)


@pytest.fixture(scope="session")
def weak_report() -> dict[str, Any]:
    """A weaker model's report on the same test data (AUROC about 0.7)."""
    return make_report(0.4, seed=1)


@pytest.fixture(scope="session")
def strong_report() -> dict[str, Any]:
    """A stronger model's report on the same test data."""
    return make_report(1.2, seed=2)

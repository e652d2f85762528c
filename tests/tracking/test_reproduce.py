"""Reproduce a registered version from its lineage in a scratch git worktree of a real git + DVC project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.tracking.errors import ModelVersionNotFoundError, ReproductionError, UnknownCommitError
from pipelines.tracking.lineage import collect_lineage
from pipelines.tracking.registry import register_version
from pipelines.tracking.reproduce import reproduction_plan, run_reproduction
from pipelines.tracking.runs import stage_run

from .helpers import DoublingModel, git

NAME = "shipa-fraud"
TRAIN = """\
import json, random, yaml
seed = yaml.safe_load(open("params.yaml"))["train"]["seed"]
random.seed(seed)
json.dump({"auprc": round(random.random(), 6), "seed": seed}, open("metrics.json", "w"))
open("model.txt", "w").write(str(seed))
"""
DVC_YAML = """\
stages:
  train:
    cmd: python train.py
    deps:
      - train.py
    params:
      - train.seed
    outs:
      - model.txt
    metrics:
      - metrics.json:
          cache: false
"""


def _dvc(root: Path, *args: str) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(root)}
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, check=True, capture_output=True, env=env)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC project whose `train` stage was run and committed (shared: tests only add worktrees)."""
    root = tmp_path_factory.mktemp("project")
    git(root, "init", "-q")
    _dvc(root, "init", "-q")
    _dvc(root, "config", "core.analytics", "false")
    (root / "train.py").write_text(TRAIN)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("train:\n  seed: 7\n")
    _dvc(root, "repro", "train")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "train")
    return root


def _register(tracking_uri: str, project: Path, example: pd.DataFrame, **overrides: str) -> str:
    tags = {**collect_lineage("train", repo_root=project, params={"seed": 7}, device="cpu"), **overrides}
    with stage_run(
        "train",
        tracking_uri=tracking_uri,
        experiment="shipa",
        params={"seed": 7},
        tags=tags,
        pipeline_run_id=None,
    ) as run:
        logged = run.log_pyfunc_model(DoublingModel(), input_example=example)
    return register_version(logged.model_uri, NAME, tracking_uri=tracking_uri, run_id=logged.run_id)


def test_plan_names_commit_stage_and_commands(tracking_uri: str, project: Path, input_example: pd.DataFrame) -> None:
    version = _register(tracking_uri, project, input_example)
    commit = git(project, "rev-parse", "HEAD")

    plan = reproduction_plan(f"models:/{NAME}/{version}", tracking_uri=tracking_uri)

    assert plan.commit == commit and plan.stage == "train" and plan.dirty == "false"
    assert plan.commands == [
        f"git checkout {commit}",
        "dvc checkout --allow-missing",
        "dvc repro --force train",
    ]
    assert plan.data == {"train.py": plan.data["train.py"]} and len(plan.data["train.py"]) == 32
    assert any("params.yaml as committed" in note for note in plan.notes)


def test_reproduction_in_a_worktree_gives_the_same_metrics(
    tracking_uri: str, project: Path, input_example: pd.DataFrame, tmp_path: Path
) -> None:
    version = _register(tracking_uri, project, input_example)

    result = run_reproduction(
        f"models:/{NAME}/{version}", workdir=tmp_path / "repro", tracking_uri=tracking_uri, repo=project
    )

    assert result.worktree == (tmp_path / "repro" / f"{NAME}-v{version}").resolve()
    assert git(result.worktree, "rev-parse", "HEAD") == git(project, "rev-parse", "HEAD")
    assert result.metrics_path == result.worktree / "metrics.json"
    assert result.metrics_path.read_text() == (project / "metrics.json").read_text()
    assert result.data_mismatches == {}
    assert "dvc repro --force train" in result.log_file.read_text()
    assert git(project, "status", "--porcelain") == ""  # the user's checkout is untouched


def test_unknown_commit_dirty_run_and_missing_version_are_named_errors(
    tracking_uri: str, project: Path, input_example: pd.DataFrame, tmp_path: Path
) -> None:
    foreign = _register(tracking_uri, project, input_example, **{"shipa.git_commit": "f" * 40})
    dirty = _register(tracking_uri, project, input_example, **{"shipa.git_dirty": "true"})

    with pytest.raises(UnknownCommitError, match=f"commit {'f' * 40} is not in the git repository"):
        run_reproduction(f"models:/{NAME}/{foreign}", workdir=tmp_path, tracking_uri=tracking_uri, repo=project)
    with pytest.raises(ReproductionError, match="dirty work tree"):
        run_reproduction(f"models:/{NAME}/{dirty}", workdir=tmp_path, tracking_uri=tracking_uri, repo=project)
    with pytest.raises(ModelVersionNotFoundError, match="does not exist"):
        reproduction_plan(f"models:/{NAME}/99", tracking_uri=tracking_uri)
    assert not list(tmp_path.glob(f"{NAME}-v*"))

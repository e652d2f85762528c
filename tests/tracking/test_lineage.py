"""Lineage tags against a scratch git repository, a hand-written dvc.lock and a real DVC project."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.tracking.lineage import (
    collect_lineage,
    dvc_dep_hashes,
    lock_dep_hashes,
    params_sha256,
    pipeline_run_id_from_state,
    resolve_pipeline_run_id,
)

from .helpers import git

PARAMS = {"lr": 0.001, "model": {"network": "densenet121", "layers": [6, 12]}}


def test_tags_match_git_and_dvc_lock(git_repo: Path) -> None:
    tags = collect_lineage("train@diagnosis", repo_root=git_repo, params=PARAMS, device="cpu", hashes="lock")

    assert all(key.startswith("shipa.") for key in tags)
    assert tags["shipa.git_commit"] == git(git_repo, "rev-parse", "HEAD")
    assert tags["shipa.git_dirty"] == "false"
    assert tags["shipa.stage"] == "train@diagnosis"
    assert tags["shipa.device"] == "cpu"
    lock = yaml.safe_load((git_repo / "dvc.lock").read_text())["stages"]["train@diagnosis"]["deps"]
    assert {k: v for k, v in tags.items() if k.startswith("shipa.data.")} == {
        f"shipa.data.{dep['path']}": dep["md5"] for dep in lock
    }
    assert tags["shipa.data_source"] == "dvc.lock"
    for package in ("python", "torch", "monai", "mlflow", "fhir.resources", "dvc"):
        assert tags[f"shipa.version.{package}"] not in ("", "absent")


def test_dirty_flag_flips_when_a_tracked_file_changes(git_repo: Path) -> None:
    before = collect_lineage("features", repo_root=git_repo, params={}, device="cpu", hashes="lock")
    (git_repo / "model.py").write_text("WEIGHT = 2\n")
    after = collect_lineage("features", repo_root=git_repo, params={}, device="cpu", hashes="lock")

    assert (before["shipa.git_dirty"], after["shipa.git_dirty"]) == ("false", "true")
    assert before["shipa.git_commit"] == after["shipa.git_commit"]


def test_files_a_running_pipeline_writes_do_not_make_the_tree_dirty(git_repo: Path) -> None:
    (git_repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (git_repo / "data").mkdir()
    (git_repo / "data" / ".gitignore").write_text("/interim\n")

    tags = collect_lineage("features", repo_root=git_repo, params={}, device="cpu", hashes="lock")

    assert tags["shipa.git_dirty"] == "false"


def test_params_hash_is_sha256_of_canonical_json_and_order_free() -> None:
    canonical = json.dumps(PARAMS, sort_keys=True, separators=(",", ":")).encode()

    assert params_sha256(PARAMS) == hashlib.sha256(canonical).hexdigest()
    assert params_sha256(dict(reversed(list(PARAMS.items())))) == params_sha256(PARAMS)
    assert params_sha256({**PARAMS, "lr": 0.01}) != params_sha256(PARAMS)


def test_outside_git_and_dvc_lineage_says_unknown(tmp_path: Path) -> None:
    tags = collect_lineage("features", repo_root=tmp_path, params={}, device="cpu", hashes="dvc")

    assert tags["shipa.git_commit"] == "unknown"
    assert tags["shipa.git_dirty"] == "unknown"
    assert tags["shipa.data_source"] == "none"
    assert lock_dep_hashes(tmp_path / "dvc.lock", "features") == {}


def test_pipeline_run_id_survives_pipeline_writes_but_not_param_changes(git_repo: Path) -> None:
    first = pipeline_run_id_from_state(git_repo)
    (git_repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert pipeline_run_id_from_state(git_repo) == first
    assert first.startswith(git(git_repo, "rev-parse", "HEAD")[:12])

    (git_repo / "params.yaml").write_text("train:\n  lr: 0.01\n")
    assert pipeline_run_id_from_state(git_repo) != first
    assert resolve_pipeline_run_id("make-run-42", git_repo) == "make-run-42"


@pytest.fixture
def dvc_project(tmp_path: Path) -> Path:
    """A real git + DVC project: a folder dep, a file dep and a foreach stage."""
    root = tmp_path / "proj"
    (root / "data" / "raw").mkdir(parents=True)
    git(root, "init", "-q")
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=root, check=True)
    subprocess.run([*dvc, "config", "core.analytics", "false"], cwd=root, check=True)
    (root / "data" / "raw" / "a.csv").write_text("x\n1\n")
    (root / "data" / "raw" / "b.csv").write_text("x\n2\n")
    (root / "train.py").write_text("import sys\nopen(sys.argv[1], 'w').write('{}')\n")
    (root / "dvc.yaml").write_text(
        "stages:\n"
        "  train:\n"
        "    foreach: [diagnosis, fraud]\n"
        "    do:\n"
        "      cmd: python train.py out_${item}.json\n"
        "      deps:\n"
        "        - data/raw\n"
        "        - train.py\n"
        "      outs:\n"
        "        - out_${item}.json\n"
        "  report:\n"
        "    cmd: python report.py\n"
        "    deps:\n"
        "      - data/labels.csv\n"
        "      - train.py\n"
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    return root


def test_dvc_hashes_now_equal_what_dvc_writes_to_the_lock_afterwards(dvc_project: Path) -> None:
    # During a stage, dvc.lock still holds the previous run: lineage must hash the deps as DVC will.
    now = dvc_dep_hashes(dvc_project, "train@fraud")
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "train@fraud"],
        cwd=dvc_project,
        check=True,
        capture_output=True,
        env={"PATH": env_path, "HOME": str(dvc_project)},
    )
    written = lock_dep_hashes(dvc_project / "dvc.lock", "train@fraud")

    assert set(now) == {"data/raw", "train.py"}
    assert now == written
    assert now["data/raw"].endswith(".dir")
    tags = collect_lineage("train@fraud", repo_root=dvc_project, params={}, device="cpu")
    assert tags["shipa.data_source"] == "dvc"
    assert tags["shipa.data.data/raw"] == written["data/raw"]


def test_a_declared_dep_that_does_not_exist_is_tagged_missing(dvc_project: Path) -> None:
    hashes = dvc_dep_hashes(dvc_project, "report")

    assert hashes["data/labels.csv"] == "missing"
    assert len(hashes["train.py"]) == 32

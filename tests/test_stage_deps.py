"""dvc.yaml lists exactly the code each stage imports and the params it reads, and dvc.lock matches the code.

The closure itself is checked against real ``dvc status`` in tests/integration/test_dvc_repro.py.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from pipelines import stage_deps

REPO = Path(__file__).resolve().parents[1]


def _dvc_yaml(root: Path = REPO) -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    return data


def test_dvc_yaml_lists_each_stages_import_closure_and_params() -> None:
    assert stage_deps.differences(_dvc_yaml(), REPO) == []


def test_regenerating_dvc_yaml_changes_nothing() -> None:
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert stage_deps.rewrite(text, REPO) == text, "dvc.yaml is stale: run `make deps`"


def _copy_project(dst: Path) -> Path:
    """The package and a freshly generated dvc.yaml (the checks of the committed one are the tests above)."""
    shutil.copytree(REPO / "pipelines", dst / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "dvc.yaml").write_text(stage_deps.rewrite((REPO / "dvc.yaml").read_text(encoding="utf-8"), dst))
    return dst


def test_an_undeclared_import_fails_the_check_naming_stage_and_module(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    module = root / "pipelines" / "stages" / "train" / "fraud.py"
    # An import inside a function counts: it runs when the stage runs.
    module.write_text(
        module.read_text(encoding="utf-8") + "\n\ndef _later() -> None:\n    import pipelines.audit.trace  # noqa\n",
        encoding="utf-8",
    )
    problems = stage_deps.differences(_dvc_yaml(root), root)
    assert problems, "the check must fail when a stage gains an import"
    assert any(p.startswith("dvc.yaml: stage train@fraud imports/reads but does not list code:") for p in problems)
    assert any("pipelines/audit/trace.py" in p for p in problems)
    assert not any("train@diagnosis" in p for p in problems), problems  # the other item does not import it

    # Regenerating fixes it, for that item only.
    (root / "dvc.yaml").write_text(stage_deps.rewrite((root / "dvc.yaml").read_text(), root))
    assert stage_deps.differences(_dvc_yaml(root), root) == []
    listed = stage_deps.listed(_dvc_yaml(root))
    assert "pipelines/audit/trace.py" in listed["train@fraud"].code
    assert "pipelines/audit/trace.py" not in listed["train@diagnosis"].code


def test_the_command_line_exits_1_on_a_stale_dvc_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy_project(tmp_path)
    assert stage_deps.main(["--check", "--root", str(root)]) == 0
    text = (root / "dvc.yaml").read_text()
    (root / "dvc.yaml").write_text(text.replace("      - pipelines/stages/ingest.py\n", "", 1))
    assert stage_deps.main(["--check", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "stage ingest imports/reads but does not list code: pipelines/stages/ingest.py" in err
    assert "run `make deps`" in err


def test_speed_params_are_listed_nowhere_and_shared_sections_split_by_model() -> None:
    listed = stage_deps.listed(_dvc_yaml())
    every = {key for deps in listed.values() for key in deps.params}
    for speed in ("ingest.workers", "ingest.chunk_size", "ingest.max_queue", "train.diagnosis.num_threads"):
        assert speed not in every
    assert "ingest.image_size" in listed["ingest"].params
    assert "train.diagnosis.epochs" in listed["train@diagnosis"].params
    assert "evaluate.fraud_k" in listed["evaluate@fraud"].params
    assert "evaluate.fraud_k" not in listed["evaluate@diagnosis"].params
    assert "evaluate.subgroups" not in listed["evaluate@fraud"].params
    assert "features.fraud.duplicate_days" in listed["register@fraud"].params
    assert not [k for k in listed["register@diagnosis"].params if k.startswith("features.")]


def test_closure_follows_function_and_relative_imports_not_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / "pipelines"
    for sub in ("stages", "lib"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "lib" / "a.py").write_text("from . import b\n")
    (pkg / "lib" / "b.py").write_text("")
    (pkg / "lib" / "c.py").write_text("")
    (pkg / "lib" / "typing_only.py").write_text("")
    (pkg / "stages" / "s.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pipelines.lib import typing_only\n"
        "def run():\n    from pipelines.lib.a import x\n"
    )
    full = stage_deps.import_closure(["pipelines.stages.s"], tmp_path)
    # An import under ``if TYPE_CHECKING:`` never runs: no dep, in either mode.
    assert full == {"pipelines", "pipelines.stages", "pipelines.stages.s", "pipelines.lib", "pipelines.lib.a",
                    "pipelines.lib.b"}  # fmt: skip
    top = stage_deps.import_closure(["pipelines.stages.s"], tmp_path, top_level_only=True)
    assert top == {"pipelines", "pipelines.stages", "pipelines.stages.s"}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_committed_dvc_lock_matches_the_code_and_params() -> None:
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    listed = stage_deps.listed(_dvc_yaml())
    assert set(lock) == set(listed)
    stale: list[str] = []
    for stage, deps in listed.items():
        locked = {d["path"]: d.get("md5") for d in lock[stage].get("deps", [])}
        locked_code = {p: m for p, m in locked.items() if p.startswith("pipelines/")}
        if set(locked_code) != set(deps.code):
            stale.append(f"{stage}: dvc.lock lists other code deps than dvc.yaml")
            continue
        stale += [f"{stage}: {p} changed" for p, m in sorted(locked_code.items()) if _md5(REPO / p) != m]
        params = lock[stage].get("params", {}).get("params.yaml", {})
        if set(params) != set(deps.params):
            stale.append(f"{stage}: dvc.lock records other params than dvc.yaml lists")
    assert not stale, "dvc.lock is stale (run `make run` and commit dvc.lock):\n" + "\n".join(stale)

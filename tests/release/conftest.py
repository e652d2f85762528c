"""Fixtures of the release tests: a registry with a real diagnosis version (champion, card, input domain), the
publisher's key pair and a small real wheelhouse of two tiny packages built here with pip (no index).

The default tests never download: the wheelhouse is two wheels pip builds from tiny local projects
(``shipa-probe-app`` depends on ``shipa-probe-core``), so ``pip install --no-index`` is exercised for real,
dependency resolution included. The full wheelhouse (every pin of the lock, torch, the project; about 1-2 GB) is
built only by the ``slow`` test with ``SHIPA_RELEASE_FULL_TEST=1``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tracking.helpers import DIAGNOSIS_METADATA, DoublingModel, make_report

from pipelines.imaging.domain import InputDomain
from pipelines.release.keys import generate_key_pair
from pipelines.tracking.card_text import diagnosis_card_text
from pipelines.tracking.model_card import build_model_card
from pipelines.tracking.promotion import log_model_card
from pipelines.tracking.registry import register_version, set_alias
from pipelines.tracking.runs import stage_run

NAME = "shipa-diagnosis-pneumonia"
PROBE_CORE = """\
def value() -> int:
    return 21
"""
PROBE_APP = """\
from probe_core import value


def answer() -> int:
    return 2 * value()
"""


@dataclass(frozen=True)
class Publisher:
    """The publisher's registry and key pair."""

    tracking_uri: str
    private_pem: str
    public_key: Path
    card: dict[str, Any]
    version: str


def _register(tracking_uri: str) -> str:
    with stage_run(
        "register@diagnosis", tracking_uri=tracking_uri, experiment="shipa", params={}, tags={}, pipeline_run_id=None
    ) as run:
        logged = run.log_pyfunc_model(
            DoublingModel(), input_example=pd.DataFrame({"x": [0.1, 0.2]}), metadata=DIAGNOSIS_METADATA
        )
    return register_version(logged.model_uri, NAME, tracking_uri=tracking_uri, run_id=logged.run_id)


@pytest.fixture(scope="session")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Publisher:
    """A sqlite registry with two versions of the pneumonia model, version 2 champion with its model card."""
    folder = tmp_path_factory.mktemp("publisher")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    _register(tracking_uri)
    version = _register(tracking_uri)
    domain = InputDomain.from_dict(DIAGNOSIS_METADATA["input_domain"])
    card = build_model_card(
        name=NAME,
        version=version,
        text=diagnosis_card_text("pneumonia", domain.describe()),
        evaluation=make_report(0.8),
        data_summary={"studies": 10},
        lineage={},
    )
    log_model_card(NAME, version, card, tracking_uri=tracking_uri)
    set_alias(NAME, "champion", version, tracking_uri=tracking_uri)
    generate_key_pair(folder / "publisher.pem", folder / "publisher.pub")
    return Publisher(
        tracking_uri=tracking_uri,
        private_pem=(folder / "publisher.pem").read_text(),
        public_key=folder / "publisher.pub",
        card=card,
        version=version,
    )


def _project(root: Path, name: str, module: str, code: str, deps: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(code)
    requires = ", ".join(f'"{d}"' for d in deps)
    (root / "pyproject.toml").write_text(
        f'[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "1.0"\ndependencies = [{requires}]\n\n'
        f'[tool.setuptools]\npy-modules = ["{module}"]\n'
    )
    return root


@pytest.fixture(scope="session")
def probe_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with two real wheels built by pip offline: shipa-probe-app 1.0 needs shipa-probe-core 1.0."""
    base = tmp_path_factory.mktemp("probe")
    out = base / "wheels"
    core = _project(base / "core", "shipa-probe-core", "probe_core", PROBE_CORE, [])
    app = _project(base / "app", "shipa-probe-app", "probe_app", PROBE_APP, ["shipa-probe-core==1.0"])
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-index",
        "--no-build-isolation",
        "-w",
        str(out),
    ]
    subprocess.run([*cmd, str(core), str(app)], check=True, capture_output=True)
    assert sorted(p.name for p in out.glob("*.whl")) == [
        "shipa_probe_app-1.0-py3-none-any.whl",
        "shipa_probe_core-1.0-py3-none-any.whl",
    ]
    return out


@pytest.fixture
def app_wheel_only(probe_wheels: Path, tmp_path: Path) -> Path:
    """A folder with the app wheel but not the core wheel it depends on."""
    out = tmp_path / "app-only"
    out.mkdir()
    shutil.copy(probe_wheels / "shipa_probe_app-1.0-py3-none-any.whl", out)
    return out

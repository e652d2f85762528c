"""The notebooks run top to bottom on a tiny cohort's pipeline outputs, so they never rot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from pipelines.config import (
    DiagnosisFeaturesParams,
    DiagnosisTrainParams,
    EvaluateParams,
    FraudFeaturesParams,
    FraudTrainParams,
)
from pipelines.stages.evaluate import diagnosis as evaluate_dx
from pipelines.stages.evaluate import fraud as evaluate_fr
from pipelines.stages.features import diagnosis as features_dx
from pipelines.stages.features import fraud as features_fr
from pipelines.stages.train import diagnosis as train_dx
from pipelines.stages.train import fraud as train_fr

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder with the diagnosis and fraud outputs of a tiny pipeline run."""
    root = tmp_path_factory.mktemp("notebook-project")
    shutil.copytree(tiny_cohort / "data" / "interim", root / "data" / "interim")
    interim, processed, models = root / "data" / "interim", root / "data" / "processed", root / "models"
    cwd = Path.cwd()
    os.chdir(root)  # checkpoints and MLflow lineage are relative to the working directory
    try:
        features_dx.run(DiagnosisFeaturesParams(), interim, processed / "diagnosis")
        train_dx.run(
            DiagnosisTrainParams(image_size=32, epochs=1, num_threads=1), processed / "diagnosis",
            models / "diagnosis" / "train", progress=False,
        )  # fmt: skip
        evaluate_dx.run(
            EvaluateParams(n_boot=20, min_group_size=5), processed / "diagnosis", models / "diagnosis" / "train",
            models / "diagnosis" / "eval", models / "diagnosis" / "metrics.json",
        )  # fmt: skip
        features_fr.run(FraudFeaturesParams(), interim, processed / "fraud")
        train_fr.run(FraudTrainParams(epochs=2), processed / "fraud", models / "fraud" / "train")
        evaluate_fr.run(
            EvaluateParams(n_boot=20, fraud_k=20), processed / "fraud", models / "fraud" / "train",
            models / "fraud" / "eval", models / "fraud" / "metrics.json",
            raw=tiny_cohort / "data" / "raw", tables=interim / "tables",
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    return root


@pytest.mark.parametrize("name", ["04-sh-diagnosis-evaluation.ipynb", "05-sh-fraud-worklist.ipynb"])
def test_notebook_runs(name: str, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_ROOT", str(project))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(project)}}
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert outputs, "the notebook should show results"

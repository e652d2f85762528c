"""The diagnosis train and evaluate stages on the tiny cohort: a params change retrains without code changes."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from pipelines.config import DiagnosisFeaturesParams, DiagnosisTrainParams, EvaluateParams
from pipelines.stages.evaluate import diagnosis as evaluate_dx
from pipelines.stages.features import diagnosis as features_dx
from pipelines.stages.train import diagnosis as train_dx


@pytest.fixture
def workdir(tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # checkpoints (models/.checkpoints) and lineage look at the working directory
    features_dx.run(
        DiagnosisFeaturesParams(task="bronchitis", icd10_prefixes=("J20",)),
        tiny_cohort / "data" / "interim",
        tmp_path / "processed",
    )
    return tmp_path


def test_params_choose_network_size_and_modes_then_evaluate(workdir: Path) -> None:
    params = DiagnosisTrainParams(
        network="resnet18", image_size=32, epochs=2, batch_size=16, modes=("fused", "ehr"), num_threads=1
    )
    summary = train_dx.run(params, workdir / "processed", workdir / "models" / "train", progress=False)
    assert set(summary) == {"fused", "ehr"}
    meta = json.loads((workdir / "models" / "train" / "fused" / "model.json").read_text())
    assert (meta["network"], meta["image_size"], meta["mode"]) == ("resnet18", 32, "fused")
    assert not (workdir / "models" / ".checkpoints" / "diagnosis" / "fused").exists()  # removed once finished

    metrics = evaluate_dx.run(
        EvaluateParams(n_boot=50, min_group_size=5),
        workdir / "processed",
        workdir / "models" / "train",
        workdir / "models" / "eval",
        workdir / "models" / "metrics.json",
    )
    assert metrics["model"] == "fused"
    assert set(metrics["comparison"]) == {"fused", "ehr"}
    assert len(metrics["test_data_md5"]) == 32
    auroc = metrics["metrics"]["auroc"]
    assert 0.0 <= auroc["low"] <= auroc["value"] <= auroc["high"] <= 1.0
    assert set(metrics["subgroups"]) == {"sex", "age_band", "region", "facility_id"}
    predictions = pl.read_parquet(workdir / "models" / "eval" / "predictions.parquet")
    test = pl.read_parquet(workdir / "processed" / "dataset.parquet").filter(pl.col("split") == "test")
    assert predictions.height == test.height
    assert {"probability_fused", "probability_ehr"} <= set(predictions.columns)
    for png in ("roc.png", "pr.png", "reliability.png", "confusion.png"):
        assert (workdir / "models" / "eval" / "fused" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

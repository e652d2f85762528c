"""Evidence pieces for other model shapes: the fraud model's curves (train_summary.json) and predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipelines.audit.evidence import evaluation_fingerprint, load_baseline, model_kind, training_curves
from pipelines.audit.lineage import DataCheck
from pipelines.tracking.audit_queries import get_run_record
from pipelines.tracking.runs import stage_run

from .helpers import Registered


def test_fraud_curves_come_from_the_train_summary_history(registered: Registered) -> None:
    history = [{"epoch": e, "loss": 1.0 / e, "val_ap": 0.5 + 0.01 * e} for e in range(1, 5)]
    with stage_run(
        "train@fraud",
        tracking_uri=registered.tracking_uri,
        experiment="shipa",
        params={"epochs": 4},
        tags={},
        pipeline_run_id="fraud-pipeline",
    ) as run:
        run.log_dict({"device": "cpu", "model": {"best_epoch": 4, "history": history}}, "train_summary.json")
    record = get_run_record(run.run_id, tracking_uri=registered.tracking_uri)
    assert record is not None and model_kind("shipa-fraud", None) == "fraud"
    curves = training_curves("fraud", [record], [], registered.root, tracking_uri=registered.tracking_uri)
    assert curves.source == f"train_summary.json of MLflow run {run.run_id} (train@fraud)"
    assert curves.series == {
        "model": {"loss": [(e, 1.0 / e) for e in range(1, 5)], "val_ap": [(e, 0.5 + 0.01 * e) for e in range(1, 5)]}
    }


def test_fraud_predictions_are_checked_against_the_evaluation(tmp_path: Path) -> None:
    ids = [f"claim{i}" for i in range(50)]
    audit_labels = [int(i % 10 == 0) for i in range(50)]
    truth = [int(i % 5 == 0) for i in range(50)]
    scores = np.linspace(0, 1, 50)
    folder = tmp_path / "models" / "fraud" / "eval"
    folder.mkdir(parents=True)
    pl.DataFrame({"claim_id": ids, "label": audit_labels, "is_fraud": truth, "score_model": scores}).write_parquet(
        folder / "predictions.parquet"
    )
    evaluation = {"model": "model", "test_data_md5": evaluation_fingerprint(ids, audit_labels)}
    check = DataCheck("models/fraud/eval", "x.dir", "x.dir", "evaluate@fraud", "match")
    baseline = load_baseline("fraud", evaluation, [check], tmp_path)
    assert baseline.problems == ()
    assert len(baseline.verified) == 2
    assert baseline.labels is not None and baseline.labels.tolist() == truth  # the truth the evaluation scored
    assert baseline.scores is not None and np.allclose(baseline.scores, scores)
    stale = load_baseline("fraud", {**evaluation, "test_data_md5": "0" * 32}, [], tmp_path)
    assert any("differs from the evaluation's" in p for p in stale.problems)
    assert any("records no hash of models/fraud/eval" in p for p in stale.problems)
    assert load_baseline("diagnosis", evaluation, [], tmp_path).scores is None

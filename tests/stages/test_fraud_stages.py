"""The fraud features, train and evaluate stages and the worklist command on the tiny cohort."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.config import EvaluateParams, FraudFeaturesParams, FraudTrainParams
from pipelines.stages.evaluate import fraud as evaluate_fr
from pipelines.stages.features import fraud as features_fr
from pipelines.stages.train import fraud as train_fr


@pytest.fixture(scope="module")
def fraud_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("fraud")
    interim = tiny_cohort / "data" / "interim"
    features_fr.run(FraudFeaturesParams(), interim, work / "processed" / "fraud")
    train_fr.run(FraudTrainParams(epochs=3), work / "processed" / "fraud", work / "models" / "fraud" / "train")
    evaluate_fr.run(
        EvaluateParams(n_boot=50, fraud_k=30),
        work / "processed" / "fraud",
        work / "models" / "fraud" / "train",
        work / "models" / "fraud" / "eval",
        work / "models" / "fraud" / "metrics.json",
        raw=tiny_cohort / "data" / "raw",
        tables=interim / "tables",
    )
    return work


def test_features_cover_every_claim_with_labels_and_a_temporal_split(fraud_run: Path, tiny_cohort: Path) -> None:
    df = pl.read_parquet(fraud_run / "processed" / "fraud" / "dataset.parquet")
    claims = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "claims.parquet")
    assert sorted(df["claim_id"]) == sorted(claims["claim_id"])
    findings = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "audit_findings.parquet")
    assert set(df.filter(pl.col("label") == 1)["claim_id"]) == set(findings["claim_id"])
    # Temporal: every test claim is later than every training claim.
    last_train = df.filter(pl.col("split") == "train")["created"].max()
    assert df.filter(pl.col("split") == "test")["created"].min() > last_train


def test_evaluation_compares_model_with_both_baselines(fraud_run: Path) -> None:
    metrics = json.loads((fraud_run / "models" / "fraud" / "metrics.json").read_text())
    assert metrics["truth"] == "injected"
    assert set(metrics["comparison"]) == {"model", "gbm", "rules"}
    assert set(metrics["beats_baselines"]) == {"gbm", "rules"}
    assert metrics["k"] == 30
    assert metrics["recall_at_k_by_pattern"], "recall is reported per injected pattern"
    assert metrics["unlabelled_recall_at_k"]["n"] > 0
    auprc = metrics["metrics"]["auprc"]
    assert auprc["low"] <= auprc["value"] <= auprc["high"]


def test_worklist_has_k_sorted_pseudonymous_rows(fraud_run: Path) -> None:
    df = pl.read_parquet(fraud_run / "processed" / "fraud" / "dataset.parquet")
    busiest = df.group_by("asof").len().sort(["len", "asof"], descending=[True, False]).row(0, named=True)
    k = min(3, busiest["len"])
    out = fraud_run / "worklists"
    result = CliRunner().invoke(
        app,
        ["fraud", "worklist", "--date", str(busiest["asof"]), "--k", str(k),
         "--processed", str(fraud_run / "processed"), "--models", str(fraud_run / "models"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    wl = pl.read_parquet(out / f"worklist-{busiest['asof']}.parquet")
    assert wl.height == k
    assert wl["score"].to_list() == sorted(wl["score"].to_list(), reverse=True)
    for col in ("claim_id", "provider_id", "patient_id"):
        assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in wl[col])
    assert (out / f"worklist-{busiest['asof']}.csv").exists()


def test_worklist_for_a_day_without_claims_is_a_clear_error(fraud_run: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["fraud", "worklist", "--date", "1999-01-01", "--processed", str(fraud_run / "processed"),
         "--models", str(fraud_run / "models")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no claim was created on 1999-01-01" in result.output

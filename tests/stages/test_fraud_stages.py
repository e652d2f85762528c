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


def test_evaluation_reports_the_final_list_calibration_by_truth_and_rules(fraud_run: Path) -> None:
    metrics = json.loads((fraud_run / "models" / "fraud" / "metrics.json").read_text())
    final = metrics["final_list"]
    assert final["ranking"] == "rule hits first, then the model's probability"
    assert final["k"] == 30 and final["n"] == metrics["n"]
    for key in ("auprc", "precision_at_30", "recall_at_30", "money_at_30"):
        est = final["metrics"][key]
        assert est["low"] <= est["value"] <= est["high"], key
    assert "ece" not in final["metrics"]
    assert 0 <= final["rule_hits_positive"] <= final["rule_hits"]
    calibration = metrics["calibration_by_truth"]
    assert set(calibration) == {"findings", "truth"}
    for curve in calibration.values():
        assert sum(b["count"] for b in curve["bins"]) == metrics["n"]
        assert 0 <= curve["ece"] <= 1 and curve["ece_ci"]["value"] == pytest.approx(curve["ece"])
    # Against the truth the ECE is the one the promotion gate reads.
    assert calibration["truth"]["ece"] == pytest.approx(metrics["metrics"]["ece"]["value"])
    assert calibration["truth"]["n_positive"] >= calibration["findings"]["n_positive"]
    assert set(metrics["rules"]) == {"truth", "findings"}
    assert set(metrics["rules"]["truth"]) == {
        "SERVICE_AFTER_DEATH",
        "PACKAGE_UNBUNDLED",
        "EXACT_DUPLICATE",
        "ENCOUNTER_MISMATCH",
    }
    eval_dir = fraud_run / "models" / "fraud" / "eval"
    for name in ("findings", "truth"):
        assert (eval_dir / "model" / f"reliability_{name}.png").stat().st_size > 0
        points = json.loads((eval_dir / "model" / f"calibration_{name}.json").read_text())
        assert sum(p["count"] for p in points) == metrics["n"]
    predictions = pl.read_parquet(eval_dir / "predictions.parquet")
    assert {"rule_hits", "score_final"} <= set(predictions.columns)
    assert (predictions["rule_hits"] != "").sum() == final["rule_hits"]


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
    ruled = wl.filter(pl.col("rule_hits") != "")
    model = wl.filter(pl.col("rule_hits") == "")
    assert model.height <= k and (model["probability"] >= 0.1).all()  # the default cut-off: the moderate band
    assert wl["rule_hits"].to_list() == [*ruled["rule_hits"], *[""] * model.height]  # rule hits first
    assert model["probability"].to_list() == sorted(model["probability"].to_list(), reverse=True)
    for col in ("claim_id", "provider_id", "patient_id"):
        assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in wl[col])
    assert (out / f"worklist-{busiest['asof']}.csv").exists()
    summary = pl.read_parquet(out / f"worklist-{busiest['asof']}-providers.parquet")
    assert summary["cases"].sum() == wl.height


def test_worklist_stage_with_cutoff_bands_and_an_empty_day(fraud_run: Path) -> None:
    from pipelines.config import RiskBandsParams
    from pipelines.fraud.rules import any_hit
    from pipelines.stages import worklist as stage

    processed, model_dir = fraud_run / "processed" / "fraud", fraud_run / "models" / "fraud" / "train" / "model"
    df = pl.read_parquet(processed / "dataset.parquet")
    df = df.with_columns(any_hit(df).alias("_hit"))
    days = df.group_by("asof").agg(pl.len().alias("n"), pl.col("_hit").sum().alias("hits")).sort("asof")
    busiest = days.sort(["n", "asof"], descending=[True, False]).row(0, named=True)
    out = fraud_run / "worklists-stage"
    k = 2
    # No cut-off: every rule hit of the day, then exactly k more.
    result = stage.run(busiest["asof"], k, processed, model_dir, out, cutoff=0.0)
    assert result["rule_hits"] == busiest["hits"]
    assert result["model_cases"] == min(k, busiest["n"] - busiest["hits"])
    wl = pl.read_parquet(result["parquet"])
    assert wl.height == result["rows"] == busiest["hits"] + result["model_cases"]
    # Bands of the band column as given: with moderate 0.000001 and high 0.000002 nearly every case is high.
    bands = RiskBandsParams(moderate=1e-6, high=2e-6)
    banded = pl.read_parquet(
        stage.run(busiest["asof"], k, processed, model_dir, out, cutoff=0.0, bands=bands)["parquet"]
    )
    assert banded["band"].to_list() == [
        "high" if p >= 2e-6 else "moderate" if p >= 1e-6 else "low" for p in banded["probability"]
    ]
    # A day without any rule hit, with a cut-off no probability reaches: an empty list and summary, headers only.
    quiet = days.filter(pl.col("hits") == 0)["asof"][0]
    empty = stage.run(quiet, k, processed, model_dir, out, cutoff=1.0)
    assert empty["rows"] == 0 and empty["providers"] == 0
    assert pl.read_csv(empty["csv"]).height == 0
    assert pl.read_csv(empty["providers_csv"]).columns[:3] == ["date", "provider_id", "cases"]
    from pipelines.errors import InputError

    with pytest.raises(InputError, match=r"--cutoff 1.5: must be within \[0, 1\]"):
        stage.run(quiet, k, processed, model_dir, out, cutoff=1.5)


def test_worklist_for_a_day_without_claims_is_a_clear_error(fraud_run: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["fraud", "worklist", "--date", "1999-01-01", "--processed", str(fraud_run / "processed"),
         "--models", str(fraud_run / "models")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "no claim was created on 1999-01-01" in result.output

"""The final list's ranking and metrics, and calibration reported against each truth (hand-computed values), plus
the acceptance numbers on the default cohort's test months when its data are here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.fraud.evaluate import calibration_by_truth, evaluate_final_list, final_rank_score

REPO = Path(__file__).resolve().parents[2]


def test_rule_hits_rank_first_then_probability() -> None:
    p = np.array([0.9, 0.01, 0.5, 0.3])
    hit = np.array([False, True, False, True])
    s = final_rank_score(p, hit)
    assert list(np.argsort(-s)) == [3, 1, 0, 2]
    assert s.min() >= 0 and s.max() <= 1
    with pytest.raises(ValueError, match="one value per claim"):
        final_rank_score(p, hit[:2])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        final_rank_score([1.5], [False])


def test_final_list_metrics_by_hand() -> None:
    # Ranked: rule hits 1 (fraud), 3 (fraud); then 0 (0.9, clean), 2 (0.5, fraud), 4 (0.2, clean), 5 (0.1, clean).
    y = [0, 1, 1, 1, 0, 0]
    p = [0.9, 0.01, 0.5, 0.3, 0.2, 0.1]
    hit = [False, True, False, True, False, False]
    rep = evaluate_final_list(y, p, hit, [10, 20, 30, 40, 50, 60], ["", "a", "b", "a", "", ""],
                              [False, True, False, False, False, False], k=3, n_boot=0)  # fmt: skip
    m = rep["metrics"]
    # Average precision: hits at ranks 1, 2 and 4: (1/1 + 2/2 + 3/4) / 3.
    assert m["auprc"]["value"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert m["precision_at_3"]["value"] == pytest.approx(2 / 3)
    assert m["recall_at_3"]["value"] == pytest.approx(2 / 3)
    assert "ece" not in m and "brier" not in m  # the rank score is not a probability
    assert rep["rule_hits"] == 2 and rep["rule_hits_positive"] == 2
    assert rep["ranking"] == "rule hits first, then the model's probability"
    # The model alone ranks the clean 0.9 first.
    alone = evaluate_final_list(y, p, [False] * 6, [1] * 6, [""] * 6, [False] * 6, k=3, n_boot=0)
    assert alone["metrics"]["auprc"]["value"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 6) / 3)


def test_calibration_against_each_truth_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.05, 0.05, 0.25, 0.25, 0.25, 0.25])
    findings = np.array([0, 0, 0, 0, 1, 0, 0, 0])  # bin 0: 0 observed, bin 2: 0.25 observed
    truth = np.array([0, 0, 0, 1, 1, 1, 1, 0])  # bin 0: 0.25 observed, bin 2: 0.75 observed
    rep = calibration_by_truth(p, {"findings": findings, "truth": truth}, n_bins=10, n_boot=50, seed=1)
    assert rep["findings"]["ece"] == pytest.approx(0.5 * 0.05 + 0.5 * 0.0)
    assert rep["truth"]["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.5)
    assert [(b["count"], b["observed"]) for b in rep["truth"]["bins"]] == [(4, 0.25), (4, 0.75)]
    assert rep["truth"]["bins"][1]["mean_predicted"] == pytest.approx(0.25)
    assert rep["truth"]["n_positive"] == 4 and rep["findings"]["n_positive"] == 1
    ci = rep["truth"]["ece_ci"]
    assert ci["value"] == pytest.approx(rep["truth"]["ece"]) and ci["low"] <= ci["value"] <= ci["high"]


def test_final_list_meets_the_acceptance_targets_on_the_default_cohort() -> None:
    """Acceptance: on the final ranked list of the test months, PR-AUC >= 0.944 and precision@150 >= 0.877."""
    dataset = REPO / "data" / "processed" / "fraud" / "dataset.parquet"
    model_dir = REPO / "models" / "fraud" / "train" / "model"
    raw = REPO / "data" / "raw"
    if not (dataset.exists() and model_dir.exists() and (raw / "manifest" / "fraud_truth.csv").exists()):
        pytest.skip("the default cohort's features, model and truth are not here (run `make run`)")
    from pipelines.config import DEMO_PSEUDONYM_KEY
    from pipelines.fhir.pseudonym import Pseudonymizer
    from pipelines.fraud.rules import any_hit
    from pipelines.fraud.truth import load_truth
    from pipelines.modeling.fraud_model import load_fraud_model, score

    truth = load_truth(raw, Pseudonymizer(DEMO_PSEUDONYM_KEY))
    test = (
        pl.read_parquet(dataset)
        .filter(pl.col("split") == "test")
        .join(truth, on="claim_id", how="left", maintain_order="left")
        .with_columns(pl.col("pattern").is_not_null().cast(pl.Int8).alias("y"), pl.col("labelled").fill_null(False))
    )
    p = score(load_fraud_model(model_dir), test)
    rep = evaluate_final_list(
        test["y"].to_numpy(), p, any_hit(test).to_numpy(), test["total"].to_numpy(), test["pattern"].to_list(),
        test["labelled"].to_numpy(), k=150, n_boot=0,
    )  # fmt: skip
    assert rep["metrics"]["auprc"]["value"] >= 0.944
    assert rep["metrics"]["precision_at_150"]["value"] >= 0.877
    assert rep["rule_hits"] == rep["rule_hits_positive"]  # every rule hit of the test months is fraud

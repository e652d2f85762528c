"""Metrics against scikit-learn on fixed inputs (with ties), hand-computed ranking metrics, thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from pipelines.evaluation import metrics, weighted
from pipelines.evaluation.curves import precision_recall_curve, roc_curve
from pipelines.evaluation.errors import UndefinedMetricError


def _fixed_sample(seed: int, n: int, decimals: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities where rounding to ``decimals`` makes many tied scores."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0.0, 1.0)
    return y, np.round(p, decimals)


CASES = [(0, 50, 1), (1, 300, 2), (2, 1000, 6), (3, 17, 0)]


@pytest.mark.parametrize(("seed", "n", "decimals"), CASES)
def test_threshold_free_metrics_match_sklearn(seed: int, n: int, decimals: int) -> None:
    y, p = _fixed_sample(seed, n, decimals)
    assert metrics.auroc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-9)
    assert metrics.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-9)
    assert metrics.brier_score(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-9)


@pytest.mark.parametrize(("seed", "n", "decimals"), CASES)
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_threshold_metrics_match_sklearn(seed: int, n: int, decimals: int, threshold: float) -> None:
    y, p = _fixed_sample(seed, n, decimals)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert metrics.confusion_at(y, p, threshold).as_dict() == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert metrics.sensitivity(y, p, threshold) == pytest.approx(skm.recall_score(y, pred), abs=1e-9)
    assert metrics.specificity(y, p, threshold) == pytest.approx(skm.recall_score(1 - y, 1 - pred), abs=1e-9)
    if tp + fp:
        assert metrics.ppv(y, p, threshold) == pytest.approx(skm.precision_score(y, pred), abs=1e-9)
    if tn + fn:
        assert metrics.npv(y, p, threshold) == pytest.approx(skm.precision_score(1 - y, 1 - pred), abs=1e-9)


def test_all_scores_tied() -> None:
    y = np.array([0, 1, 1, 0, 1])
    p = np.full(5, 0.4)
    assert metrics.auroc(y, p) == pytest.approx(0.5)
    assert metrics.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert metrics.average_precision(y, p) == pytest.approx(0.6)


def test_integer_weights_equal_the_repeated_sample() -> None:
    """A weight row is a bootstrap resample: it must give what sklearn gives on the repeated samples."""
    y, p = _fixed_sample(5, 200, 1)
    rng = np.random.default_rng(9)
    weights = rng.integers(0, 4, size=(3, y.shape[0])).astype(np.float64)
    auc = weighted.auroc(y, p, weights)
    ap = weighted.average_precision(y, p, weights)
    brier = weighted.brier(y, p, weights)
    sens = weighted.sensitivity(y, p, weights, 0.5)
    for row, w in enumerate(weights):
        idx = np.repeat(np.arange(y.shape[0]), w.astype(int))
        assert auc[row] == pytest.approx(skm.roc_auc_score(y[idx], p[idx]), abs=1e-9)
        assert ap[row] == pytest.approx(skm.average_precision_score(y[idx], p[idx]), abs=1e-9)
        assert brier[row] == pytest.approx(skm.brier_score_loss(y[idx], p[idx]), abs=1e-9)
        assert sens[row] == pytest.approx(skm.recall_score(y[idx], p[idx] >= 0.5), abs=1e-9)


def test_curves_match_sklearn() -> None:
    y, p = _fixed_sample(1, 300, 2)
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    roc = roc_curve(y, p)
    np.testing.assert_allclose(roc.x, fpr, atol=1e-12)
    np.testing.assert_allclose(roc.y, tpr, atol=1e-12)
    np.testing.assert_array_equal(roc.thresholds, thr)
    precision, recall, thr = skm.precision_recall_curve(y, p)
    pr = precision_recall_curve(y, p)
    np.testing.assert_allclose(pr.y, precision, atol=1e-12)
    np.testing.assert_allclose(pr.x, recall, atol=1e-12)
    np.testing.assert_array_equal(pr.thresholds, thr)


# Hand-computed review queue: scores in order, so the top 3 are claims 0, 1, 2 (fraud, clean, fraud).
QUEUE_Y = [1, 0, 1, 1, 0, 1]
QUEUE_S = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
QUEUE_KZT = [100_000.0, 50_000.0, 30_000.0, 20_000.0, 10_000.0, 5_000.0]


def test_ranking_metrics_hand_computed() -> None:
    assert metrics.precision_at_k(QUEUE_Y, QUEUE_S, 3) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(QUEUE_Y, QUEUE_S, 3) == pytest.approx(2 / 4)
    assert metrics.money_at_k(QUEUE_Y, QUEUE_S, QUEUE_KZT, 3) == pytest.approx(130_000.0)
    assert metrics.money_at_k(QUEUE_Y, QUEUE_S, QUEUE_KZT, 4) == pytest.approx(150_000.0)
    # Input order does not matter.
    order = [5, 3, 1, 0, 4, 2]
    shuffled = [np.asarray(a)[order] for a in (QUEUE_Y, QUEUE_S, QUEUE_KZT)]
    assert metrics.money_at_k(*shuffled, 3) == pytest.approx(130_000.0)


def test_ranking_metrics_share_ties_at_the_cut() -> None:
    # Claim 0 is certain; one place is left for three tied claims, of which one is fraud (60,000 KZT).
    y = [1, 1, 0, 0, 1]
    s = [0.9, 0.7, 0.7, 0.7, 0.1]
    kzt = [100_000.0, 60_000.0, 5_000.0, 5_000.0, 7_000.0]
    assert metrics.precision_at_k(y, s, 2) == pytest.approx((1 + 1 / 3) / 2)
    assert metrics.recall_at_k(y, s, 2) == pytest.approx((1 + 1 / 3) / 3)
    assert metrics.money_at_k(y, s, kzt, 2) == pytest.approx(100_000.0 + 60_000.0 / 3)


def test_k_beyond_the_sample_reviews_everything() -> None:
    assert metrics.precision_at_k(QUEUE_Y, QUEUE_S, 100) == pytest.approx(4 / 6)
    assert metrics.recall_at_k(QUEUE_Y, QUEUE_S, 100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        metrics.precision_at_k(QUEUE_Y, QUEUE_S, 0)


def test_undefined_metrics_raise() -> None:
    y = [0, 0, 0]
    p = [0.1, 0.5, 0.9]
    with pytest.raises(UndefinedMetricError):
        metrics.auroc(y, p)
    with pytest.raises(UndefinedMetricError):
        metrics.average_precision(y, p)
    with pytest.raises(UndefinedMetricError):
        metrics.sensitivity(y, p, 0.5)
    with pytest.raises(UndefinedMetricError):
        metrics.recall_at_k(y, p, 2)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 2, 1], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([0, 1, 1], [0.1, 0.2], "3 values"),
        ([0, 1, 1], [0.1, float("nan"), 0.3], "finite"),
        ([], [], "non-empty"),
    ],
)
def test_bad_inputs_are_refused(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.auroc(y, p)


def test_brier_needs_probabilities() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.brier_score([0, 1], [0.5, 1.5])


def test_youden_threshold_hand_computed() -> None:
    y = [0, 0, 1, 0, 1, 1]
    s = [0.1, 0.3, 0.4, 0.6, 0.7, 0.9]
    # At 0.4: tpr 1, fpr 1/3 -> J 2/3, the best; at 0.7: tpr 2/3, fpr 0 -> J 2/3 as well; the higher one wins.
    assert metrics.choose_threshold(y, s, "youden") == pytest.approx(0.7)


def test_target_sensitivity_is_the_highest_threshold_reaching_the_target() -> None:
    y, p = _fixed_sample(2, 1000, 3)
    for target in (0.8, 0.9, 0.95):
        t = metrics.choose_threshold(y, p, "target_sensitivity", target)
        assert metrics.sensitivity(y, p, t) >= target
        higher = np.unique(p[p > t])
        if higher.size:
            assert metrics.sensitivity(y, p, float(higher[0])) < target


def test_threshold_rule_arguments_are_checked() -> None:
    y, p = _fixed_sample(0, 50, 2)
    with pytest.raises(ValueError, match="needs a value"):
        metrics.choose_threshold(y, p, "target_sensitivity")
    with pytest.raises(ValueError, match="unknown threshold rule"):
        metrics.choose_threshold(y, p, "f1")  # type: ignore[arg-type]


def test_ranking_kernels_on_weights_equal_the_repeated_sample() -> None:
    """Resample rows (including ones whose top of the ranking was not drawn) match the plain functions."""
    rng = np.random.default_rng(11)
    n = 1000
    y = (rng.random(n) < 0.1).astype(np.int64)
    s = np.round(rng.random(n), 2)  # many ties, also across the cut
    kzt = rng.uniform(1_000, 50_000, n)
    weights = rng.integers(0, 3, size=(4, n)).astype(np.float64)
    weights[1, s > 0.2] = 0.0  # the top 80 % never drawn: the kernel must read deep into the ranking
    for k in (1, 7, 50, 900, 5000):
        prec = weighted.precision_at_k(y, s, weights, k)
        rec = weighted.recall_at_k(y, s, weights, k)
        money = weighted.money_at_k(y, s, weights, k, kzt)
        for row, w in enumerate(weights):
            idx = np.repeat(np.arange(n), w.astype(int))
            assert prec[row] == pytest.approx(metrics.precision_at_k(y[idx], s[idx], k), rel=1e-9)
            assert rec[row] == pytest.approx(metrics.recall_at_k(y[idx], s[idx], k), rel=1e-9)
            assert money[row] == pytest.approx(metrics.money_at_k(y[idx], s[idx], kzt[idx], k), rel=1e-9)


def test_ranking_metrics_match_a_sort_when_scores_are_distinct() -> None:
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 500)
    s = rng.random(500)
    kzt = rng.uniform(0, 100, 500)
    top = np.argsort(-s)[:40]
    assert metrics.precision_at_k(y, s, 40) == pytest.approx(y[top].mean(), abs=1e-12)
    assert metrics.recall_at_k(y, s, 40) == pytest.approx(y[top].sum() / y.sum(), abs=1e-12)
    assert metrics.money_at_k(y, s, kzt, 40) == pytest.approx((kzt * y)[top].sum(), rel=1e-12)

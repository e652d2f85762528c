"""Metric kernels over a matrix of sample weights: one row per resample, one column per sample.

A bootstrap resample is the observed sample with each sample counted ``w`` times, so every metric here takes
the labels and scores once and a ``(B, n)`` weight matrix, and returns ``B`` values at once; the observed
sample is the single row of ones. A value is NaN where the metric is undefined in that row (no positives).

Kernels take checked arrays (see :mod:`pipelines.evaluation.arrays`); :mod:`pipelines.evaluation.metrics`
wraps them as plain functions that return floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from pipelines.evaluation.arrays import FloatArray, IntArray

BatchMetric = Callable[[IntArray, FloatArray, FloatArray], FloatArray]
"""``metric(y_true (n,), scores (n,), weights (B, n)) -> values (B,)``, NaN where undefined."""


def _descending(scores: FloatArray) -> tuple[IntArray, IntArray]:
    """Sample order by score, highest first, and the position of the last sample of each distinct score."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    ends = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.shape[0] - 1]
    return order, ends


@dataclass(frozen=True)
class _Ranked:
    """Cumulative weights down the ranking, one column per distinct score (highest first).

    Column ``u`` counts the samples with a score at least the u-th highest distinct score.
    """

    tp: FloatArray  # (B, L) weight of positives
    seen: FloatArray  # (B, L) weight of all samples
    money: FloatArray | None  # (B, L) weighted amounts of positives, when amounts are given


def _ranked(
    y_true: IntArray, weights: FloatArray, order: IntArray, ends: IntArray, amounts: FloatArray | None = None
) -> _Ranked:
    # np.take is several times faster than fancy indexing for a column permutation.
    w = np.take(weights, order, axis=1)
    wy = w * y_true[order]
    seen = np.cumsum(w, axis=1)
    tp = np.cumsum(wy, axis=1)
    money = None if amounts is None else np.cumsum(wy * amounts[order], axis=1)
    if ends.shape[0] < order.shape[0]:  # tied scores: keep the last column of each distinct score
        seen, tp = np.take(seen, ends, axis=1), np.take(tp, ends, axis=1)
        money = None if money is None else np.take(money, ends, axis=1)
    return _Ranked(tp, seen, money)


def _per_level(cumulative: FloatArray) -> FloatArray:
    return np.diff(cumulative, axis=1, prepend=0.0)


def _safe_divide(num: FloatArray, den: FloatArray) -> FloatArray:
    """``num / den`` with NaN where ``den`` is 0."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def auroc(y_true: IntArray, scores: FloatArray, weights: FloatArray) -> FloatArray:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting one half.

    This is the Mann-Whitney statistic on ranks with tied scores averaged, equal to scikit-learn's
    ``roc_auc_score`` (trapezoids between distinct thresholds).
    """
    r = _ranked(y_true, weights, *_descending(scores))
    fp = r.seen - r.tp
    pos, neg = _per_level(r.tp), _per_level(fp)
    n_pos, n_neg = r.tp[:, -1], fp[:, -1]
    # Each positive beats the negatives ranked below its score and ties with half of those at its score.
    u = (pos * (n_neg[:, None] - fp + 0.5 * neg)).sum(axis=1)
    return _safe_divide(u, n_pos * n_neg)


def average_precision(y_true: IntArray, scores: FloatArray, weights: FloatArray) -> FloatArray:
    """Average precision: sum over distinct thresholds of (recall gain) x precision, as in scikit-learn."""
    r = _ranked(y_true, weights, *_descending(scores))
    # Where nothing is seen yet tp is 0 too, so dividing by a tiny number instead of 0 gives precision 0.
    precision = r.tp / np.maximum(r.seen, np.finfo(np.float64).tiny)
    return _safe_divide((_per_level(r.tp) * precision).sum(axis=1), r.tp[:, -1])


def brier(y_true: IntArray, probs: FloatArray, weights: FloatArray) -> FloatArray:
    """Mean squared difference between the predicted probability and the outcome."""
    return _safe_divide(weights @ (probs - y_true) ** 2, weights.sum(axis=1))


def confusion(
    y_true: IntArray, scores: FloatArray, weights: FloatArray, threshold: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Weighted (tn, fp, fn, tp) per row; a sample is predicted positive when ``score >= threshold``."""
    pred = scores >= threshold
    pos = y_true == 1
    tp = weights @ (pos & pred).astype(np.float64)
    fp = weights @ (~pos & pred).astype(np.float64)
    fn = weights @ (pos & ~pred).astype(np.float64)
    tn = weights @ (~pos & ~pred).astype(np.float64)
    return tn, fp, fn, tp


def sensitivity(y_true: IntArray, scores: FloatArray, weights: FloatArray, threshold: float) -> FloatArray:
    """True-positive rate tp / (tp + fn) at ``threshold``."""
    _, _, fn, tp = confusion(y_true, scores, weights, threshold)
    return _safe_divide(tp, tp + fn)


def specificity(y_true: IntArray, scores: FloatArray, weights: FloatArray, threshold: float) -> FloatArray:
    """True-negative rate tn / (tn + fp) at ``threshold``."""
    tn, fp, _, _ = confusion(y_true, scores, weights, threshold)
    return _safe_divide(tn, tn + fp)


def ppv(y_true: IntArray, scores: FloatArray, weights: FloatArray, threshold: float) -> FloatArray:
    """Positive predictive value tp / (tp + fp) at ``threshold``."""
    _, fp, _, tp = confusion(y_true, scores, weights, threshold)
    return _safe_divide(tp, tp + fp)


def npv(y_true: IntArray, scores: FloatArray, weights: FloatArray, threshold: float) -> FloatArray:
    """Negative predictive value tn / (tn + fn) at ``threshold``."""
    tn, _, fn, _ = confusion(y_true, scores, weights, threshold)
    return _safe_divide(tn, tn + fn)


def _check_k(k: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


@dataclass(frozen=True)
class _TopK:
    """Per row: weight of positives and their amounts among the top ``k``, and how many were reviewed."""

    tp: FloatArray
    money: FloatArray | None
    reviewed: FloatArray


def _top_k(
    y_true: IntArray, scores: FloatArray, weights: FloatArray, k: int, amounts: FloatArray | None = None
) -> _TopK:
    """The top ``k`` of every row, reading only as far down the ranking as the rows need.

    Samples tied at the k-th score share the places left equally: the expected value under random
    tie-breaking, so the result does not depend on the order of the input.
    """
    _check_k(k)
    order, ends = _descending(scores)
    n = order.shape[0]
    m = min(n, 2 * k + 64)
    while True:
        levels = int(np.searchsorted(ends, m - 1)) + 1  # never cut a run of tied scores
        m = int(ends[levels - 1]) + 1
        r = _ranked(y_true, weights, order[:m], ends[:levels], amounts)
        if m == n or bool((r.seen[:, -1] >= k).all()):
            break
        m = min(n, 2 * m)
    rows = np.arange(weights.shape[0])
    # Level `cut` is the first whose cumulative weight reaches k: the ones above it are wholly in the top k.
    cut = np.minimum((r.seen < k).sum(axis=1), levels - 1)
    has_prev = cut > 0
    prev = np.maximum(cut - 1, 0)

    def before_cut(cum: FloatArray) -> FloatArray:
        return np.where(has_prev, cum[rows, prev], 0.0)

    seen_before = before_cut(r.seen)
    share = np.clip(_safe_divide(k - seen_before, r.seen[rows, cut] - seen_before), 0.0, 1.0)
    share = np.nan_to_num(share, nan=0.0)  # an empty level at the cut adds nothing

    def in_top_k(cum: FloatArray) -> FloatArray:
        start = before_cut(cum)
        total: FloatArray = start + share * (cum[rows, cut] - start)
        return total

    money = None if r.money is None else in_top_k(r.money)
    return _TopK(tp=in_top_k(r.tp), money=money, reviewed=np.minimum(weights.sum(axis=1), k))


def precision_at_k(y_true: IntArray, scores: FloatArray, weights: FloatArray, k: int) -> FloatArray:
    """Share of positives among the ``k`` highest scores (among all samples when fewer than ``k``)."""
    top = _top_k(y_true, scores, weights, k)
    return _safe_divide(top.tp, top.reviewed)


def recall_at_k(y_true: IntArray, scores: FloatArray, weights: FloatArray, k: int) -> FloatArray:
    """Share of all positives found among the ``k`` highest scores; NaN without positives."""
    top = _top_k(y_true, scores, weights, k)
    return _safe_divide(top.tp, weights @ y_true.astype(np.float64))


def money_at_k(y_true: IntArray, scores: FloatArray, weights: FloatArray, k: int, amounts: FloatArray) -> FloatArray:
    """Sum of ``amounts`` over the true positives among the ``k`` highest scores (money recovered by review).

    Raises:
        ValueError: ``amounts`` does not align with ``y_true`` (for example a money metric built for the whole
            sample applied to a subgroup).
    """
    if amounts.shape != y_true.shape:
        raise ValueError(f"amounts has {amounts.shape[0]} values but the sample has {y_true.shape[0]}")
    money = _top_k(y_true, scores, weights, k, amounts).money
    assert money is not None  # _top_k fills it when given amounts
    return money


def equal_width_bins(probs: FloatArray, n_bins: int) -> IntArray:
    """Bin index of each probability in ``n_bins`` equal-width bins over [0, 1]; 1.0 falls in the last bin."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    return np.minimum((probs * n_bins).astype(np.int64), n_bins - 1)


def bin_sums(values: FloatArray, bins: IntArray, weights: FloatArray, n_bins: int) -> FloatArray:
    """Weighted sum of ``values`` in each bin: ``(B, n_bins)``."""
    onehot = np.zeros((bins.shape[0], n_bins))
    onehot[np.arange(bins.shape[0]), bins] = values
    return weights @ onehot


def ece(y_true: IntArray, probs: FloatArray, weights: FloatArray, n_bins: int = 10) -> FloatArray:
    """Expected calibration error: sum over equal-width bins of (bin share) x |mean predicted - observed|."""
    bins = equal_width_bins(probs, n_bins)
    gap = np.abs(bin_sums(probs, bins, weights, n_bins) - bin_sums(y_true.astype(np.float64), bins, weights, n_bins))
    return _safe_divide(gap.sum(axis=1), weights.sum(axis=1))


def logit(probs: FloatArray, eps: float = 1e-7) -> FloatArray:
    """log(p / (1 - p)) with ``p`` clipped to [eps, 1 - eps] so that 0 and 1 stay finite."""
    p = np.clip(probs, eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def _newton_logistic(
    y_true: IntArray,
    x: FloatArray,
    weights: FloatArray,
    start: tuple[float, float],
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, FloatArray]:
    """Newton's method for ``logit P(y=1) = a + b x`` on every row of ``weights``; NaN where not converged."""
    x2 = x * x
    n_rows = weights.shape[0]
    a = np.full(n_rows, start[0])
    b = np.full(n_rows, start[1])
    n_pos = weights @ y_true.astype(np.float64)
    # With one class only the intercept runs off to infinity: skip those rows instead of iterating on them.
    active = (n_pos > 0) & (n_pos < weights.sum(axis=1))
    converged = np.zeros(n_rows, dtype=bool)
    for _ in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        w = weights if rows.size == n_rows else weights[rows]
        mu = expit(a[rows, None] + b[rows, None] * x)
        r = w * (y_true - mu)
        v = w * mu * (1.0 - mu)
        g0, g1 = r.sum(axis=1), r @ x
        h00, h01, h11 = v.sum(axis=1), v @ x, v @ x2
        det = h00 * h11 - h01 * h01
        with np.errstate(divide="ignore", invalid="ignore"):
            da = (h11 * g0 - h01 * g1) / det
            db = (h00 * g1 - h01 * g0) / det
        bad = ~np.isfinite(da) | ~np.isfinite(db)
        a[rows] += np.where(bad, 0.0, da)
        b[rows] += np.where(bad, 0.0, db)
        done = ~bad & (np.maximum(np.abs(da), np.abs(db)) < tol * (1.0 + np.abs(b[rows])))
        converged[rows[done]] = True
        active[rows[done | bad]] = False
    a[~converged] = np.nan
    b[~converged] = np.nan
    return a, b


def logistic_recalibration(
    y_true: IntArray, probs: FloatArray, weights: FloatArray, *, max_iter: int = 50, tol: float = 1e-10
) -> tuple[FloatArray, FloatArray]:
    """Intercept and slope of the logistic regression of the outcome on logit(p), per row, by Newton's method.

    A calibrated model has slope 1 and intercept 0; an overconfident one has slope below 1. Rows that do not
    converge (one class only, or a score that separates the classes) give NaN.

    Returns:
        ``(intercept, slope)``, each of shape ``(B,)``.
    """
    x = logit(probs)
    start = (0.0, 1.0)
    if weights.shape[0] > 1:
        # Resamples lie near the pooled fit: starting there saves Newton steps on every row.
        a0, b0 = _newton_logistic(y_true, x, weights.mean(axis=0, keepdims=True), start, max_iter, tol)
        if np.isfinite(a0[0]) and np.isfinite(b0[0]):
            start = (float(a0[0]), float(b0[0]))
    return _newton_logistic(y_true, x, weights, start, max_iter, tol)


class SharedRecalibration:
    """Calibration intercept and slope kernels that share one fit per weight matrix.

    The bootstrap asks both for the same resamples one after the other; the second reuses the first fit
    instead of running Newton's method again. Only the last fit is kept.
    """

    def __init__(self) -> None:
        self._last: tuple[IntArray, FloatArray, FloatArray, tuple[FloatArray, FloatArray]] | None = None

    def _fit(self, y_true: IntArray, probs: FloatArray, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
        last = self._last
        if last is not None and last[0] is y_true and last[1] is probs and last[2] is weights:
            return last[3]
        fit = logistic_recalibration(y_true, probs, weights)
        self._last = (y_true, probs, weights, fit)
        return fit

    def intercept(self, y_true: IntArray, probs: FloatArray, weights: FloatArray) -> FloatArray:
        """Intercept of :func:`logistic_recalibration` (0 when calibrated)."""
        return self._fit(y_true, probs, weights)[0]

    def slope(self, y_true: IntArray, probs: FloatArray, weights: FloatArray) -> FloatArray:
        """Slope of :func:`logistic_recalibration` (1 when calibrated, below 1 when overconfident)."""
        return self._fit(y_true, probs, weights)[1]

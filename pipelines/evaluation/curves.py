"""ROC and precision-recall curve points, one point per distinct score (as scikit-learn computes them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.evaluation.arrays import FloatArray, as_labels, as_scores
from pipelines.evaluation.errors import UndefinedMetricError


@dataclass(frozen=True)
class Curve:
    """Points of a curve: ``x``/``y`` and each point's threshold (predict positive if score >= it)."""

    x: FloatArray
    y: FloatArray
    thresholds: FloatArray


def _cumulative_counts(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per distinct score, highest first: cumulative true positives and false positives at ``score >= it``."""
    y = as_labels(y_true)
    s = as_scores(scores, y.shape[0])
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    ends = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.shape[0] - 1]
    tps = np.cumsum(y[order])[ends].astype(np.float64)
    fps = (ends + 1 - tps).astype(np.float64)
    return tps, fps, s_sorted[ends]


def roc_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> Curve:
    """ROC curve: false-positive rate (``x``) against true-positive rate (``y``), from (0, 0) to (1, 1).

    The first point has threshold ``inf`` (nothing predicted positive), as in scikit-learn >= 1.3.

    Raises:
        UndefinedMetricError: ``y_true`` holds one class only.
    """
    tps, fps, thresholds = _cumulative_counts(y_true, scores)
    if tps[-1] == 0 or fps[-1] == 0:
        raise UndefinedMetricError("the ROC curve needs both classes in y_true")
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return Curve(fpr, tpr, np.r_[np.inf, thresholds])


def precision_recall_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> Curve:
    """Precision-recall curve: recall (``x``) against precision (``y``), highest threshold last.

    As scikit-learn (>= 1.6): one point per distinct score, lowest threshold first, then a final point
    (recall 0, precision 1) without a threshold, so ``thresholds`` has one value fewer.

    Raises:
        UndefinedMetricError: ``y_true`` holds no positive.
    """
    tps, fps, thresholds = _cumulative_counts(y_true, scores)
    if tps[-1] == 0:
        raise UndefinedMetricError("the precision-recall curve needs at least one positive in y_true")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return Curve(np.r_[recall[::-1], 0.0], np.r_[precision[::-1], 1.0], thresholds[::-1])

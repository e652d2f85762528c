"""Binary and ranking metrics as plain functions returning floats; metric sets; threshold choice.

Each function checks its inputs and evaluates the kernel of :mod:`pipelines.evaluation.weighted` on the
observed sample. A sample is predicted positive when ``score >= threshold``. A metric with no value on the
data (for example AUROC with one class only) raises :class:`UndefinedMetricError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipelines.evaluation import weighted
from pipelines.evaluation.arrays import FloatArray, IntArray, as_labels, as_scores, ones_weights
from pipelines.evaluation.curves import roc_curve
from pipelines.evaluation.errors import UndefinedMetricError
from pipelines.evaluation.weighted import BatchMetric

ThresholdRule = Literal["youden", "target_sensitivity"]


def _point(
    name: str, kernel: Callable[[IntArray, FloatArray, FloatArray], FloatArray], y: IntArray, s: FloatArray
) -> float:
    value = float(kernel(y, s, ones_weights(y.shape[0]))[0])
    if np.isnan(value):
        raise UndefinedMetricError(f"{name} is undefined on this data (a class or a denominator is empty)")
    return value


def _checked(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    y = as_labels(y_true)
    return y, as_scores(scores, y.shape[0])


def auroc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, ties counting one half (equal to scikit-learn's ``roc_auc_score``)."""
    y, s = _checked(y_true, scores)
    return _point("AUROC", weighted.auroc, y, s)


def average_precision(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Average precision, the area under the PR curve (as scikit-learn's ``average_precision_score``)."""
    y, s = _checked(y_true, scores)
    return _point("average precision", weighted.average_precision, y, s)


def brier_score(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Mean squared error of predicted probabilities against outcomes (0 is perfect)."""
    y = as_labels(y_true)
    return _point("Brier score", weighted.brier, y, as_scores(probs, y.shape[0], name="probs", probability=True))


@dataclass(frozen=True)
class Confusion:
    """Counts of the confusion matrix at a threshold."""

    tn: int
    fp: int
    fn: int
    tp: int

    def as_dict(self) -> dict[str, int]:
        """The four counts under their names."""
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}


def confusion_at(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> Confusion:
    """Confusion matrix when samples with ``score >= threshold`` are predicted positive."""
    y, s = _checked(y_true, scores)
    counts = weighted.confusion(y, s, ones_weights(y.shape[0]), threshold)
    tn, fp, fn, tp = (round(float(c[0])) for c in counts)
    return Confusion(tn=tn, fp=fp, fn=fn, tp=tp)


def sensitivity(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> float:
    """True-positive rate (recall) at ``threshold``."""
    y, s = _checked(y_true, scores)
    return _point("sensitivity", functools.partial(weighted.sensitivity, threshold=threshold), y, s)


def specificity(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> float:
    """True-negative rate at ``threshold``."""
    y, s = _checked(y_true, scores)
    return _point("specificity", functools.partial(weighted.specificity, threshold=threshold), y, s)


def ppv(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> float:
    """Positive predictive value (precision) at ``threshold``."""
    y, s = _checked(y_true, scores)
    return _point("PPV", functools.partial(weighted.ppv, threshold=threshold), y, s)


def npv(y_true: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> float:
    """Negative predictive value at ``threshold``."""
    y, s = _checked(y_true, scores)
    return _point("NPV", functools.partial(weighted.npv, threshold=threshold), y, s)


def precision_at_k(y_true: npt.ArrayLike, scores: npt.ArrayLike, k: int) -> float:
    """Share of positives among the ``k`` highest scores; ties at the k-th score share the places left."""
    y, s = _checked(y_true, scores)
    return _point("precision@k", functools.partial(weighted.precision_at_k, k=k), y, s)


def recall_at_k(y_true: npt.ArrayLike, scores: npt.ArrayLike, k: int) -> float:
    """Share of all positives found among the ``k`` highest scores."""
    y, s = _checked(y_true, scores)
    return _point("recall@k", functools.partial(weighted.recall_at_k, k=k), y, s)


def money_at_k(y_true: npt.ArrayLike, scores: npt.ArrayLike, amounts: npt.ArrayLike, k: int) -> float:
    """Sum of ``amounts`` (e.g. claim value in KZT) over the true positives among the ``k`` highest scores."""
    y, s = _checked(y_true, scores)
    amt = as_scores(amounts, y.shape[0], name="amounts")
    return _point("money@k", functools.partial(weighted.money_at_k, k=k, amounts=amt), y, s)


def threshold_metrics(threshold: float) -> dict[str, BatchMetric]:
    """Kernels of the metrics read at a decision threshold: sensitivity, specificity, PPV, NPV."""
    return {
        "sensitivity": functools.partial(weighted.sensitivity, threshold=threshold),
        "specificity": functools.partial(weighted.specificity, threshold=threshold),
        "ppv": functools.partial(weighted.ppv, threshold=threshold),
        "npv": functools.partial(weighted.npv, threshold=threshold),
    }


def discrimination_metrics() -> dict[str, BatchMetric]:
    """Kernels of the threshold-free metrics: AUROC and AUPRC (average precision)."""
    return {"auroc": weighted.auroc, "auprc": weighted.average_precision}


def probability_metrics(n_bins: int = 10) -> dict[str, BatchMetric]:
    """Kernels of the metrics of probabilities: Brier score, ECE, calibration slope and intercept."""
    recalibration = weighted.SharedRecalibration()
    return {
        "brier": weighted.brier,
        "ece": functools.partial(weighted.ece, n_bins=n_bins),
        "calibration_slope": recalibration.slope,
        "calibration_intercept": recalibration.intercept,
    }


def ranking_metrics(k: int, amounts: npt.ArrayLike | None = None) -> dict[str, BatchMetric]:
    """Kernels of the review-queue metrics ``precision_at_<k>``, ``recall_at_<k>``, ``money_at_<k>``.

    Args:
        k: the number of cases reviewed.
        amounts: per-sample amounts aligned with the whole sample; without them there is no money metric. A
            money kernel refuses to run on a subset (a subgroup), because its amounts would no longer align.
    """
    metrics: dict[str, BatchMetric] = {
        f"precision_at_{k}": functools.partial(weighted.precision_at_k, k=k),
        f"recall_at_{k}": functools.partial(weighted.recall_at_k, k=k),
    }
    if amounts is not None:
        amt = np.asarray(amounts, dtype=np.float64)
        if amt.ndim != 1 or not np.isfinite(amt).all():
            raise ValueError("amounts must be a 1-D array of finite numbers")
        metrics[f"money_at_{k}"] = functools.partial(weighted.money_at_k, k=k, amounts=amt)
    return metrics


def choose_threshold(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, rule: ThresholdRule, value: float | None = None
) -> float:
    """Pick a decision threshold on validation data; samples with ``score >= threshold`` are positive.

    Args:
        y_true: validation labels.
        scores: validation scores.
        rule: ``"youden"`` maximises sensitivity + specificity - 1 (the highest threshold wins a tie);
            ``"target_sensitivity"`` takes the highest threshold whose sensitivity reaches ``value``, which
            gives the best specificity at that sensitivity.
        value: the target sensitivity in (0, 1], for ``"target_sensitivity"`` only.

    Raises:
        ValueError: unknown rule, or a missing or out-of-range ``value``.
        UndefinedMetricError: ``y_true`` holds one class only.
    """
    curve = roc_curve(y_true, scores)
    fpr, tpr, thresholds = curve.x[1:], curve.y[1:], curve.thresholds[1:]
    if rule == "youden":
        if value is not None:
            raise ValueError("the youden rule takes no value")
        youden = tpr - fpr
        # Equal J computed along different paths can differ in the last bit: compare with a tolerance.
        return float(thresholds[int(np.argmax(youden >= youden.max() - 1e-12))])
    if rule == "target_sensitivity":
        if value is None or not 0.0 < value <= 1.0:
            raise ValueError(f"target_sensitivity needs a value in (0, 1], got {value!r}")
        # A small tolerance so that a target such as 0.9 is met by 9 of 10 positives despite rounding.
        return float(thresholds[int(np.argmax(tpr >= value - 1e-12))])
    raise ValueError(f"unknown threshold rule {rule!r}; use 'youden' or 'target_sensitivity'")

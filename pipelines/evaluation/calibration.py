"""Calibration: temperature scaling, expected calibration error, slope/intercept, reliability bins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize_scalar
from scipy.special import expit

from pipelines.evaluation import weighted
from pipelines.evaluation.arrays import FloatArray, IntArray, as_labels, as_scores, ones_weights
from pipelines.evaluation.errors import UndefinedMetricError

# Temperatures searched, on a log scale: far wider than any sensible model needs.
_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


# Probabilities are clipped to [LOGIT_EPS, 1 - LOGIT_EPS] before temperature scaling, by the evaluate stage and
# by the registered pyfunc alike, so that serving calibrates exactly as the evaluation did.
LOGIT_EPS = 1e-6


def _labels_and_probs(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    y = as_labels(y_true)
    return y, as_scores(probs, y.shape[0], name="probs", probability=True)


def _binary_nll(y: IntArray, logits: FloatArray) -> float:
    # log(1 + e^z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, logits) - y * logits))


def fit_temperature(y_true: npt.ArrayLike, logits: npt.ArrayLike) -> float:
    """Temperature T > 0 minimising the negative log-likelihood of ``sigmoid(logits / T)`` on validation data.

    T > 1 softens an overconfident model, T < 1 sharpens an underconfident one; ranking (AUROC) is unchanged.

    Args:
        y_true: validation labels.
        logits: validation logits (log-odds), not probabilities.

    Raises:
        UndefinedMetricError: ``y_true`` holds one class only (the likelihood has no minimum).
    """
    y = as_labels(y_true)
    z = as_scores(logits, y.shape[0], name="logits")
    if y.min() == y.max():
        raise UndefinedMetricError("temperature scaling needs both classes in y_true")
    result = minimize_scalar(
        lambda log_t: _binary_nll(y, z * np.exp(-log_t)),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(np.exp(result.x))


def apply_temperature(logits: npt.ArrayLike, temperature: float) -> FloatArray:
    """Calibrated probabilities ``sigmoid(logits / temperature)``."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs: FloatArray = expit(np.asarray(logits, dtype=np.float64) / temperature)
    return probs


def expected_calibration_error(y_true: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of [0, 1].

    ECE = sum over bins of (share of samples in the bin) x |mean predicted probability - observed rate|.
    """
    y, p = _labels_and_probs(y_true, probs)
    return float(weighted.ece(y, p, ones_weights(y.shape[0]), n_bins)[0])


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration ``logit P(y=1) = intercept + slope * logit(p)``."""

    intercept: float
    slope: float


def calibration_fit(y_true: npt.ArrayLike, probs: npt.ArrayLike) -> CalibrationFit:
    """Calibration slope and intercept: logistic regression of the outcome on logit(p) (Newton's method).

    Calibrated: slope 1, intercept 0. Overconfident (too extreme): slope < 1. Probabilities of 0 and 1 are
    clipped to 1e-7 from the ends.

    Raises:
        UndefinedMetricError: one class only, or the scores separate the classes (no finite fit).
    """
    y, p = _labels_and_probs(y_true, probs)
    intercept, slope = weighted.logistic_recalibration(y, p, ones_weights(y.shape[0]))
    if not (np.isfinite(intercept[0]) and np.isfinite(slope[0])):
        raise UndefinedMetricError("calibration fit did not converge (one class only, or separated classes)")
    return CalibrationFit(intercept=float(intercept[0]), slope=float(slope[0]))


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width bin of a reliability diagram."""

    lower: float
    upper: float
    mean_predicted: float
    observed: float
    count: int


def reliability_bins(y_true: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 10) -> list[ReliabilityBin]:
    """Mean predicted probability, observed positive rate and count per non-empty equal-width bin."""
    y, p = _labels_and_probs(y_true, probs)
    bins = weighted.equal_width_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    sum_p = np.bincount(bins, weights=p, minlength=n_bins)
    sum_y = np.bincount(bins, weights=y.astype(np.float64), minlength=n_bins)
    return [
        ReliabilityBin(
            lower=b / n_bins,
            upper=(b + 1) / n_bins,
            mean_predicted=float(sum_p[b] / counts[b]),
            observed=float(sum_y[b] / counts[b]),
            count=int(counts[b]),
        )
        for b in np.flatnonzero(counts)
    ]


def reliability_curve(y_true: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """A reliability curve as plain data: ECE, overall rates and every non-empty equal-width bin.

    Returns:
        ``{"n", "n_positive", "mean_predicted", "observed_rate", "n_bins", "ece", "bins"}``; ``bins`` is a list of
        ``{"lower", "upper", "mean_predicted", "observed", "count"}`` (the :class:`ReliabilityBin` fields).

    Raises:
        ValueError: empty or mismatched arrays, labels other than 0/1 or probabilities outside [0, 1].
    """
    y, p = _labels_and_probs(y_true, probs)
    return {
        "n": int(y.shape[0]),
        "n_positive": int(y.sum()),
        "mean_predicted": float(p.mean()),
        "observed_rate": float(y.mean()),
        "n_bins": n_bins,
        "ece": expected_calibration_error(y, p, n_bins),
        "bins": [
            {
                "lower": float(b.lower),
                "upper": float(b.upper),
                "mean_predicted": b.mean_predicted,
                "observed": b.observed,
                "count": b.count,
            }
            for b in reliability_bins(y, p, n_bins)
        ],
    }

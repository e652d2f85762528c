"""Calibration: temperature recovery, ECE, calibration slope/intercept, reliability bins."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from pipelines.evaluation.calibration import (
    apply_temperature,
    calibration_fit,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from pipelines.evaluation.errors import UndefinedMetricError


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True log-odds and outcomes drawn from them: sigmoid(z) is perfectly calibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    return (rng.random(n) < expit(z)).astype(int), z


@pytest.mark.parametrize("temperature", [0.5, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(temperature: float) -> None:
    y, z = _calibrated(20_000, 1)
    fitted = fit_temperature(y, z * temperature)  # a model whose logits are `temperature` times too large
    assert fitted == pytest.approx(temperature, rel=0.05)
    before = expected_calibration_error(y, expit(z * temperature))
    after = expected_calibration_error(y, apply_temperature(z * temperature, fitted))
    assert after < before / 3


def test_temperature_needs_both_classes() -> None:
    with pytest.raises(UndefinedMetricError):
        fit_temperature([1, 1, 1], [0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match="temperature must be > 0"):
        apply_temperature([0.1], 0.0)


def test_ece_near_zero_when_calibrated_and_large_when_not() -> None:
    y, z = _calibrated(20_000, 2)
    assert expected_calibration_error(y, expit(z)) < 0.02
    assert expected_calibration_error(y, expit(3.0 * z)) > 0.08  # overconfident
    assert expected_calibration_error(y, expit(z + 2.0)) > 0.15  # predicts too much disease


def test_ece_hand_computed() -> None:
    # Bin [0.1, 0.2): p 0.1, 0.1 vs 1 of 2 positive -> |0.1 - 0.5| = 0.4 for half the samples.
    # Bin [0.9, 1.0]: p 0.9, 1.0 vs 2 of 2 positive -> |0.95 - 1| = 0.05 for the other half.
    y = [0, 1, 1, 1]
    p = [0.1, 0.1, 0.9, 1.0]
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    assert expected_calibration_error(y, p, n_bins=1) == pytest.approx(abs(np.mean(p) - 0.75))


def test_calibration_slope_one_when_calibrated_below_one_when_overconfident() -> None:
    y, z = _calibrated(20_000, 3)
    calibrated = calibration_fit(y, expit(z))
    assert calibrated.slope == pytest.approx(1.0, abs=0.06)
    assert calibrated.intercept == pytest.approx(0.0, abs=0.06)
    overconfident = calibration_fit(y, expit(2.0 * z))
    assert overconfident.slope == pytest.approx(0.5, abs=0.04)
    assert calibration_fit(y, expit(0.5 * z)).slope > 1.5  # underconfident


def test_calibration_fit_matches_sklearn_logistic_regression() -> None:
    y, z = _calibrated(3000, 4)
    p = expit(1.7 * z - 0.4)
    fit = calibration_fit(y, p)
    reference = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(logit(p)[:, None], y)
    assert fit.slope == pytest.approx(reference.coef_[0, 0], abs=1e-5)
    assert fit.intercept == pytest.approx(reference.intercept_[0], abs=1e-5)


def test_calibration_fit_refuses_separated_or_one_class_data() -> None:
    with pytest.raises(UndefinedMetricError):
        calibration_fit([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    with pytest.raises(UndefinedMetricError):
        calibration_fit([0, 0, 0], [0.1, 0.2, 0.8])


def test_reliability_bins() -> None:
    y = [0, 1, 1, 1, 0]
    p = [0.05, 0.12, 0.18, 1.0, 0.95]
    bins = reliability_bins(y, p, n_bins=10)
    assert [(b.lower, b.upper, b.count) for b in bins] == [(0.0, 0.1, 1), (0.1, 0.2, 2), (0.9, 1.0, 2)]
    assert bins[1].mean_predicted == pytest.approx(0.15)
    assert bins[1].observed == pytest.approx(1.0)
    assert bins[2].observed == pytest.approx(0.5)
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins(y, p, n_bins=0)


def test_reliability_curve_is_plain_data_with_the_ece() -> None:
    from pipelines.evaluation.calibration import reliability_curve

    y = [0, 0, 1, 1, 1]
    p = [0.1, 0.1, 0.1, 0.9, 0.9]
    curve = reliability_curve(y, p, n_bins=2)
    assert (curve["n"], curve["n_positive"], curve["n_bins"]) == (5, 3, 2)
    assert curve["mean_predicted"] == pytest.approx(0.42)
    assert curve["observed_rate"] == pytest.approx(0.6)
    assert curve["bins"] == [
        {
            "lower": 0.0,
            "upper": 0.5,
            "mean_predicted": pytest.approx(0.1),
            "observed": pytest.approx(1 / 3),
            "count": 3,
        },
        {"lower": 0.5, "upper": 1.0, "mean_predicted": pytest.approx(0.9), "observed": 1.0, "count": 2},
    ]
    # 3/5 x |0.1 - 1/3| + 2/5 x |0.9 - 1|
    assert curve["ece"] == pytest.approx(0.6 * (1 / 3 - 0.1) + 0.4 * 0.1)

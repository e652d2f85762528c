"""Bootstrap CIs: coverage of the point estimate, narrowing with data, grouping, undefined resamples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pipelines.evaluation import weighted
from pipelines.evaluation.bootstrap import (
    bootstrap_ci,
    bootstrap_metrics,
    group_index,
    per_resample,
    resample_weights,
)
from pipelines.evaluation.metrics import discrimination_metrics, probability_metrics, threshold_metrics


def _cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from calibrated probabilities: the same generating process for any n."""
    rng = np.random.default_rng(seed)
    p = 1.0 / (1.0 + np.exp(-rng.normal(0.0, 1.5, n)))
    y = (rng.random(n) < p).astype(int)
    return y, p


def test_interval_covers_the_point_estimate() -> None:
    y, p = _cohort(500, 1)
    est = bootstrap_metrics(y, p, {**discrimination_metrics(), **threshold_metrics(0.5)}, n_boot=300, seed=0)
    for name, e in est.items():
        assert e.value is not None and e.low is not None and e.high is not None, name
        assert e.low < e.value < e.high, name
        assert e.n_boot == 300 and e.n_undefined == 0


def test_interval_narrows_with_more_data() -> None:
    small = bootstrap_ci(*_cohort(200, 2), weighted.auroc, n_boot=400, seed=0)
    large = bootstrap_ci(*_cohort(5000, 2), weighted.auroc, n_boot=400, seed=0)
    width_small = small.high - small.low  # type: ignore[operator]
    width_large = large.high - large.low  # type: ignore[operator]
    # Width shrinks like 1/sqrt(n): about 5x here.
    assert width_large < width_small / 3


def test_same_seed_same_interval_other_seed_other_interval() -> None:
    y, p = _cohort(300, 3)
    a = bootstrap_ci(y, p, weighted.auroc, n_boot=200, seed=7)
    b = bootstrap_ci(y, p, weighted.auroc, n_boot=200, seed=7)
    c = bootstrap_ci(y, p, weighted.auroc, n_boot=200, seed=8)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_vectorised_kernel_equals_any_metric_function() -> None:
    """Same seed, same resamples: sklearn's AUROC on materialised resamples gives the same interval."""
    y, p = _cohort(150, 4)
    fast = bootstrap_ci(y, p, weighted.auroc, n_boot=100, seed=5)
    slow = bootstrap_ci(y, p, per_resample(roc_auc_score), n_boot=100, seed=5)
    assert fast.value == pytest.approx(slow.value, abs=1e-12)
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)


def test_group_samples_are_resampled_together() -> None:
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), rng.integers(1, 5, 40))
    group_of, n_groups = group_index(patients, patients.shape[0])
    weights = resample_weights(patients.shape[0], 200, rng, group_of, n_groups)
    for patient in range(40):
        cols = weights[:, patients == patient]
        assert (cols == cols[:, :1]).all()  # all images of a patient drawn equally often
    first = np.unique(patients, return_index=True)[1]
    assert (weights[:, first].sum(axis=1) == 40).all()  # 40 patients drawn per resample


def test_grouped_bootstrap_hands_whole_patients_to_the_metric() -> None:
    # Each score encodes its patient (score // 10) and its image: a metric function sees every resample.
    patients = np.repeat(np.arange(30), 3)
    scores = (patients * 10 + np.tile(np.arange(3), 30)).astype(float) / 1000.0
    y = patients % 2
    seen: list[bool] = []

    def whole_patients(y_r: np.ndarray, s_r: np.ndarray) -> float:
        values, counts = np.unique(np.round(s_r * 1000).astype(int), return_counts=True)
        per_image = dict(zip(values.tolist(), counts.tolist(), strict=True))
        ok = all(len({per_image.get(p * 10 + i, 0) for i in range(3)}) == 1 for p in range(30))
        seen.append(ok)
        return 0.0

    bootstrap_ci(y, scores, per_resample(whole_patients), groups=patients, n_boot=50, seed=1)
    assert len(seen) == 51 and all(seen)
    seen.clear()
    bootstrap_ci(y, scores, per_resample(whole_patients), n_boot=50, seed=1)
    assert not all(seen)  # without groups, images of one patient are drawn apart


def test_grouped_interval_is_wider_for_correlated_samples() -> None:
    # Ten near-identical images per patient: resampling images pretends there is ten times more data.
    rng = np.random.default_rng(6)
    y_pat, p_pat = _cohort(100, 6)
    y = np.repeat(y_pat, 10)
    p = np.clip(np.repeat(p_pat, 10) + rng.normal(0, 0.01, 1000), 0, 1)
    patients = np.repeat(np.arange(100), 10)
    by_image = bootstrap_ci(y, p, weighted.auroc, n_boot=300, seed=0)
    by_patient = bootstrap_ci(y, p, weighted.auroc, groups=patients, n_boot=300, seed=0)
    assert by_patient.value == by_image.value
    assert (by_patient.high - by_patient.low) > 2 * (by_image.high - by_image.low)  # type: ignore[operator]


def test_undefined_resamples_are_skipped_and_counted() -> None:
    y = np.array([1] + [0] * 9)
    p = np.linspace(0.9, 0.0, 10)
    est = bootstrap_ci(y, p, weighted.auroc, n_boot=500, seed=0)
    # P(no positive drawn) = 0.9^10 ~ 0.35 of resamples
    assert 100 < est.n_undefined < 250
    assert est.value == 1.0
    assert est.low == 1.0 and est.high == 1.0
    none = bootstrap_ci([0, 0, 0], [0.1, 0.2, 0.3], weighted.auroc, n_boot=20, seed=0)
    assert none.value is None and none.low is None and none.high is None and none.n_undefined == 20


def test_zero_resamples_gives_point_only() -> None:
    y, p = _cohort(100, 8)
    est = bootstrap_ci(y, p, weighted.auroc, n_boot=0)
    assert est.value is not None and est.low is None and est.high is None


def test_group_ids_must_align() -> None:
    with pytest.raises(ValueError, match="groups must be 1-D with 3 values"):
        bootstrap_ci([0, 1, 1], [0.1, 0.2, 0.3], weighted.auroc, groups=[1, 2], n_boot=5)


def test_full_metric_set_gives_every_metric_an_interval() -> None:
    # Its speed is a benchmark's business, never a test's (CI machines are noisy).
    y, p = _cohort(2000, 9)
    patients = np.arange(2000) // 3
    kernels = {**discrimination_metrics(), **threshold_metrics(0.5), **probability_metrics()}
    out = bootstrap_metrics(y, p, kernels, groups=patients, n_boot=1000, seed=0)
    assert set(out) == set(kernels)
    for name, est in out.items():
        assert est.low is not None and est.high is not None and est.low <= est.high, name
    # (A percentile interval of a biased statistic such as the ECE need not hold its point estimate.)
    auroc = out["auroc"]
    assert auroc.low is not None and auroc.high is not None
    assert auroc.low <= auroc.value <= auroc.high

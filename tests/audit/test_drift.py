"""PSI and KS of served outputs against the test-set distribution."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.audit.drift import drift_row, drift_table, psi, psi_by_chance, psi_label


def test_psi_of_a_sample_against_itself_is_zero() -> None:
    scores = np.random.default_rng(0).random(500)
    assert psi(scores, scores) == pytest.approx(0.0, abs=1e-12)


def test_psi_grows_with_the_shift_and_reads_as_documented() -> None:
    rng = np.random.default_rng(0)
    base = rng.beta(2, 5, 2000)
    same = rng.beta(2, 5, 2000)
    small = rng.beta(2.4, 5, 2000)
    large = rng.beta(5, 2, 2000)
    values = [psi(base, x) for x in (same, small, large)]
    assert values[0] < 0.1 < values[2]
    assert values[0] < values[1] < values[2]
    assert [psi_label(v) for v in (0.05, 0.15, 0.3, None)] == ["stable", "moderate shift", "major shift", "too few"]


def test_psi_puts_values_beyond_the_baseline_range_in_the_end_bins() -> None:
    base = np.linspace(0.2, 0.4, 100)
    assert psi(base, np.full(50, 0.9)) == pytest.approx(psi(base, np.full(50, 0.41)))


def test_psi_refuses_empty_samples_and_single_bins() -> None:
    with pytest.raises(ValueError, match="finite"):
        psi([0.1, 0.2], [np.nan])
    with pytest.raises(ValueError, match="2 bins"):
        psi([0.1, 0.2], [0.1], bins=1)


def test_drift_row_needs_the_minimum_number_of_outputs() -> None:
    base = np.random.default_rng(1).random(300)
    few = drift_row("2025-03-01", base, [0.5] * 5, min_n=20)
    assert (few.psi, few.ks, few.label, few.n, few.mean) == (None, None, "too few", 5, 0.5)
    shifted = drift_row("2025-03-02", base, list(np.linspace(0.95, 1.0, 40)), min_n=20)
    assert shifted.label == "major shift"
    assert shifted.ks is not None and shifted.ks > 0.9
    assert shifted.ks_p is not None and shifted.ks_p < 1e-6


def test_drift_table_pools_every_period_for_the_overall_row() -> None:
    base = np.random.default_rng(2).random(300)
    by_day = {"2025-03-02": [0.9] * 30, "2025-03-01": list(np.random.default_rng(3).random(30))}
    overall, rows = drift_table(base, by_day, min_n=20)
    assert [r.period for r in rows] == ["2025-03-01", "2025-03-02"]
    assert overall.period == "all" and overall.n == 60
    assert rows[0].psi is not None and rows[1].psi is not None and rows[0].psi < rows[1].psi


def test_small_samples_from_the_test_distribution_do_not_read_as_a_shift() -> None:
    rng = np.random.default_rng(4)
    base = rng.beta(2, 5, 160)
    rows = [drift_row("d", base, list(rng.choice(base, 40)), min_n=20) for _ in range(40)]
    shifts = sum(r.label.endswith("shift") for r in rows)
    # PSI alone crosses the thresholds often at this size; with the KS gate about 5 % of periods do.
    assert sum((r.psi or 0) >= 0.1 for r in rows) > 20
    assert shifts <= 5
    assert rows[0].by_chance == pytest.approx(psi_by_chance(40, 160)) == pytest.approx(9 * (1 / 40 + 1 / 160))
    assert psi_label(0.4, ks_p=0.3) == "not significant"
    assert psi_label(0.4, ks_p=0.001) == "major shift"

"""Subgroup metrics: sizes, prevalence, minimum size, largest gap; age bands."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation import weighted
from pipelines.evaluation.metrics import ranking_metrics, threshold_metrics
from pipelines.evaluation.subgroups import Gap, age_band, largest_gap, subgroup_metrics, subgroup_table


def _constructed() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region A is ranked perfectly (AUROC 1), region B not at all (all scores tied, AUROC 0.5), C is tiny."""
    y_a = np.array([0, 1] * 20)
    s_a = np.where(y_a == 1, 0.9, 0.1)
    y_b = np.array([0, 0, 1] * 15)
    s_b = np.full(45, 0.6)
    y_c = np.array([0, 1, 1, 1])
    s_c = np.array([0.9, 0.1, 0.2, 0.3])  # AUROC 0: would be the minimum if it counted
    y = np.concatenate([y_a, y_b, y_c])
    s = np.concatenate([s_a, s_b, s_c])
    region = np.array(["A"] * 40 + ["B"] * 45 + ["C"] * 4, dtype=object)
    return y, s, region


def test_largest_gap_on_a_constructed_case() -> None:
    y, s, region = _constructed()
    kernels = {"auroc": weighted.auroc, **threshold_metrics(0.5)}
    report = subgroup_metrics(y, s, "region", region, kernels, min_size=30, n_boot=100, seed=0)
    groups = {g.value: g for g in report.groups}
    assert [g.value for g in report.groups] == ["A", "B", "C"]
    assert (groups["A"].n, groups["A"].n_positive, groups["A"].prevalence) == (40, 20, 0.5)
    assert (groups["B"].n, groups["B"].n_positive) == (45, 15)
    assert groups["B"].prevalence == pytest.approx(1 / 3)
    assert groups["C"].n == 4 and groups["C"].metrics is None  # reported, but below the minimum size
    assert groups["A"].metrics is not None and groups["A"].metrics["auroc"].value == 1.0
    assert groups["B"].metrics is not None and groups["B"].metrics["auroc"].value == 0.5
    assert report.gaps["auroc"] == Gap(gap=0.5, max_group="A", min_group="B")
    # Sensitivity at 0.5: A finds all positives (1.0), B predicts everyone positive (1.0): no gap.
    assert report.gaps["sensitivity"] == Gap(gap=0.0, max_group="A", min_group="A")
    # Specificity: A 1.0, B 0.0.
    assert report.gaps["specificity"] == Gap(gap=1.0, max_group="A", min_group="B")


def test_gap_needs_two_groups_with_enough_data() -> None:
    y, s, region = _constructed()
    report = subgroup_metrics(y, s, "region", region, {"auroc": weighted.auroc}, min_size=41, n_boot=0)
    assert report.gaps["auroc"] is None
    assert largest_gap({"x": 0.7, "y": None}) is None
    assert largest_gap({"x": 0.7, "y": 0.9, "z": 0.8}) == Gap(gap=pytest.approx(0.2), max_group="y", min_group="x")


def test_missing_values_and_table_of_columns() -> None:
    y = np.array([0, 1] * 40)
    s = np.linspace(0, 1, 80)
    sex = np.array(["F", "M", None, float("nan")] * 20, dtype=object)
    table = subgroup_table(
        y,
        s,
        {"sex": sex, "facility": np.repeat([7, 8], 40)},
        {"auroc": weighted.auroc},
        min_size=10,
        n_boot=20,
    )
    assert [g.value for g in table["sex"].groups] == ["F", "M", "unknown"]
    assert [g.n for g in table["sex"].groups] == [20, 20, 40]
    assert [g.value for g in table["facility"].groups] == ["7", "8"]
    assert table["sex"].as_dict()["groups"]["unknown"]["n"] == 40  # type: ignore[index]


def test_subgroup_bootstrap_keeps_patients_within_the_group() -> None:
    y, s, region = _constructed()
    patients = np.arange(y.shape[0]) // 2
    report = subgroup_metrics(
        y, s, "region", region, {"auroc": weighted.auroc}, groups=patients, min_size=30, n_boot=50, seed=0
    )
    assert report.groups[0].metrics is not None and report.groups[0].metrics["auroc"].low == 1.0


def test_money_metric_is_refused_on_subgroups() -> None:
    y, s, region = _constructed()
    kernels = ranking_metrics(5, amounts=np.ones(y.shape[0]))
    with pytest.raises(ValueError, match="amounts has"):
        subgroup_metrics(y, s, "region", region, kernels, min_size=30, n_boot=5)


def test_column_length_is_checked() -> None:
    with pytest.raises(ValueError, match="'sex' must be 1-D with 3 values"):
        subgroup_metrics([0, 1, 1], [0.1, 0.2, 0.3], "sex", ["F", "M"], {"auroc": weighted.auroc})


def test_age_bands() -> None:
    ages = [0, 17, 17.9, 18, 39, 40, 59, 60, 74, 75, 101, float("nan"), -1]
    assert age_band(ages).tolist() == [
        "0-17",
        "0-17",
        "0-17",
        "18-39",
        "18-39",
        "40-59",
        "40-59",
        "60-74",
        "60-74",
        "75+",
        "75+",
        "unknown",
        "unknown",
    ]
    assert age_band([5, 65], edges=(65,)).tolist() == ["0-64", "65+"]
    with pytest.raises(ValueError, match="increasing"):
        age_band([5], edges=(40, 18))

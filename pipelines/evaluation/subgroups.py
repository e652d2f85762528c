"""Metrics per subgroup (sex, age band, region, facility) with bootstrap CIs, and the largest gap."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.evaluation.arrays import as_labels, as_scores
from pipelines.evaluation.bootstrap import Estimate, bootstrap_metrics
from pipelines.evaluation.weighted import BatchMetric

MISSING = "unknown"
"""Label of samples whose subgroup value (or age) is missing."""


@dataclass(frozen=True)
class GroupResult:
    """One subgroup: its size, prevalence and metrics (None when smaller than the minimum size)."""

    value: str
    n: int
    n_positive: int
    prevalence: float
    metrics: dict[str, Estimate] | None

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready fields."""
        return {
            "n": self.n,
            "n_positive": self.n_positive,
            "prevalence": self.prevalence,
            "metrics": None if self.metrics is None else {k: e.as_dict() for k, e in self.metrics.items()},
        }


@dataclass(frozen=True)
class Gap:
    """The largest difference of a metric's point estimates between two groups."""

    gap: float
    max_group: str
    min_group: str

    def as_dict(self) -> dict[str, float | str]:
        """Plain JSON-ready fields."""
        return {"gap": self.gap, "max_group": self.max_group, "min_group": self.min_group}


@dataclass(frozen=True)
class SubgroupReport:
    """All groups of one subgroup column, and per metric the largest gap among groups with enough data."""

    column: str
    groups: list[GroupResult]
    gaps: dict[str, Gap | None]

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready fields: groups keyed by value."""
        return {
            "groups": {g.value: g.as_dict() for g in self.groups},
            "gaps": {k: None if g is None else g.as_dict() for k, g in self.gaps.items()},
        }


def _labels_of(values: npt.ArrayLike, n: int, column: str) -> list[str]:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"subgroup column {column!r} must be 1-D with {n} values, got shape {arr.shape}")
    return [MISSING if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in arr.tolist()]


def largest_gap(points: Mapping[str, float | None]) -> Gap | None:
    """Max minus min of the defined point estimates, naming both groups; None with fewer than two.

    Among equal values the first group in iteration order is named.
    """
    defined = {g: v for g, v in points.items() if v is not None}
    if len(defined) < 2:
        return None
    hi = max(defined, key=lambda g: defined[g])
    lo = min(defined, key=lambda g: defined[g])
    return Gap(gap=defined[hi] - defined[lo], max_group=hi, min_group=lo)


def subgroup_metrics(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    column: str,
    values: npt.ArrayLike,
    metrics: Mapping[str, BatchMetric],
    *,
    groups: npt.ArrayLike | None = None,
    min_size: int = 30,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> SubgroupReport:
    """Metrics with bootstrap CIs in each group of one subgroup column.

    Args:
        y_true: 0/1 labels.
        scores: scores or probabilities.
        column: the column's name (for the report and errors).
        values: group value per sample; None/NaN become ``"unknown"``; values are reported as strings.
        metrics: name -> kernel, as for :func:`pipelines.evaluation.bootstrap.bootstrap_metrics`. Kernels that
            hold per-sample arrays (money@k) cannot be used here.
        groups: resampling unit per sample (patient ids), resampled within each subgroup.
        min_size: groups with fewer samples are reported (size, prevalence) with ``metrics=None``.
        n_boot: bootstrap resamples per group.
        seed: random seed; each group uses the same seed.
        level: CI coverage.
    """
    y = as_labels(y_true)
    s = as_scores(scores, y.shape[0])
    labels = np.asarray(_labels_of(values, y.shape[0], column), dtype=object)
    unit = None if groups is None else np.asarray(groups)
    results: list[GroupResult] = []
    for value in sorted(set(labels.tolist())):
        mask = labels == value
        y_g = y[mask]
        n_g = int(mask.sum())
        estimates = None
        if n_g >= min_size:
            estimates = bootstrap_metrics(
                y_g,
                s[mask],
                metrics,
                groups=None if unit is None else unit[mask],
                n_boot=n_boot,
                seed=seed,
                level=level,
            )
        n_pos = int(y_g.sum())
        results.append(GroupResult(value, n_g, n_pos, n_pos / n_g, estimates))
    gaps = {
        name: largest_gap({r.value: r.metrics[name].value for r in results if r.metrics is not None})
        for name in metrics
    }
    return SubgroupReport(column, results, gaps)


def subgroup_table(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    columns: Mapping[str, npt.ArrayLike],
    metrics: Mapping[str, BatchMetric],
    *,
    groups: npt.ArrayLike | None = None,
    min_size: int = 30,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, SubgroupReport]:
    """:func:`subgroup_metrics` for every column of ``columns`` (name -> value per sample)."""
    return {
        name: subgroup_metrics(
            y_true,
            scores,
            name,
            values,
            metrics,
            groups=groups,
            min_size=min_size,
            n_boot=n_boot,
            seed=seed,
            level=level,
        )
        for name, values in columns.items()
    }


def age_band(ages: npt.ArrayLike, edges: Sequence[int] = (18, 40, 60, 75)) -> npt.NDArray[np.str_]:
    """Age band label per age in whole years: with the default edges ``0-17, 18-39, 40-59, 60-74, 75+``.

    Args:
        ages: ages in years; NaN or negative ages give ``"unknown"``.
        edges: increasing lower bounds of the bands after the first (which starts at 0).
    """
    bounds = [int(e) for e in edges]
    if not bounds or bounds[0] <= 0 or any(b >= c for b, c in itertools.pairwise(bounds)):
        raise ValueError(f"edges must be positive and increasing, got {list(edges)}")
    names = [f"{lo}-{hi - 1}" for lo, hi in zip([0, *bounds[:-1]], bounds, strict=True)] + [f"{bounds[-1]}+"]
    a = np.asarray(ages, dtype=np.float64)
    idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), np.floor(np.nan_to_num(a, nan=-1.0)), side="right")
    out = np.asarray(names, dtype=object)[idx]
    out[~(a >= 0)] = MISSING
    return out.astype(np.str_)

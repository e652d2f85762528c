"""``evaluate_binary``: every evaluation number of a binary model in one JSON-ready dict (metrics.json)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pipelines.evaluation.arrays import as_labels, as_scores
from pipelines.evaluation.bootstrap import bootstrap_metrics
from pipelines.evaluation.metrics import (
    confusion_at,
    discrimination_metrics,
    probability_metrics,
    ranking_metrics,
    threshold_metrics,
)
from pipelines.evaluation.subgroups import subgroup_table
from pipelines.evaluation.weighted import BatchMetric

log = logging.getLogger(__name__)


def evaluate_binary(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    threshold: float,
    groups: npt.ArrayLike | None = None,
    subgroups: Mapping[str, npt.ArrayLike] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_bins: int = 10,
    min_group_size: int = 30,
    top_k: Sequence[int] = (),
    amounts: npt.ArrayLike | None = None,
) -> dict[str, Any]:
    """Evaluate predicted probabilities of a binary model on a test set.

    Args:
        y_true: 0/1 outcomes.
        scores: predicted probabilities of the positive class, in [0, 1].
        threshold: decision threshold chosen on validation data (positive when ``score >= threshold``).
        groups: patient id per sample; the bootstrap then resamples patients, not samples.
        subgroups: subgroup column name -> value per sample (sex, age band, region, facility).
        n_boot: bootstrap resamples (0: point estimates only).
        seed: bootstrap seed.
        level: CI coverage.
        n_bins: equal-width bins of the ECE.
        min_group_size: subgroups with fewer samples get no metrics.
        top_k: review-queue sizes for precision@k, recall@k (and money@k with ``amounts``), e.g. fraud.
        amounts: per-sample amounts (claim value) for money@k.

    Returns:
        ``{"n", "n_positive", "prevalence", "n_groups", "threshold", "bootstrap", "confusion", "metrics",
        "subgroups"}``: ``metrics`` maps a name to ``{"value", "low", "high", "n_boot", "n_undefined"}``;
        ``subgroups`` (only with ``subgroups``) maps a column to ``{"groups": {value: {"n", "n_positive",
        "prevalence", "metrics"}}, "gaps": {name: {"gap", "max_group", "min_group"} | None}}``. Only built-in
        types, and None where a value is undefined.
    """
    started = time.perf_counter()
    y = as_labels(y_true)
    p = as_scores(scores, y.shape[0], probability=True)
    per_group: dict[str, BatchMetric] = {
        **discrimination_metrics(),
        **threshold_metrics(threshold),
        **probability_metrics(n_bins),
    }
    overall = dict(per_group)
    for k in top_k:
        overall.update(ranking_metrics(k, amounts))

    boot = {"n_boot": n_boot, "seed": seed, "level": level, "unit": "sample" if groups is None else "group"}
    estimates = bootstrap_metrics(y, p, overall, groups=groups, n_boot=n_boot, seed=seed, level=level)
    n_pos = int(y.sum())
    report: dict[str, Any] = {
        "n": int(y.shape[0]),
        "n_positive": n_pos,
        "prevalence": n_pos / y.shape[0],
        "n_groups": None if groups is None else len(np.unique(np.asarray(groups))),
        "threshold": float(threshold),
        "bootstrap": boot,
        "confusion": confusion_at(y, p, threshold).as_dict(),
        "metrics": {name: est.as_dict() for name, est in estimates.items()},
    }
    if subgroups:
        table = subgroup_table(
            y,
            p,
            subgroups,
            per_group,
            groups=groups,
            min_size=min_group_size,
            n_boot=n_boot,
            seed=seed,
            level=level,
        )
        report["subgroups"] = {name: sub.as_dict() for name, sub in table.items()}
    log.info(
        "evaluated %d samples (%d positive), %d resamples, %d subgroup columns in %.1f s",
        report["n"],
        n_pos,
        n_boot,
        len(subgroups or {}),
        time.perf_counter() - started,
    )
    return report

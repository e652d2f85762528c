"""Evaluation of fraud scorers for the review queue: ``evaluate_binary`` plus recall at k per fraud pattern.

Built on :mod:`pipelines.evaluation`: the same bootstrap resamples (same seed) give the confidence intervals
of the overall metrics and of the recall at k of each pattern and of the fraud no audit had labelled, so the
model and both baselines can be reported side by side (:func:`comparison_table`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.evaluation import weighted
from pipelines.evaluation.bootstrap import bootstrap_metrics
from pipelines.evaluation.metrics_report import evaluate_binary

HEADLINE = ("auprc", "auroc", "precision_at_{k}", "recall_at_{k}", "money_at_{k}")


def kth_score(scores: npt.ArrayLike, k: int) -> float:
    """The k-th highest score (the lowest score on a queue of k); the lowest score when fewer than k."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if s.size == 0:
        return 0.0
    return float(s[min(k, s.size) - 1])


def evaluate_fraud(
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    amounts: npt.ArrayLike,
    patterns: Sequence[str | None],
    labelled: npt.ArrayLike,
    *,
    k: int,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """Evaluate fraud scores against the truth, for a review queue of ``k`` claims.

    Args:
        y: 1 for a fraudulent claim (all of it: labelled by audits or not), else 0.
        scores: score per claim in [0, 1].
        amounts: claim total per claim (money at stake).
        patterns: the fraud pattern of each claim (None or "" for a clean one).
        labelled: whether an audit confirmed the claim (True only for labelled fraud).
        k: claims reviewed.
        n_boot: bootstrap resamples (0: point estimates only).
        seed: bootstrap seed (the same for every metric, so intervals come from the same resamples).
        threshold: decision threshold for the threshold metrics (default: the k-th highest score, i.e. the
            queue).
        level: CI coverage.

    Returns:
        The :func:`pipelines.evaluation.metrics_report.evaluate_binary` report plus ``k``, ``recall_at_k_by_pattern``
        (pattern -> ``{"n", "value", "low", "high"}``), ``unlabelled_recall_at_k`` and
        ``labelled_recall_at_k`` (``{"n", "value", "low", "high"}``, values None where there is no such
        claim).

    Raises:
        ValueError: arrays of different lengths.
    """
    yy = np.asarray(y).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labelled).astype(bool)
    pats = [p or "" for p in patterns]
    if not (yy.shape[0] == s.shape[0] == lab.shape[0] == len(pats) == np.asarray(amounts).shape[0]):
        raise ValueError("y, scores, amounts, patterns and labelled must have one value per claim")
    thr = kth_score(s, k) if threshold is None else threshold
    report = evaluate_binary(yy, s, threshold=thr, top_k=(k,), amounts=amounts, n_boot=n_boot, seed=seed, level=level)
    recall = {f"recall_at_{k}": functools.partial(weighted.recall_at_k, k=k)}

    def recall_of(mask: npt.NDArray[np.bool_]) -> dict[str, Any]:
        n = int(mask.sum())
        if n == 0:
            return {"n": 0, "value": None, "low": None, "high": None}
        est = bootstrap_metrics(mask.astype(np.int64), s, recall, n_boot=n_boot, seed=seed, level=level)
        return {"n": n, **{key: est[f"recall_at_{k}"].as_dict()[key] for key in ("value", "low", "high")}}

    arr = np.asarray(pats, dtype=object)
    report["k"] = k
    report["recall_at_k_by_pattern"] = {p: recall_of(arr == p) for p in sorted(set(pats) - {""})}
    report["unlabelled_recall_at_k"] = recall_of((yy == 1) & ~lab)
    report["labelled_recall_at_k"] = recall_of((yy == 1) & lab)
    return report


def comparison_table(reports: Mapping[str, dict[str, Any]]) -> pl.DataFrame:
    """One row per scorer: headline metrics with CIs, unlabelled recall and recall per pattern at k.

    Args:
        reports: scorer name (e.g. model, rules, gbm) -> :func:`evaluate_fraud` report (same k).
    """
    rows = []
    for name, rep in reports.items():
        k = rep["k"]
        row: dict[str, Any] = {"scorer": name, "k": k, "n": rep["n"], "n_positive": rep["n_positive"]}
        for metric in HEADLINE:
            key = metric.format(k=k)
            est = rep["metrics"].get(key, {})
            short = metric.replace("_{k}", "_k")
            row[short] = est.get("value")
            row[f"{short}_low"] = est.get("low")
            row[f"{short}_high"] = est.get("high")
        row["unlabelled_recall_at_k"] = rep["unlabelled_recall_at_k"]["value"]
        for pattern, est in rep["recall_at_k_by_pattern"].items():
            row[f"recall_at_k_{pattern}"] = est["value"]
        rows.append(row)
    return pl.DataFrame(rows, infer_schema_length=None)


def beats(
    reports: Mapping[str, dict[str, Any]], model: str, baselines: Sequence[str], metrics: Sequence[str]
) -> dict[str, dict[str, bool]]:
    """Whether ``model``'s point estimate is above each baseline's, per metric (e.g. ``auprc``,
    ``precision_at_50``).

    Returns:
        baseline -> metric -> True when the model is strictly better (False when either value is undefined).
    """
    out: dict[str, dict[str, bool]] = {}
    mine = reports[model]["metrics"]
    for base in baselines:
        theirs = reports[base]["metrics"]
        out[base] = {}
        for m in metrics:
            a, b = mine.get(m, {}).get("value"), theirs.get(m, {}).get("value")
            out[base][m] = a is not None and b is not None and a > b
    return out

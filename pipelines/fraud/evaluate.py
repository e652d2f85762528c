"""Evaluation of fraud scorers for the review queue: ``evaluate_binary`` plus recall at k per fraud pattern.

Built on :mod:`pipelines.evaluation`: the same bootstrap resamples (same seed) give the confidence intervals
of the overall metrics and of the recall at k of each pattern and of the fraud no audit had labelled, so the
model and both baselines can be reported side by side (:func:`comparison_table`).

The investigators' list is not the model alone: :func:`evaluate_final_list` scores the final ranking (rule hits
first, then the model's probability), and :func:`calibration_by_truth` reports how well the probability means
what it says, against the audit findings it was calibrated on and against the cohort's full truth.
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
from pipelines.evaluation.calibration import reliability_curve
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


# Metrics of the probability itself: meaningless for the final list's rank score, which is not a probability.
_PROBABILITY_METRICS = ("brier", "ece", "calibration_slope", "calibration_intercept")


def final_rank_score(probabilities: npt.ArrayLike, rule_hit: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The rank score of the final list: rule hits first, then the model's probability.

    ``(hit + p) / 2``: every rule hit (in [0.5, 1]) ranks above every other claim (in [0, 0.5)), and within
    each part the order is the probability's. It orders claims; it is not a probability, and the worklist
    shows the model's probability unchanged.

    Raises:
        ValueError: arrays of different lengths or probabilities outside [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    h = np.asarray(rule_hit).astype(bool)
    if p.shape != h.shape:
        raise ValueError("probabilities and rule hits must have one value per claim")
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise ValueError("probabilities must be within [0, 1]")
    return (h.astype(np.float64) + p) / 2.0


def evaluate_final_list(
    y: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    rule_hit: npt.ArrayLike,
    amounts: npt.ArrayLike,
    patterns: Sequence[str | None],
    labelled: npt.ArrayLike,
    *,
    k: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The final ranked list (rule hits first, then the model's probability) against the truth, with CIs.

    The same report as :func:`evaluate_fraud` of :func:`final_rank_score`, without the metrics of a probability
    (Brier, ECE, calibration slope and intercept), plus ``ranking`` (in words), ``rule_hits`` (claims any rule
    hits) and ``rule_hits_positive`` (of them, fraudulent by ``y``).
    """
    h = np.asarray(rule_hit).astype(bool)
    yy = np.asarray(y).astype(np.int64)
    report = evaluate_fraud(
        yy, final_rank_score(probabilities, h), amounts, patterns, labelled,
        k=k, n_boot=n_boot, seed=seed, level=level,
    )  # fmt: skip
    report["metrics"] = {m: v for m, v in report["metrics"].items() if m not in _PROBABILITY_METRICS}
    report["ranking"] = "rule hits first, then the model's probability"
    report["rule_hits"] = int(h.sum())
    report["rule_hits_positive"] = int(yy[h].sum())
    return report


def calibration_by_truth(
    probabilities: npt.ArrayLike,
    truths: Mapping[str, npt.ArrayLike],
    *,
    n_bins: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Reliability curve and ECE (with a bootstrap CI) of the probabilities against each truth.

    Args:
        probabilities: the model's calibrated probability per claim.
        truths: name (e.g. ``findings``, ``truth``) -> 0/1 per claim.
        n_bins: equal-width bins of [0, 1].
        n_boot: bootstrap resamples of the ECE's interval (0: point estimate only).
        seed: bootstrap seed.
        level: CI coverage.

    Returns:
        name -> :func:`pipelines.evaluation.calibration.reliability_curve` plus ``ece_ci`` (``{"value", "low",
        "high", ...}``).
    """
    out: dict[str, dict[str, Any]] = {}
    ece = {"ece": functools.partial(weighted.ece, n_bins=n_bins)}
    for name, y in truths.items():
        curve = reliability_curve(y, probabilities, n_bins)
        est = bootstrap_metrics(y, probabilities, ece, n_boot=n_boot, seed=seed, level=level)
        curve["ece_ci"] = est["ece"].as_dict()
        out[name] = curve
    return out

"""Stage ``evaluate@fraud``: the fraud model against both baselines on the test months, for a review queue; the
final list (rule hits first, then the model); the model's calibration against the findings and the full truth;
each rule's precision on every split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import DEMO_PSEUDONYM_KEY, EvaluateParams
from pipelines.errors import InputError
from pipelines.evaluation import plots
from pipelines.features.fraud_labels import finding_patterns, load_fund_findings
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.evaluate import (
    beats,
    calibration_by_truth,
    evaluate_final_list,
    evaluate_fraud,
    final_rank_score,
)
from pipelines.fraud.rules import any_hit, evaluate_rules, join_codes, rule_precision
from pipelines.fraud.truth import TRUTH_FILE, load_truth
from pipelines.io import atomic_dir, write_json
from pipelines.modeling.fraud_model import load_fraud_model, score
from pipelines.modeling.fraud_store import FRAUD_SCORERS
from pipelines.stages.evaluate import test_data_md5, write_plots
from pipelines.stages.tracked import tracked_stage

log = logging.getLogger(__name__)


def _fraud_truth(df: pl.DataFrame, raw: Path, key: str | None, tables: Path) -> tuple[pl.DataFrame, str]:
    """Attach ``is_fraud``, ``pattern`` and ``labelled``: the cohort's full truth, or the audit findings alone."""
    if (raw / TRUTH_FILE).exists():
        truth = load_truth(raw, Pseudonymizer(key or DEMO_PSEUDONYM_KEY))
        df = df.join(truth, on="claim_id", how="left", maintain_order="left")
        return df.with_columns(
            pl.col("pattern").is_not_null().cast(pl.Int8).alias("is_fraud"), pl.col("labelled").fill_null(False)
        ), "injected"
    # Real data: only audited fraud is known; unlabelled-fraud recall cannot be measured.
    patterns = finding_patterns(df["claim_id"], load_fund_findings(tables))
    return df.with_columns(
        pl.col("label").alias("is_fraud"), patterns.alias("pattern"), (pl.col("label") == 1).alias("labelled")
    ), "audit"


def run(
    params: EvaluateParams,
    processed: Path,
    train_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    *,
    raw: Path = Path("data/raw"),
    tables: Path = Path("data/interim/tables"),
    key: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Evaluate the fraud model against both baselines on the test months, for a review queue of ``fraud_k``.

    Truth is every fraudulent claim the built-in cohort injected (labelled by audits or not) when its manifest is
    present, else the audit findings. ``metrics_path`` holds the model's report (the promotion gate reads it),
    the comparison table and whether it beats each baseline on PR-AUC and precision@k, and:

    - ``final_list``: the investigators' ranking (rule hits first, then the model's probability) against the
      truth, with the same CIs (PR-AUC, precision/recall/money@k, recall per pattern);
    - ``calibration_by_truth``: the model's reliability curve and ECE against the audit findings (``findings``,
      what it is calibrated on) and against the truth (``truth``), on the test months;
    - ``rules``: each rule's hits and precision against the truth and the findings, per split.

    ``tracking_uri``: the MLflow store (None: default).
    """
    for name in FRAUD_SCORERS:
        if not (train_dir / name).exists():
            raise InputError(f"{train_dir / name}: not found (run `shipa train fraud` first)")
    df = pl.read_parquet(processed / "dataset.parquet")
    everything, truth_source = _fraud_truth(df, raw, key, tables)
    test = everything.filter(pl.col("split") == "test")
    y = test["is_fraud"].to_numpy()
    k = min(params.fraud_k, test.height)
    md5 = test_data_md5(test["claim_id"].to_list(), test["label"].cast(pl.Int64).to_list())
    reports: dict[str, dict[str, Any]] = {}
    predictions = test.select("claim_id", "provider_id", "patient_id", "created", "total", "label", "is_fraud")
    with tracked_stage("evaluate@fraud", params, tracking_uri=tracking_uri) as run, atomic_dir(out_dir) as tmp:
        for name in FRAUD_SCORERS:
            scores = score(load_fraud_model(train_dir / name), test)
            report = evaluate_fraud(
                y, scores, test["total"].to_numpy(), test["pattern"].to_list(), test["labelled"].to_numpy(),
                k=k, n_boot=params.n_boot, seed=params.seed, level=params.ci_level,
            )  # fmt: skip
            report["test_data_md5"] = md5
            report["truth"] = truth_source
            reports[name] = report
            predictions = predictions.with_columns(pl.Series(f"score_{name}", scores))
            write_plots(tmp / name, y, scores, report, params.calibration_bins)
            write_json(tmp / name / "metrics.json", report)
            run.log_evaluation(report, prefix=f"test.{name}")
        probability = predictions["score_model"].to_numpy()
        hit = any_hit(test).to_numpy()
        final = evaluate_final_list(
            y, probability, hit, test["total"].to_numpy(), test["pattern"].to_list(), test["labelled"].to_numpy(),
            k=k, n_boot=params.n_boot, seed=params.seed, level=params.ci_level,
        )  # fmt: skip
        run.log_evaluation(final, prefix="test.final_list")
        truths = {"findings": test["label"].to_numpy(), "truth": y}
        calibration = calibration_by_truth(
            probability, truths, n_bins=params.calibration_bins, n_boot=params.n_boot, seed=params.seed,
            level=params.ci_level,
        )  # fmt: skip
        for name, labels in truths.items():
            plots.plot_reliability(
                labels, probability, tmp / "model" / f"reliability_{name}.png", n_bins=params.calibration_bins,
                title=f"Reliability against the {'audit findings' if name == 'findings' else 'full truth'}",
            )  # fmt: skip
            write_json(
                tmp / "model" / f"calibration_{name}.json",
                plots.calibration_points(labels, probability, params.calibration_bins),
            )
        rules = {
            "truth": rule_precision(everything, "is_fraud", by="split"),
            "findings": rule_precision(everything, "label", by="split"),
        }
        headline = ("auprc", "auroc", f"precision_at_{k}", f"recall_at_{k}", f"money_at_{k}")
        metrics = {
            **reports["model"],
            "model": "model",
            "comparison": {n: {m: r["metrics"].get(m) for m in headline} for n, r in reports.items()},
            "beats_baselines": beats(reports, "model", ["gbm", "rules"], ["auprc", f"precision_at_{k}"]),
            "final_list": final,
            "calibration_by_truth": calibration,
            "rules": rules,
        }
        predictions = predictions.with_columns(
            pl.Series("rule_hits", [join_codes(h) for h in evaluate_rules(test)], dtype=pl.String),
            pl.Series("score_final", final_rank_score(probability, hit)),
        )
        predictions.write_parquet(tmp / "predictions.parquet")
        write_json(metrics_path, metrics)
        run.log_artifact(metrics_path)
    for n, r in reports.items():
        m = r["metrics"]
        log.info(
            "fraud %s: PR-AUC %.3f, precision@%d %.3f, unlabelled recall@%d %s",
            n, m["auprc"]["value"], k, m[f"precision_at_{k}"]["value"], k, r["unlabelled_recall_at_k"]["value"],
        )  # fmt: skip
    fm = final["metrics"]
    log.info(
        "fraud final list (%d rule hits, %d fraudulent): PR-AUC %.3f, precision@%d %.3f; ECE %.4f against the "
        "findings, %.4f against the truth",
        final["rule_hits"], final["rule_hits_positive"], fm["auprc"]["value"], k, fm[f"precision_at_{k}"]["value"],
        calibration["findings"]["ece"], calibration["truth"]["ece"],
    )  # fmt: skip
    return metrics

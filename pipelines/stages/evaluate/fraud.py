"""Stage ``evaluate@fraud``: the fraud model against both baselines on the test months, for a review queue."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import DEMO_PSEUDONYM_KEY, EvaluateParams
from pipelines.errors import InputError
from pipelines.features.fraud_labels import finding_patterns, load_fund_findings
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.evaluate import beats, evaluate_fraud
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
    present, else the audit findings. ``metrics_path`` holds the model's report, the comparison table and
    whether it beats each baseline on PR-AUC and precision@k. ``tracking_uri``: the MLflow store (None: default).
    """
    for name in FRAUD_SCORERS:
        if not (train_dir / name).exists():
            raise InputError(f"{train_dir / name}: not found (run `shipa train fraud` first)")
    df = pl.read_parquet(processed / "dataset.parquet")
    test, truth_source = _fraud_truth(df.filter(pl.col("split") == "test"), raw, key, tables)
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
        headline = ("auprc", "auroc", f"precision_at_{k}", f"recall_at_{k}", f"money_at_{k}")
        metrics = {
            **reports["model"],
            "model": "model",
            "comparison": {n: {m: r["metrics"].get(m) for m in headline} for n, r in reports.items()},
            "beats_baselines": beats(reports, "model", ["gbm", "rules"], ["auprc", f"precision_at_{k}"]),
        }
        predictions.write_parquet(tmp / "predictions.parquet")
        write_json(metrics_path, metrics)
        run.log_artifact(metrics_path)
    for n, r in reports.items():
        m = r["metrics"]
        log.info(
            "fraud %s: PR-AUC %.3f, precision@%d %.3f, unlabelled recall@%d %s",
            n, m["auprc"]["value"], k, m[f"precision_at_{k}"]["value"], k, r["unlabelled_recall_at_k"]["value"],
        )  # fmt: skip
    return metrics

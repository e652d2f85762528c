"""Stage ``evaluate``: test-set evaluation per DVC ``foreach`` item, written as DVC metrics and plots.

Diagnosis: every trained mode is calibrated by temperature scaling on validation, its threshold chosen on
validation, and evaluated on test with patient-level bootstrap CIs and subgroup metrics. ``models/diagnosis/
metrics.json`` holds the fused model's full report (what the promotion gate reads) plus a comparison with the
image-only and EHR-only models; ``models/diagnosis/eval/`` holds each mode's report, plots and the per-study
predictions (pseudonymous ids only).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.config import EvaluateParams
from pipelines.errors import InputError
from pipelines.evaluation import plots
from pipelines.evaluation.calibration import LOGIT_EPS, apply_temperature, fit_temperature
from pipelines.evaluation.metrics import choose_threshold
from pipelines.evaluation.report import evaluate_binary
from pipelines.evaluation.weighted import logit
from pipelines.io import atomic_dir, write_json
from pipelines.stages.tracked import tracked_stage

log = logging.getLogger(__name__)

PRIMARY_MODE = "fused"
COMPARED = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity")


def test_data_md5(ids: list[str], labels: list[int]) -> str:
    """Fingerprint of a test set (ids and labels, in id order): the gate compares models only on equal ones."""
    digest = hashlib.md5(usedforsecurity=False)
    for i, y in sorted(zip(ids, labels, strict=True)):
        digest.update(f"{i}\t{y}\n".encode())
    return digest.hexdigest()


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(p, eps=LOGIT_EPS)


def write_plots(out: Path, y: np.ndarray, p: np.ndarray, report: dict[str, Any], n_bins: int) -> None:
    """ROC, PR, reliability and confusion PNGs plus their data as JSON for DVC plots."""
    from pipelines.evaluation.metrics import confusion_at

    out.mkdir(parents=True, exist_ok=True)
    plots.plot_roc(y, p, out / "roc.png")
    plots.plot_pr(y, p, out / "pr.png")
    plots.plot_reliability(y, p, out / "reliability.png", n_bins=n_bins)
    plots.plot_confusion(confusion_at(y, p, report["threshold"]), out / "confusion.png")
    write_json(out / "roc.json", plots.roc_points(y, p))
    write_json(out / "pr.json", plots.pr_points(y, p))
    write_json(out / "calibration.json", plots.calibration_points(y, p, n_bins))


def run_diagnosis(
    params: EvaluateParams, processed: Path, train_dir: Path, out_dir: Path, metrics_path: Path
) -> dict[str, Any]:
    """Evaluate every trained diagnosis mode on the test split.

    Returns:
        The metrics written to ``metrics_path``.
    """
    from pipelines.modeling.engine import load_model, predict

    df = pl.read_parquet(processed / "dataset.parquet")
    val, test = df.filter(pl.col("split") == "val"), df.filter(pl.col("split") == "test")
    modes = [m for m in ("fused", "image", "ehr") if (train_dir / m / "model.json").exists()]
    if not modes:
        raise InputError(f"{train_dir}: no trained diagnosis model (run `shipa train diagnosis` first)")
    y_val, y_test = val["label"].to_numpy(), test["label"].to_numpy()
    md5 = test_data_md5(test["study_id"].to_list(), test["label"].to_list())
    subgroups = {c: test[c].cast(pl.String).fill_null("unknown").to_numpy() for c in params.subgroups}
    reports: dict[str, dict[str, Any]] = {}
    calibration: dict[str, dict[str, float]] = {}
    predictions = test.select("study_id", "patient_id", "label", *params.subgroups)
    with tracked_stage("evaluate@diagnosis", params) as run, atomic_dir(out_dir) as tmp:
        for mode in modes:
            model, meta = load_model(train_dir / mode)
            logit_val = _logit(predict(model, meta, val.to_pandas()))
            logit_test = _logit(predict(model, meta, test.to_pandas()))
            temperature = fit_temperature(y_val, logit_val)
            p_val = apply_temperature(logit_val, temperature)
            p_test = apply_temperature(logit_test, temperature)
            rule_value = params.target_sensitivity if params.threshold_rule == "target_sensitivity" else None
            threshold = choose_threshold(y_val, p_val, params.threshold_rule, rule_value)
            report = evaluate_binary(
                y_test,
                p_test,
                threshold=threshold,
                groups=test["patient_id"].to_numpy(),
                subgroups=subgroups,
                n_boot=params.n_boot,
                seed=params.seed,
                level=params.ci_level,
                n_bins=params.calibration_bins,
                min_group_size=params.min_group_size,
            )
            report["temperature"] = temperature
            report["test_data_md5"] = md5
            reports[mode] = report
            calibration[mode] = {"temperature": temperature, "threshold": threshold}
            predictions = predictions.with_columns(pl.Series(f"probability_{mode}", p_test))
            write_plots(tmp / mode, y_test, p_test, report, params.calibration_bins)
            write_json(tmp / mode / "metrics.json", report)
            run.log_evaluation(report, prefix=f"test.{mode}")
            auroc = report["metrics"]["auroc"]
            log.info("diagnosis %s: test AUROC %.3f [%.3f, %.3f]", mode, auroc["value"], auroc["low"], auroc["high"])
        predictions.write_parquet(tmp / "predictions.parquet")
        write_json(tmp / "calibration.json", calibration)
        primary = PRIMARY_MODE if PRIMARY_MODE in reports else modes[0]
        metrics = {
            **reports[primary],
            "model": primary,
            "comparison": {m: {k: r["metrics"].get(k) for k in COMPARED} for m, r in reports.items()},
        }
        write_json(metrics_path, metrics)
        run.log_artifact(metrics_path)
        for name in ("roc.png", "pr.png", "reliability.png", "confusion.png"):
            run.log_artifact(tmp / primary / name, artifact_path="plots")
    return metrics


def load_metrics(path: Path) -> dict[str, Any]:
    """Read a metrics file written by this stage."""
    if not path.exists():
        raise InputError(f"{path}: not found (run `shipa evaluate` first)")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _fraud_truth(df: pl.DataFrame, raw: Path, key: str | None, tables: Path) -> tuple[pl.DataFrame, str]:
    """Attach ``is_fraud``, ``pattern`` and ``labelled``: the cohort's full truth, or the audit findings alone."""
    from pipelines.config import DEMO_PSEUDONYM_KEY
    from pipelines.features.fraud_labels import finding_patterns, load_audit_findings
    from pipelines.fhir.pseudonym import Pseudonymizer
    from pipelines.fraud.truth import TRUTH_FILE, load_truth

    if (raw / TRUTH_FILE).exists():
        truth = load_truth(raw, Pseudonymizer(key or DEMO_PSEUDONYM_KEY))
        df = df.join(truth, on="claim_id", how="left", maintain_order="left")
        return df.with_columns(
            pl.col("pattern").is_not_null().cast(pl.Int8).alias("is_fraud"), pl.col("labelled").fill_null(False)
        ), "injected"
    # Real data: only audited fraud is known; unlabelled-fraud recall cannot be measured.
    patterns = finding_patterns(df["claim_id"], load_audit_findings(tables))
    return df.with_columns(
        pl.col("label").alias("is_fraud"), patterns.alias("pattern"), (pl.col("label") == 1).alias("labelled")
    ), "audit"


def run_fraud(
    params: EvaluateParams,
    processed: Path,
    train_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    *,
    raw: Path = Path("data/raw"),
    tables: Path = Path("data/interim/tables"),
    key: str | None = None,
) -> dict[str, Any]:
    """Evaluate the fraud model against both baselines on the test months, for a review queue of ``fraud_k``.

    Truth is every fraudulent claim the built-in cohort injected (labelled by audits or not) when its manifest is
    present, else the audit findings. ``metrics_path`` holds the model's report, the comparison table and
    whether it beats each baseline on PR-AUC and precision@k.
    """
    from pipelines.fraud.evaluate import beats, evaluate_fraud
    from pipelines.modeling.fraud_model import load_fraud_model, score
    from pipelines.stages.train import FRAUD_MODELS

    for name in FRAUD_MODELS:
        if not (train_dir / name).exists():
            raise InputError(f"{train_dir / name}: not found (run `shipa train fraud` first)")
    df = pl.read_parquet(processed / "dataset.parquet")
    test, truth_source = _fraud_truth(df.filter(pl.col("split") == "test"), raw, key, tables)
    y = test["is_fraud"].to_numpy()
    k = min(params.fraud_k, test.height)
    md5 = test_data_md5(test["claim_id"].to_list(), test["label"].cast(pl.Int64).to_list())
    reports: dict[str, dict[str, Any]] = {}
    predictions = test.select("claim_id", "provider_id", "patient_id", "created", "total", "label", "is_fraud")
    with tracked_stage("evaluate@fraud", params) as run, atomic_dir(out_dir) as tmp:
        for name in FRAUD_MODELS:
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

"""Stage ``evaluate@diagnosis``: every trained mode calibrated, thresholded and evaluated on the test split.

Every trained mode is calibrated by temperature scaling on validation, its threshold chosen on validation, and
evaluated on test with patient-level bootstrap CIs and subgroup metrics. ``models/diagnosis/metrics.json`` holds the
fused model's full report (what the promotion gate reads) plus a comparison with the image-only and EHR-only
models; ``models/diagnosis/eval/`` holds each mode's report, plots and the per-study predictions (pseudonymous ids
only).

Every image-using mode also gets its image out-of-distribution score (:mod:`pipelines.evaluation.ood`): fitted on
the training images' embeddings, its threshold chosen on the validation images and on the other-modality images
bundled with pydicom (:func:`pipelines.imaging.other_modality.calibration_images`), its false refusals counted on
the test images. It is written to ``eval/image_ood_<mode>.npz`` (registered with the model) and summarised in the
mode's report under ``image_ood``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.config import EvaluateParams
from pipelines.errors import InputError
from pipelines.evaluation.calibration import LOGIT_EPS, apply_temperature, fit_temperature
from pipelines.evaluation.metrics import choose_threshold
from pipelines.evaluation.metrics_report import evaluate_binary
from pipelines.evaluation.ood import ImageOOD, fit_ood, ood_file
from pipelines.evaluation.weighted import logit
from pipelines.imaging.other_modality import calibration_images, ingest_view
from pipelines.io import atomic_dir, write_json
from pipelines.modeling.embedding import predict_with_embeddings
from pipelines.modeling.engine import load_model, predict
from pipelines.modeling.networks import FusionNet
from pipelines.modeling.options import ModelMeta
from pipelines.stages.evaluate import test_data_md5, write_plots
from pipelines.stages.tracked import tracked_stage

log = logging.getLogger(__name__)

PRIMARY_MODE = "fused"
COMPARED = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity")


def _logit(p: np.ndarray) -> np.ndarray:
    return logit(p, eps=LOGIT_EPS)


def _ehr(meta: ModelMeta, frame: pl.DataFrame) -> np.ndarray | None:
    return frame.select(meta.ehr_columns).to_numpy().astype(np.float32) if meta.ehr_columns else None


def _scored(model: FusionNet, meta: ModelMeta, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, image embeddings or None) of the studies, from one pass of the network."""
    if meta.mode == "ehr":
        return predict(model, meta, frame.to_pandas()), None
    return predict_with_embeddings(model, meta, frame["image_path"].to_list(), _ehr(meta, frame))


def _fit_ood(
    params: EvaluateParams,
    model: FusionNet,
    meta: ModelMeta,
    train: pl.DataFrame,
    emb_val: np.ndarray,
    emb_test: np.ndarray,
) -> ImageOOD:
    """The mode's image OOD score, with the test images' false refusals added to its summary."""
    _, emb_train = predict_with_embeddings(model, meta, train["image_path"].to_list(), _ehr(meta, train))
    size = int(np.load(train["image_path"][0], mmap_mode="r", allow_pickle=False).shape[0])
    others = calibration_images()
    n_ehr = len(meta.ehr_columns)
    _, emb_other = predict_with_embeddings(
        model,
        meta,
        [ingest_view(o.pixels, size) for o in others],
        np.zeros((len(others), n_ehr), dtype=np.float32) if n_ehr else None,
    )
    ood = fit_ood(
        emb_train,
        train["label"].to_numpy(),
        emb_val,
        emb_other,
        max_false_refusal=params.ood_max_false_refusal,
        min_catch=params.ood_min_catch,
        calibration_names=[f"{o.name} ({o.modality})" for o in others],
    )
    ood.summary["test"] = {"n": int(emb_test.shape[0]), "refused": int(ood.refuses(emb_test).sum())}
    return ood


def run(
    params: EvaluateParams,
    processed: Path,
    train_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    *,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Evaluate every trained diagnosis mode on the test split (``tracking_uri``: the MLflow store, None: default).

    Returns:
        The metrics written to ``metrics_path``.
    """
    df = pl.read_parquet(processed / "dataset.parquet")
    train = df.filter(pl.col("split") == "train")
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
    with tracked_stage("evaluate@diagnosis", params, tracking_uri=tracking_uri) as run, atomic_dir(out_dir) as tmp:
        for mode in modes:
            model, meta = load_model(train_dir / mode)
            p_raw_val, emb_val = _scored(model, meta, val)
            p_raw_test, emb_test = _scored(model, meta, test)
            logit_val, logit_test = _logit(p_raw_val), _logit(p_raw_test)
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
            if emb_val is not None and emb_test is not None:
                ood = _fit_ood(params, model, meta, train, emb_val, emb_test)
                ood.save(tmp / ood_file(mode))
                report["image_ood"] = ood.summary
                refused = ood.summary["test"]
                run.log_metrics({f"test.{mode}.ood_false_refusals": refused["refused"]})
                log.info(
                    "diagnosis %s: image OOD threshold %.1f refuses %d of %d test images, catches %d of %d "
                    "calibration images of other modalities",
                    mode,
                    ood.threshold,
                    refused["refused"],
                    refused["n"],
                    ood.summary["calibration"]["caught"],
                    ood.summary["calibration"]["n"],
                )
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

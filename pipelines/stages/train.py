"""Stage ``train``: fit a model per DVC ``foreach`` item (``shipa train diagnosis`` / ``shipa train fraud``).

Diagnosis trains one model per mode in ``train.diagnosis.modes`` (fused, image-only, EHR-only) into
``models/diagnosis/train/<mode>/``. Checkpoints live outside the DVC output (``models/.checkpoints/``), so a killed
run resumes where it stopped and a finished one removes them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import DiagnosisTrainParams, FraudTrainParams
from pipelines.errors import InputError
from pipelines.io import atomic_dir, write_json
from pipelines.stages.tracked import tracked_stage

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path("models/.checkpoints")


def _options(params: DiagnosisTrainParams, mode: str) -> Any:
    """The engine's options for one mode: the params section less what the stage itself handles."""
    from pipelines.modeling.options import TrainOptions

    return TrainOptions(**params.model_dump(exclude={"seed", "device", "modes"}), mode=mode)


def run_diagnosis(
    params: DiagnosisTrainParams, processed: Path, out_dir: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train every configured mode on ``processed/dataset.parquet``.

    Returns:
        Per mode: best epoch, best validation AUROC, epochs run, device and training samples/s.
    """
    from pipelines.modeling import engine
    from pipelines.modeling.errors import CheckpointMismatchError

    dataset, features = processed / "dataset.parquet", processed / "features.json"
    for path in (dataset, features):
        if not path.exists():
            raise InputError(f"{path}: not found (run `shipa features diagnosis` first)")
    ehr_columns = json.loads(features.read_text(encoding="utf-8"))["ehr_columns"]
    table = pl.read_parquet(dataset).filter(pl.col("split") != "test").to_pandas()
    summary: dict[str, Any] = {}
    with tracked_stage("train@diagnosis", params) as run, atomic_dir(out_dir) as tmp:
        shutil.copy2(features, tmp / "features.json")  # the scaler travels with the models (serving needs it)
        for mode in params.modes:
            ckpt = CHECKPOINT_ROOT / "diagnosis" / mode
            options = _options(params, mode)

            def on_epoch(record: Any, mode: str = mode) -> None:
                run.log_metrics(
                    {f"{mode}.{k}": v for k, v in record.to_dict().items() if k != "epoch"}, step=record.epoch
                )

            def fit(resume: bool, options: Any = options, mode: str = mode, ckpt: Path = ckpt) -> Any:
                return engine.train(
                    options,
                    table,
                    ehr_columns=ehr_columns,
                    out_dir=tmp / mode,
                    device=params.device,
                    seed=params.seed,
                    checkpoint_dir=ckpt,
                    resume=resume,
                    progress=progress,
                    on_epoch_end=on_epoch,
                )

            try:
                result = fit(True)
            except CheckpointMismatchError:
                log.warning("%s: checkpoint was made with other options or data; starting over", ckpt)
                result = fit(False)
            shutil.rmtree(ckpt, ignore_errors=True)
            history = result.history
            summary[mode] = {
                "best_epoch": result.best_epoch,
                "best_val_auroc": result.best_val_auroc,
                "epochs": len(history),
                "stopped_early": result.stopped_early,
                "device": result.device,
                "precision": result.precision,
                "train_samples_per_s": sum(r.samples_per_s for r in history) / max(len(history), 1),
            }
            log.info(
                "diagnosis %s: best val AUROC %.3f at epoch %d (%.0f samples/s)",
                mode,
                result.best_val_auroc,
                result.best_epoch,
                summary[mode]["train_samples_per_s"],
            )
        write_json(tmp / "train_summary.json", summary)
        run.log_dict(summary, "train_summary.json")
    return summary


FRAUD_MODELS = ("model", "gbm", "rules")


def run_fraud(params: FraudTrainParams, processed: Path, out_dir: Path) -> dict[str, Any]:
    """Train the fraud model and both baselines (rules, gradient-boosted trees) on the audit labels.

    Writes ``out_dir/{model,gbm,rules}/`` (each loadable with ``load_fraud_model``).
    """
    from pipelines.features.fraud import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from pipelines.modeling.engine import resolve_device
    from pipelines.modeling.fraud_baselines import GbmBaseline, GbmConfig, RulesBaseline
    from pipelines.modeling.fraud_model import FraudModelConfig, save_fraud_model, train_fraud_model

    dataset = processed / "dataset.parquet"
    if not dataset.exists():
        raise InputError(f"{dataset}: not found (run `shipa features fraud` first)")
    df = pl.read_parquet(dataset)
    tr, va = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "val")
    if tr.height == 0 or int(tr["label"].sum()) == 0:
        raise InputError(f"{dataset}: the training split has no audit-labelled fraud to learn from")
    device = str(resolve_device(params.device))
    config = FraudModelConfig.from_mapping(params.model_dump(exclude={"seed", "device", "gbm"}))
    summary: dict[str, Any] = {"train_claims": tr.height, "train_labelled": int(tr["label"].sum()), "device": device}
    with tracked_stage("train@fraud", params, device=device) as run, atomic_dir(out_dir) as tmp:
        y_tr, y_va = tr["label"].to_numpy(), va["label"].to_numpy()
        model = train_fraud_model(
            tr, y_tr, va, y_va, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES,
            config=config, seed=params.seed, device=device,
        )  # fmt: skip
        gbm = GbmBaseline.fit(
            tr, y_tr, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES,
            config=GbmConfig(**params.gbm.model_dump()), seed=params.seed,
        )  # fmt: skip
        rules = RulesBaseline.fit(tr)
        for name, fitted in zip(FRAUD_MODELS, (model, gbm, rules), strict=True):
            save_fraud_model(fitted, tmp / name)
        summary["model"] = getattr(model, "info", {})
        write_json(tmp / "train_summary.json", summary)
        run.log_dict(summary, "train_summary.json")
    return summary

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

from pipelines.config import DiagnosisTrainParams
from pipelines.errors import InputError
from pipelines.io import atomic_dir, write_json
from pipelines.stages.tracked import tracked_stage

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path("models/.checkpoints")


def _options(params: DiagnosisTrainParams, mode: str) -> Any:
    from pipelines.modeling.options import TrainOptions

    return TrainOptions(
        network=params.network,
        mode=mode,  # type: ignore[arg-type]
        image_size=params.image_size,
        embed_dim=params.embed_dim,
        ehr_hidden=params.ehr_hidden,
        dropout=params.dropout,
        epochs=params.epochs,
        batch_size=params.batch_size,
        lr=params.lr,
        weight_decay=params.weight_decay,
        scheduler=params.scheduler,
        patience=params.patience,
        augment=params.augment,
        cache=params.cache,
        num_workers=params.num_workers,
        num_threads=params.num_threads,
        precision=params.precision,
        compile=params.compile,
    )


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

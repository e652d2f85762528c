"""Stage ``train@diagnosis``: one model per mode in ``train.diagnosis.modes`` (fused, image-only, EHR-only).

Writes ``models/diagnosis/train/<mode>/``. Epoch checkpoints live beside the DVC output
(``models/diagnosis/.checkpoints/<mode>``), so a killed run resumes where it stopped and a finished one removes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import DiagnosisTrainParams
from pipelines.errors import InputError
from pipelines.io import atomic_dir, write_json
from pipelines.modeling import engine
from pipelines.modeling.errors import CheckpointMismatchError
from pipelines.modeling.options import Mode, TrainOptions
from pipelines.stages.tracked import tracked_stage

log = logging.getLogger(__name__)


def _options(params: DiagnosisTrainParams, mode: Mode) -> TrainOptions:
    """The engine's options for one mode: the params section less what the stage itself handles."""
    return TrainOptions(**params.model_dump(exclude={"seed", "device", "modes"}), mode=mode)


def run(
    params: DiagnosisTrainParams,
    processed: Path,
    out_dir: Path,
    *,
    checkpoint_dir: Path | None = None,
    progress: bool = True,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Train every configured mode on ``processed/dataset.parquet``.

    Args:
        params: the ``train.diagnosis`` section.
        processed: ``data/processed/diagnosis``.
        out_dir: ``models/diagnosis/train`` (the DVC output).
        checkpoint_dir: where per-mode epoch checkpoints live while training; default ``.checkpoints`` beside
            ``out_dir`` (outside the DVC output, so a killed run resumes and a finished one removes them).
        progress: show progress bars.
        tracking_uri: the MLflow store; None: ``MLFLOW_TRACKING_URI``, else ``<cwd>/mlflow.db``.

    Returns:
        Per mode: best epoch, best validation AUROC, epochs run, device and training samples/s.
    """
    dataset, features = processed / "dataset.parquet", processed / "features.json"
    for path in (dataset, features):
        if not path.exists():
            raise InputError(f"{path}: not found (run `shipa features diagnosis` first)")
    ehr_columns = json.loads(features.read_text(encoding="utf-8"))["ehr_columns"]
    table = pl.read_parquet(dataset).filter(pl.col("split") != "test").to_pandas()
    checkpoints = checkpoint_dir if checkpoint_dir is not None else out_dir.parent / ".checkpoints"
    summary: dict[str, Any] = {}
    speed: dict[str, float] = {}
    with tracked_stage("train@diagnosis", params, tracking_uri=tracking_uri) as run, atomic_dir(out_dir) as tmp:
        shutil.copy2(features, tmp / "features.json")  # the scaler travels with the models (serving needs it)
        for mode in params.modes:
            ckpt = checkpoints / mode
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
            }
            # Throughput goes to MLflow and the log, not to the DVC output (same training, same bytes).
            speed[mode] = sum(r.samples_per_s for r in history) / max(len(history), 1)
            run.log_metrics({f"{mode}.train_samples_per_s": speed[mode]})
            log.info(
                "diagnosis %s: best val AUROC %.3f at epoch %d (%.0f samples/s)",
                mode,
                result.best_val_auroc,
                result.best_epoch,
                speed[mode],
            )
        write_json(tmp / "train_summary.json", summary)
        run.log_dict(summary, "train_summary.json")
    with contextlib.suppress(OSError):  # the folder of every mode's checkpoints, once all are gone
        checkpoints.rmdir()
    return {mode: {**values, "train_samples_per_s": speed[mode]} for mode, values in summary.items()}

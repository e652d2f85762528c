"""The diagnosis training engine: train with checkpoints and exact resume, then load and predict.

``train`` writes into ``out_dir``: ``checkpoints/last.pt`` after every epoch (model, optimizer, scheduler,
RNG states, best weights and metric, history), ``history.json``/``history.csv`` after every epoch, and at the
end ``model.pt`` (best weights), ``model.json`` (:class:`ModelMeta`) and ``val_predictions.csv``. A run killed
at any point and started again with the same arguments resumes from the last checkpoint and ends with the same
weights as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from pipelines.modeling import distributed
from pipelines.modeling.checkpoint import (
    atomic_torch_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from pipelines.modeling.data import EHR, IMAGE, LABEL, EpochKeySampler, StudyDataset, plain_tensors
from pipelines.modeling.errors import CheckpointMismatchError, InputError, ModelingError
from pipelines.modeling.history import EpochRecord, write_history
from pipelines.modeling.networks import FusionNet, build_model
from pipelines.modeling.options import ModelMeta, TrainOptions

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
MODEL_FILE = "model.pt"
META_FILE = "model.json"
VAL_PREDICTIONS_FILE = "val_predictions.csv"
REQUIRED_COLUMNS = ("study_id", "label", "split")


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced (files are under ``out_dir``)."""

    out_dir: Path
    model_path: Path
    meta_path: Path
    history: tuple[EpochRecord, ...]
    best_epoch: int
    best_val_auroc: float
    stopped_early: bool
    resumed_from_epoch: int
    device: str
    precision: str
    channels_last: bool


@dataclass(frozen=True)
class _Split:
    study_ids: list[str]
    image_paths: list[str] | None
    ehr: np.ndarray
    labels: np.ndarray


@dataclass
class _State:
    """Mutable progress of a run; everything in it goes into the checkpoint."""

    epoch: int = 0
    best_auroc: float = -math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_val_probs: torch.Tensor | None = None
    bad_epochs: int = 0
    finished: bool = False
    stopped_early: bool = False
    history: list[EpochRecord] = field(default_factory=list)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelingError(f"device '{device}' was asked for but CUDA is not available")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``auto`` into ``bf16`` (CUDA with bf16 support, or a CPU with AMX tiles) or ``fp32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    # Without AMX, bf16 convolutions on CPU are slower than fp32.
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return "bf16" if amx is not None and amx() else "fp32"


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _as_frame(table: Any) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table
    if hasattr(table, "to_pandas"):
        return table.to_pandas()
    raise InputError(f"the study table must be a pandas or pyarrow table, got {type(table).__name__}")


def _check_table(frame: pd.DataFrame, ehr_columns: Sequence[str], uses_image: bool, uses_ehr: bool) -> None:
    needed = [*REQUIRED_COLUMNS, *(["image_path"] if uses_image else []), *ehr_columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"study table: missing column(s) {', '.join(missing)}")
    if uses_ehr and not ehr_columns:
        raise InputError("study table: a model that uses EHR needs at least one EHR column")
    if not frame["label"].isin([0, 1]).all():
        raise InputError("study table: column 'label' must hold only 0 and 1")
    if ehr_columns:
        values = frame[list(ehr_columns)]
        non_numeric = [c for c in ehr_columns if not pd.api.types.is_numeric_dtype(values[c])]
        if non_numeric:
            raise InputError(f"study table: EHR column(s) {', '.join(non_numeric)} are not numeric")
        if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
            raise InputError("study table: EHR columns hold missing or infinite values (fill them in features)")
    for split in ("train", "val"):
        labels = frame.loc[frame["split"] == split, "label"]
        if labels.nunique() < 2:
            raise InputError(f"study table: split '{split}' needs studies of both labels (has {len(labels)} rows)")


def _split(frame: pd.DataFrame, name: str, ehr_columns: Sequence[str], uses_image: bool) -> _Split:
    part = frame[frame["split"] == name]
    return _Split(
        study_ids=part["study_id"].astype(str).tolist(),
        image_paths=part["image_path"].astype(str).tolist() if uses_image else None,
        ehr=part[list(ehr_columns)].to_numpy(dtype=np.float32) if ehr_columns else np.zeros((len(part), 0), np.float32),
        labels=part["label"].to_numpy(dtype=np.float32),
    )


def _fingerprint(options: TrainOptions, ehr_columns: Sequence[str], seed: int, splits: Sequence[_Split]) -> str:
    """Hash of what decides the weights: a checkpoint is resumed only under the same fingerprint."""
    h = hashlib.sha256()
    h.update(json.dumps({"options": options.fingerprint_dict(), "ehr": list(ehr_columns), "seed": seed}).encode())
    for split in splits:
        h.update("\x1f".join(split.study_ids).encode())
        h.update(split.labels.tobytes())
        h.update(split.ehr.tobytes())
    return h.hexdigest()


def _auroc(labels: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probs))


def _to_device(batch: dict[str, torch.Tensor], device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last and IMAGE in out:
        out[IMAGE] = out[IMAGE].contiguous(memory_format=torch.channels_last)
    return out


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits: torch.Tensor = model(batch.get(IMAGE), batch.get(EHR))
    return logits


def _progress(loader: DataLoader[Any], enabled: bool, desc: str) -> Iterator[Any]:
    if not enabled:
        return iter(loader)
    from tqdm.auto import tqdm

    return iter(tqdm(loader, desc=desc, leave=False))


def _evaluate(
    model: nn.Module,
    loader: DataLoader[Any],
    criterion: nn.Module,
    device: torch.device,
    precision: str,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of every item in loader order and the summed loss, accumulated on the device."""
    model.eval()
    probs: list[torch.Tensor] = []
    loss_sum = torch.zeros((), device=device)
    with torch.inference_mode():
        for raw in loader:
            batch = _to_device(raw, device, channels_last)
            with _autocast(device, precision):
                logits = _forward(model, batch)
            logits = logits.float()
            loss_sum += criterion(logits, batch[LABEL]) * batch[LABEL].shape[0]
            probs.append(torch.sigmoid(logits))
    return (torch.cat(probs) if probs else torch.zeros(0, device=device)), loss_sum


def _make_loader(
    dataset: StudyDataset,
    sampler: Any,
    batch_size: int,
    options: TrainOptions,
    device: torch.device,
    drop_last: bool,
) -> DataLoader[Any]:
    workers = options.num_workers
    # A private generator: otherwise each new iterator draws its worker base seed from the global torch RNG
    # (once with persistent workers, every epoch without), shifting dropout masks with the worker count.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
    )


def _scheduler(
    options: TrainOptions, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if options.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=options.lr * 0.01)
    if options.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr, total_steps=total_steps)
    return None


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass(frozen=True)
class _Setup:
    """How this process runs: device, numerics, its rank, and what it reports."""

    device: torch.device
    precision: str
    channels_last: bool
    patience: int
    progress: bool
    dist_ctx: distributed.DistContext | None

    @property
    def is_main(self) -> bool:
        return self.dist_ctx is None or self.dist_ctx.is_main


@dataclass
class _Loop:
    """Everything one epoch touches."""

    model: FusionNet
    train_model: nn.Module
    eval_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    criterion: nn.Module
    sampler: EpochKeySampler
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    val_indices: list[int]
    val_labels: np.ndarray


def train(
    options: TrainOptions,
    table: Any,
    *,
    ehr_columns: Sequence[str],
    out_dir: Path,
    device: str | torch.device = "auto",
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    resume: bool = True,
    progress: bool = False,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    dist_ctx: distributed.DistContext | None = None,
) -> TrainResult:
    """Train the diagnosis model on the ``train`` split, early-stopping on the ``val`` split's AUROC.

    Args:
        options: model and training options.
        table: pandas or pyarrow table, one row per study: ``study_id``, ``label`` (0/1), ``split``
            (train/val/test; test rows are ignored), ``image_path`` (``.npy``; not needed in ``ehr`` mode) and
            the EHR columns.
        ehr_columns: the EHR feature and missingness-flag columns, in model input order.
        out_dir: output directory (created).
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of weights, data order, augmentation and dropout.
        checkpoint_dir: where ``last.pt`` lives; default ``out_dir/checkpoints``.
        resume: continue from an existing checkpoint (False: delete it and start over).
        progress: show progress bars.
        on_epoch_end: called with each epoch's record after its checkpoint is written.
        dist_ctx: set by :mod:`pipelines.modeling.ddp` on each rank of a distributed run.

    Returns:
        The run's history, best epoch and metric, and the paths of the saved model.

    Raises:
        InputError: the table lacks columns, labels or a usable split.
        CheckpointMismatchError: a checkpoint exists for other options, columns, seed or data.
    """
    from monai.utils import set_determinism

    frame = _as_frame(table)
    uses_image, uses_ehr = options.mode != "ehr", options.mode != "image"
    ehr_columns = list(ehr_columns) if uses_ehr else []
    _check_table(frame, ehr_columns, uses_image, uses_ehr)
    out_dir = Path(out_dir)
    checkpoint_path = (Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints") / "last.pt"
    dev = resolve_device(device)
    setup = _Setup(
        device=dev,
        precision=resolve_precision(options.precision, dev),
        channels_last=uses_image and (True if options.channels_last is None else options.channels_last),
        patience=options.patience,
        progress=progress and (dist_ctx is None or dist_ctx.is_main),
        dist_ctx=dist_ctx,
    )
    previous_threads = torch.get_num_threads()
    if dev.type == "cpu":
        world = dist_ctx.world_size if dist_ctx else 1
        torch.set_num_threads(options.num_threads or max(1, available_cores() // world))
    try:
        with plain_tensors():
            set_determinism(seed=seed)
            splits = (
                _split(frame, "train", ehr_columns, uses_image),
                _split(frame, "val", ehr_columns, uses_image),
            )
            fingerprint = _fingerprint(options, ehr_columns, seed, splits)
            loop = _build_loop(options, splits, seed, setup)
            state = _start_state(checkpoint_path, fingerprint, loop, resume, setup)
            resumed_from = state.epoch
            while not state.finished:
                record = _run_epoch(state, loop, setup)
                state.finished = state.stopped_early or state.epoch >= options.epochs
                if setup.is_main:
                    atomic_torch_save(_checkpoint(state, fingerprint, loop), checkpoint_path)
                    write_history(state.history, out_dir)
                    _log_epoch(record)
                distributed.barrier(dist_ctx)
                if on_epoch_end is not None:
                    on_epoch_end(record)
            meta = _meta(options, ehr_columns, seed, state, setup)
            _finish(out_dir, meta, state, splits[1], loop, setup)
    finally:
        torch.set_num_threads(previous_threads)
    return TrainResult(
        out_dir=out_dir,
        model_path=out_dir / MODEL_FILE,
        meta_path=out_dir / META_FILE,
        history=tuple(state.history),
        best_epoch=state.best_epoch,
        best_val_auroc=state.best_auroc,
        stopped_early=state.stopped_early,
        resumed_from_epoch=resumed_from,
        device=str(dev),
        precision=setup.precision,
        channels_last=setup.channels_last,
    )


def _build_loop(options: TrainOptions, splits: tuple[_Split, _Split], seed: int, setup: _Setup) -> _Loop:
    """Datasets, loaders, model (DDP- and compile-wrapped as asked), optimizer, schedule and loss."""
    train_split, val_split = splits
    ctx = setup.dist_ctx
    world, rank = (ctx.world_size, ctx.rank) if ctx else (1, 0)
    train_set, val_set = (
        StudyDataset(
            split.image_paths,
            split.ehr,
            split.labels,
            image_size=options.image_size,
            augment=options.augment and split is train_split,
            seed=seed,
            cache=options.cache,
            cache_workers=max(1, min(4, torch.get_num_threads())),
            progress=setup.progress,
        )
        for split in splits
    )
    sampler = EpochKeySampler(
        DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    )
    train_loader = _make_loader(
        train_set,
        sampler,
        options.batch_size,
        options,
        setup.device,
        drop_last=len(sampler) > options.batch_size,
    )
    val_indices = list(range(rank, len(val_split.labels), world))
    val_loader = _make_loader(val_set, val_indices, options.eval_batch_size, options, setup.device, drop_last=False)

    model = build_model(
        options.network,
        options.mode,
        train_split.ehr.shape[1],
        embed_dim=options.embed_dim,
        ehr_hidden=options.ehr_hidden,
        dropout=options.dropout,
    ).to(setup.device)
    if setup.channels_last:
        # torch's Module.to overloads omit memory_format, which it accepts at run time (a stub gap).
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    train_model: nn.Module = model
    if ctx is not None:
        device_ids = [setup.device.index] if setup.device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if options.compile:
        # torch.compile is typed as returning a callable; given a Module it returns an OptimizedModule (a Module).
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    n_pos = float(train_split.labels.sum())
    pos_weight = torch.tensor((len(train_split.labels) - n_pos) / n_pos, device=setup.device)
    return _Loop(
        model=model,
        train_model=train_model,
        # Under DDP every forward syncs buffers across ranks, and validation shards may differ in length.
        eval_model=model if ctx is not None else train_model,
        optimizer=optimizer,
        scheduler=_scheduler(options, optimizer, options.epochs * max(1, len(train_loader))),
        criterion=nn.BCEWithLogitsLoss(pos_weight=pos_weight),
        sampler=sampler,
        train_loader=train_loader,
        val_loader=val_loader,
        val_indices=val_indices,
        val_labels=val_split.labels,
    )


def _start_state(checkpoint_path: Path, fingerprint: str, loop: _Loop, resume: bool, setup: _Setup) -> _State:
    """A fresh state, or the checkpoint's with model, optimizer, schedule and generators restored."""
    if not checkpoint_path.exists():
        return _State()
    if not resume:
        distributed.barrier(setup.dist_ctx)
        if setup.is_main:
            checkpoint_path.unlink()
        return _State()
    ckpt = load_checkpoint(checkpoint_path, "cpu")
    if ckpt.get("format_version") != CHECKPOINT_FORMAT or ckpt.get("fingerprint") != fingerprint:
        raise CheckpointMismatchError(
            f"{checkpoint_path}: written for other options, EHR columns, seed or data; "
            "delete it or train with resume=False"
        )
    loop.model.load_state_dict(ckpt["model"])
    loop.optimizer.load_state_dict(ckpt["optimizer"])
    if loop.scheduler is not None:
        loop.scheduler.load_state_dict(ckpt["scheduler"])
    restore_rng_state(ckpt["rng"])
    if setup.is_main:
        log.info("resuming from %s after epoch %d", checkpoint_path, ckpt["epoch"])
    return _State(
        epoch=ckpt["epoch"],
        best_auroc=ckpt["best_auroc"],
        best_epoch=ckpt["best_epoch"],
        best_state=ckpt["best_state"],
        best_val_probs=ckpt["best_val_probs"],
        bad_epochs=ckpt["bad_epochs"],
        finished=ckpt["finished"],
        stopped_early=ckpt["stopped_early"],
        history=[EpochRecord(**r) for r in ckpt["history"]],
    )


def _log_epoch(record: EpochRecord) -> None:
    log.info(
        "epoch %d: train loss %.4f, val loss %.4f, val AUROC %.4f, lr %.2e, %.1f s, %.0f samples/s",
        record.epoch,
        record.train_loss,
        record.val_loss,
        record.val_auroc,
        record.lr,
        record.seconds,
        record.samples_per_s,
    )


def _meta(options: TrainOptions, ehr_columns: list[str], seed: int, state: _State, setup: _Setup) -> ModelMeta:
    return ModelMeta(
        network=options.network,
        mode=options.mode,
        image_size=options.image_size,
        embed_dim=options.embed_dim,
        ehr_hidden=options.ehr_hidden,
        dropout=options.dropout,
        ehr_columns=ehr_columns,
        precision=setup.precision,
        channels_last=setup.channels_last,
        best_epoch=state.best_epoch,
        best_val_auroc=state.best_auroc,
        seed=seed,
        torch_version=torch.__version__,
        monai_version=_monai_version(),
    )


def _finish(out_dir: Path, meta: ModelMeta, state: _State, val_split: _Split, loop: _Loop, setup: _Setup) -> None:
    """Rank 0 writes the model, its metadata and validation predictions; under DDP also ``ddp.json``."""
    if setup.dist_ctx is not None:
        digests = distributed.gather_objects(distributed.state_digest(loop.model.state_dict()), setup.dist_ctx)
        if setup.is_main:
            report = {"world_size": setup.dist_ctx.world_size, "state_digests": digests}
            report["in_sync"] = len(set(digests)) == 1
            atomic_write_text(out_dir / "ddp.json", json.dumps(report, indent=2) + "\n")
    if setup.is_main:
        _write_artifacts(out_dir, meta, state, val_split)
        write_history(state.history, out_dir)


def _run_epoch(state: _State, loop: _Loop, setup: _Setup) -> EpochRecord:
    """Train one epoch, validate, update ``state`` (epoch, best, patience, history) and return the record."""
    start = time.perf_counter()
    device, ctx = setup.device, setup.dist_ctx
    loop.sampler.set_epoch(state.epoch)
    lr = float(loop.optimizer.param_groups[0]["lr"])
    loop.train_model.train()
    loss_sum = torch.zeros((), device=device)
    seen = 0
    # No .item() in this loop: the loss is summed on the device and read once per epoch.
    for raw in _progress(loop.train_loader, setup.progress, f"epoch {state.epoch + 1}"):
        batch = _to_device(raw, device, setup.channels_last)
        with _autocast(device, setup.precision):
            logits = _forward(loop.train_model, batch)
        loss = loop.criterion(logits.float(), batch[LABEL])
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        if loop.scheduler is not None:
            loop.scheduler.step()
        loss_sum += loss.detach() * batch[LABEL].shape[0]
        seen += batch[LABEL].shape[0]
    totals = distributed.all_reduce_sum(torch.stack([loss_sum, torch.tensor(float(seen), device=device)]), ctx)
    train_loss, seen_all = (float(v) for v in totals.cpu())
    train_seconds = time.perf_counter() - start

    distributed.broadcast_buffers(loop.model, ctx)
    probs, val_loss_sum = _evaluate(
        loop.eval_model, loop.val_loader, loop.criterion, device, setup.precision, setup.channels_last
    )
    all_probs = torch.zeros(len(loop.val_labels), dtype=torch.float32)
    val_loss = 0.0
    for indices, part, part_loss in distributed.gather_objects(
        (loop.val_indices, probs.cpu(), float(val_loss_sum)), ctx
    ):
        all_probs[indices] = part
        val_loss += part_loss / len(loop.val_labels)
    auroc = _auroc(loop.val_labels, all_probs.numpy())

    state.epoch += 1
    if auroc > state.best_auroc:
        state.best_auroc, state.best_epoch, state.bad_epochs = auroc, state.epoch, 0
        state.best_state = _cpu_copy(loop.model.state_dict())
        state.best_val_probs = all_probs
    else:
        state.bad_epochs += 1
    state.stopped_early = state.bad_epochs >= setup.patience
    record = EpochRecord(
        epoch=state.epoch,
        train_loss=train_loss / max(seen_all, 1.0),
        val_loss=val_loss,
        val_auroc=auroc,
        lr=lr,
        seconds=time.perf_counter() - start,
        samples_per_s=seen_all / train_seconds if train_seconds > 0 else 0.0,
    )
    state.history.append(record)
    return record


def _checkpoint(state: _State, fingerprint: str, loop: _Loop) -> dict[str, Any]:
    return {
        "format_version": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epoch": state.epoch,
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict() if loop.scheduler is not None else None,
        "rng": capture_rng_state(),
        "best_auroc": state.best_auroc,
        "best_epoch": state.best_epoch,
        "best_state": state.best_state,
        "best_val_probs": state.best_val_probs,
        "bad_epochs": state.bad_epochs,
        "finished": state.finished,
        "stopped_early": state.stopped_early,
        "history": [r.to_dict() for r in state.history],
    }


def _write_artifacts(out_dir: Path, meta: ModelMeta, state: _State, val_split: _Split) -> None:
    if state.best_state is None or state.best_val_probs is None:
        raise ModelingError("training ended without a validated epoch; nothing to save")
    atomic_torch_save(state.best_state, out_dir / MODEL_FILE)
    atomic_write_text(out_dir / META_FILE, meta.model_dump_json(indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["study_id", "label", "probability"])
    for study_id, label, prob in zip(
        val_split.study_ids, val_split.labels.astype(int), state.best_val_probs.tolist(), strict=True
    ):
        writer.writerow([study_id, label, repr(float(prob))])
    atomic_write_text(out_dir / VAL_PREDICTIONS_FILE, buffer.getvalue())


def _monai_version() -> str:
    import monai

    return str(monai.__version__)


def load_model(model_dir: Path, device: str | torch.device = "cpu") -> tuple[FusionNet, ModelMeta]:
    """Rebuild a trained model from ``model.json`` and ``model.pt``, in eval mode on ``device``.

    Raises:
        ModelingError: a file is missing or does not match the architecture.
    """
    model_dir = Path(model_dir)
    meta_path, weights_path = model_dir / META_FILE, model_dir / MODEL_FILE
    for path in (meta_path, weights_path):
        if not path.exists():
            raise ModelingError(f"{path}: not found (train the model first)")
    meta = ModelMeta.model_validate_json(meta_path.read_text(encoding="utf-8"))
    model = build_model(
        meta.network,
        meta.mode,
        len(meta.ehr_columns),
        embed_dim=meta.embed_dim,
        ehr_hidden=meta.ehr_hidden,
        dropout=meta.dropout,
        in_channels=meta.in_channels,
    )
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelingError(f"{weights_path}: weights do not fit the architecture in {meta_path}") from exc
    dev = resolve_device(device)
    model = model.to(dev)
    if meta.channels_last:
        # torch's Module.to overloads omit memory_format, which it accepts at run time (a stub gap).
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.eval(), meta


def predict(
    model: nn.Module,
    meta: ModelMeta,
    table: Any,
    *,
    batch_size: int = 256,
    precision: str | None = None,
) -> np.ndarray:
    """Probability of the positive class for every row of ``table``, in row order.

    Preprocessing is the training chain without augmentation; the model runs in eval mode without gradients,
    in batches, on the device its parameters are on, at the precision it was validated with unless told
    otherwise.

    Args:
        model: from :func:`load_model`.
        meta: from :func:`load_model`.
        table: rows with ``image_path`` (unless mode is ``ehr``) and ``meta.ehr_columns``.
        batch_size: studies per forward pass.
        precision: ``fp32`` or ``bf16``; default ``meta.precision``.
    """
    frame = _as_frame(table)
    uses_image = meta.mode != "ehr"
    needed = [*(["image_path"] if uses_image else []), *meta.ehr_columns]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"prediction table: missing column(s) {', '.join(missing)}")
    return predict_arrays(
        model,
        meta,
        frame["image_path"].astype(str).tolist() if uses_image else None,
        frame[meta.ehr_columns].to_numpy(dtype=np.float32) if meta.ehr_columns else None,
        n=len(frame),
        batch_size=batch_size,
        precision=precision,
    )


def predict_arrays(
    model: nn.Module,
    meta: ModelMeta,
    images: Sequence[np.ndarray | str | Path] | None,
    ehr: np.ndarray | None,
    *,
    n: int | None = None,
    batch_size: int = 256,
    precision: str | None = None,
) -> np.ndarray:
    """Like :func:`predict`, for studies held in memory (the service's path: same preprocessing, same model).

    Args:
        model: from :func:`load_model`.
        meta: from :func:`load_model`.
        images: one 2-D array (or ``.npy`` path) per study; ``None`` for an ``ehr`` model.
        ehr: ``(n_studies, len(meta.ehr_columns))`` values in ``meta.ehr_columns`` order; ``None`` for an
            ``image`` model.
        n: number of studies when neither input gives it.
        batch_size: studies per forward pass.
        precision: ``fp32`` or ``bf16``; default ``meta.precision``.

    Raises:
        InputError: an input the model needs is missing or has the wrong width.
    """
    if meta.mode != "ehr" and images is None:
        raise InputError(f"a '{meta.mode}' model needs images")
    count = len(images) if images is not None else (len(ehr) if ehr is not None else (n or 0))
    if meta.ehr_columns:
        if ehr is None or np.asarray(ehr).shape != (count, len(meta.ehr_columns)):
            raise InputError(f"EHR input must have shape ({count}, {len(meta.ehr_columns)})")
        features = np.asarray(ehr, dtype=np.float32)
    else:
        features = np.zeros((count, 0), dtype=np.float32)
    dev = next(model.parameters()).device
    dataset = StudyDataset(
        images if meta.mode != "ehr" else None,
        features,
        np.zeros(count, dtype=np.float32),
        image_size=meta.image_size,
        cache=False,
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, pin_memory=dev.type == "cuda")
    use_precision = precision or meta.precision
    model.eval()
    out: list[torch.Tensor] = []
    with plain_tensors(), torch.inference_mode():
        for raw in loader:
            batch = _to_device(raw, dev, meta.channels_last)
            with _autocast(dev, use_precision):
                logits = _forward(model, batch)
            out.append(torch.sigmoid(logits.float()))
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).cpu().numpy().astype(np.float64)

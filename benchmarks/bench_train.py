"""Shipa's training loop against a plain MONAI-tutorial loop: same model, data, recipe and seed, one run.

The baseline is what a MONAI tutorial writes: ``Dataset`` + ``DataLoader`` with the whole transform chain run
for every item (LoadImaged with NumpyReader, no cache), MetaTensors all the way into the network, fp32,
NCHW tensors, torch's default thread count, and ``loss.item()`` every step. The recipe is the same
on both sides (the fused image + EHR network, AdamW with the same per-step cosine schedule, pos_weight, batch
size, augmentations, seed), so what differs is engineering: threads, bf16 autocast on AMX, channels-last,
plain tensors, caching of the deterministic preprocessing, no host syncs.

Reported: training samples/s (median of the epochs after the first), time from start to the first validation
AUROC at or above the target, and the ratios; plus a compute-only row (forward+backward on one in-memory
batch) that shows how much of the gain is compute, with caching out of the picture.

    python benchmarks/bench_train.py                      # DenseNet121 at 64 px, about 2-3 minutes on 2 cores
    python benchmarks/bench_train.py --network densenet-tiny --n 300 --epochs 4   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.modeling.engine import resolve_precision, train
from pipelines.modeling.history import EpochRecord
from pipelines.modeling.networks import build_model
from pipelines.modeling.options import TrainOptions
from pipelines.modeling.synthetic import EHR_COLUMNS, make_study_table

log = logging.getLogger("bench_train")


@dataclass
class LoopResult:
    """Per-epoch timings of one loop; times are seconds since the loop started (data set-up included)."""

    name: str
    threads: int
    epoch_end: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    train_samples: list[int] = field(default_factory=list)
    val_auroc: list[float] = field(default_factory=list)

    def samples_per_s(self) -> float:
        """Median training throughput of the epochs after the first (warm-up, caching, compilation excluded).

        The median, because on a shared machine a burst of load from another process can slow one epoch.
        """
        return float(np.median(self._rates()))

    def best_samples_per_s(self) -> float:
        """Throughput of the fastest epoch after the first: the least disturbed by other load."""
        return max(self._rates())

    def _rates(self) -> list[float]:
        skip = 1 if len(self.train_seconds) > 1 else 0
        return [n / s for n, s in zip(self.train_samples[skip:], self.train_seconds[skip:], strict=True)]

    def time_to(self, target: float) -> tuple[float | None, int | None]:
        """Seconds and epochs until validation AUROC first reached ``target`` (``None`` if it never did)."""
        for i, auroc in enumerate(self.val_auroc):
            if auroc >= target:
                return self.epoch_end[i], i + 1
        return None, None


def _options(args: argparse.Namespace, *, threads: int, precision: str, compile_model: bool) -> TrainOptions:
    return TrainOptions(
        network=args.network,
        mode="fused",
        image_size=args.size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        scheduler="cosine",
        patience=args.epochs,
        augment=True,
        num_workers=0,
        num_threads=threads,
        precision=precision,  # type: ignore[arg-type]
        compile=compile_model,
    )


def run_shipa(table: Any, args: argparse.Namespace, out_dir: Path, *, threads: int, precision: str) -> LoopResult:
    """Shipa's engine, as the ``train`` stage runs it."""
    options = _options(args, threads=threads, precision=precision, compile_model=args.compile)
    result = LoopResult(name=f"shipa ({precision}, {threads} thr)", threads=threads)
    start = time.perf_counter()

    def on_epoch_end(record: EpochRecord) -> None:
        result.epoch_end.append(time.perf_counter() - start)
        result.val_auroc.append(record.val_auroc)

    history = train(
        options,
        table,
        ehr_columns=EHR_COLUMNS,
        out_dir=out_dir,
        device="cpu",
        seed=args.seed,
        resume=False,
        on_epoch_end=on_epoch_end,
    ).history
    # The engine drops the last partial batch, as the baseline's loader does.
    n_train = (len(table[table["split"] == "train"]) // args.batch_size) * args.batch_size
    result.train_samples = [n_train] * len(history)
    result.train_seconds = [n_train / r.samples_per_s for r in history]
    return result


def run_baseline(table: Any, args: argparse.Namespace, pos_weight: float) -> LoopResult:
    """The MONAI-tutorial loop (see the module docstring)."""
    from monai.data import DataLoader, Dataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        RandFlipd,
        RandRotated,
        RandZoomd,
        Resized,
        ScaleIntensityd,
    )
    from monai.utils import set_determinism
    from sklearn.metrics import roc_auc_score

    set_determinism(seed=args.seed)
    threads = torch.get_num_threads()
    result = LoopResult(name=f"monai tutorial (fp32, {threads} thr)", threads=threads)
    start = time.perf_counter()
    keys = ["image"]
    base = [
        LoadImaged(keys, reader="NumpyReader"),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
        ScaleIntensityd(keys),
        Resized(keys, spatial_size=(args.size, args.size)),
    ]
    augment = [
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotated(keys, range_x=0.26, prob=0.5, padding_mode="border"),
        RandZoomd(keys, prob=0.5, min_zoom=0.9, max_zoom=1.1, padding_mode="edge"),
    ]

    def items(split: str) -> list[dict[str, Any]]:
        part = table[table["split"] == split]
        ehr = part[list(EHR_COLUMNS)].to_numpy(np.float32)
        return [
            {"image": p, "ehr": e, "label": np.float32(y)}
            for p, e, y in zip(part["image_path"], ehr, part["label"], strict=True)
        ]

    train_loader = DataLoader(
        Dataset(items("train"), Compose(base + augment)),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
    )
    val_loader = DataLoader(Dataset(items("val"), Compose(base)), batch_size=128)
    model = build_model(args.network, "fused", len(EHR_COLUMNS), embed_dim=32, ehr_hidden=32, dropout=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    total_steps = args.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=args.lr * 0.01)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
    for _ in range(args.epochs):
        model.train()
        epoch_start = time.perf_counter()
        epoch_loss, seen = 0.0, 0
        for batch in train_loader:
            optimizer.zero_grad()
            outputs = model(batch["image"], batch["ehr"])
            loss = loss_fn(outputs, batch["label"])
            loss.backward()
            optimizer.step()
            scheduler.step()
            epoch_loss += loss.item()
            seen += len(batch["label"])
        result.train_seconds.append(time.perf_counter() - epoch_start)
        result.train_samples.append(seen)
        model.eval()
        probs, labels = [], []
        with torch.no_grad():
            for batch in val_loader:
                probs.append(torch.sigmoid(model(batch["image"], batch["ehr"])).as_tensor())
                labels.append(batch["label"])
        result.val_auroc.append(float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(probs).numpy())))
        result.epoch_end.append(time.perf_counter() - start)
        log.info("baseline epoch: loss %.4f, val AUROC %.4f", epoch_loss / len(train_loader), result.val_auroc[-1])
    return result


def compute_only(args: argparse.Namespace, *, threads: int, precision: str, baseline_threads: int) -> dict[str, float]:
    """Images/s of forward+backward+step on one in-memory batch: baseline settings vs Shipa's settings.

    The two are measured in alternation and each keeps its fastest step, so a burst of load from another
    process on the machine does not land on one side only.
    """
    from monai.data import MetaTensor

    def setup(meta: bool, channels_last: bool) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(args.network, "fused", len(EHR_COLUMNS), embed_dim=32, ehr_hidden=32)
        image = torch.rand(args.batch_size, 1, args.size, args.size)
        ehr = torch.randn(args.batch_size, len(EHR_COLUMNS))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            image = image.contiguous(memory_format=torch.channels_last)
        if meta:
            image, ehr = MetaTensor(image), MetaTensor(ehr)
        return model, torch.optim.AdamW(model.parameters(), lr=1e-4), image, ehr

    target = torch.rand(args.batch_size)

    def step(setup_: tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], bf16: bool) -> float:
        model, optimizer, image, ehr = setup_
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(image, ehr)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    base, fast = setup(meta=True, channels_last=False), setup(meta=False, channels_last=True)
    base_times, fast_times = [], []
    for _ in range(args.compute_steps):
        torch.set_num_threads(baseline_threads)
        base_times.append(step(base, bf16=False))
        torch.set_num_threads(threads)
        fast_times.append(step(fast, bf16=precision == "bf16"))
    torch.set_num_threads(baseline_threads)
    base_rate, fast_rate = args.batch_size / min(base_times[1:]), args.batch_size / min(fast_times[1:])
    return {"baseline_img_s": base_rate, "shipa_img_s": fast_rate, "ratio": fast_rate / base_rate}


def _fmt(value: float | None, unit: str = "") -> str:
    return "never" if value is None else f"{value:.1f}{unit}"


def main() -> None:
    """Run both loops on one synthetic data set and print (and optionally save) the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="densenet121")
    parser.add_argument("--size", type=int, default=64, help="training image size (px)")
    parser.add_argument("--n", type=int, default=480, help="synthetic studies (60%% train, 20%% val, 20%% test)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--target", type=float, default=0.95, help="validation AUROC to reach")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="Shipa's torch threads; 0 = the baseline's (torch's default): threads held equal",
    )
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile in Shipa's loop")
    parser.add_argument("--compute-steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pipelines").setLevel(logging.WARNING)

    baseline_threads = torch.get_num_threads()
    threads = args.threads or baseline_threads
    precision = resolve_precision(args.precision, torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        table = make_study_table(Path(tmp), n=args.n, size=128, seed=args.seed, val_share=0.2, test_share=0.2)
        labels = table.loc[table["split"] == "train", "label"]
        pos_weight = float((labels == 0).sum() / (labels == 1).sum())
        log.info(
            "data: %d studies, 128 px on disk, trained at %d px; network %s",
            len(table),
            args.size,
            args.network,
        )
        baseline = run_baseline(table, args, pos_weight)
        torch.set_num_threads(baseline_threads)
        shipa = run_shipa(table, args, Path(tmp) / "shipa", threads=threads, precision=precision)
        compute = compute_only(args, threads=threads, precision=precision, baseline_threads=baseline_threads)

    rows = []
    for loop in (baseline, shipa):
        seconds, epochs = loop.time_to(args.target)
        rows.append(
            {
                "loop": loop.name,
                "samples_per_s": loop.samples_per_s(),
                "best_epoch_samples_per_s": loop.best_samples_per_s(),
                "time_to_target_s": seconds,
                "epochs_to_target": epochs,
                "val_auroc": loop.val_auroc,
                "total_s": loop.epoch_end[-1],
            }
        )
    speed_ratio = rows[1]["samples_per_s"] / rows[0]["samples_per_s"]
    best_ratio = rows[1]["best_epoch_samples_per_s"] / rows[0]["best_epoch_samples_per_s"]
    t_base, t_shipa = rows[0]["time_to_target_s"], rows[1]["time_to_target_s"]
    target_ratio = t_base / t_shipa if t_base and t_shipa else None

    print(f"\n{args.network} at {args.size} px, n={args.n}, batch {args.batch_size}, {args.epochs} epochs, CPU")
    target = f"to AUROC>={args.target}"
    print(f"{'loop':32} {'samples/s median':>16} {'best':>7} {target:>16} {'epochs':>6}  val AUROC per epoch")
    for row in rows:
        curve = " ".join(f"{a:.3f}" for a in row["val_auroc"])
        print(
            f"{row['loop']:32} {row['samples_per_s']:16.1f} {row['best_epoch_samples_per_s']:7.1f} "
            f"{_fmt(row['time_to_target_s'], ' s'):>16} {row['epochs_to_target'] or '-':>6}  {curve}"
        )
    print(
        f"ratio (shipa / baseline): throughput {speed_ratio:.2f}x (best epochs {best_ratio:.2f}x), "
        f"time to target {_fmt(target_ratio, 'x')}"
    )
    print(
        f"compute only (one batch in memory): baseline {compute['baseline_img_s']:.1f} img/s, "
        f"shipa {compute['shipa_img_s']:.1f} img/s, {compute['ratio']:.2f}x"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "loops": rows,
                    "throughput_ratio": speed_ratio,
                    "best_epoch_throughput_ratio": best_ratio,
                    "time_to_target_ratio": target_ratio,
                    "compute_only": compute,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()

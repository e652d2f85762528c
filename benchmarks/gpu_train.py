"""GPU training throughput: Shipa's settings (bf16 autocast, channels-last, no host syncs) vs plain fp32.

DenseNet121 (inside the fused image + EHR network Shipa trains) at 224 px by default, on synthetic
batches that start in pinned host memory and are copied each step as a DataLoader would deliver them.
Reports images/s, mean GPU utilisation (pynvml if installed, else ``nvidia-smi``) and peak memory for each
loop, and the ratio. Takes about a minute on one modern GPU; exits cleanly with a message where there is no
CUDA device.

    python benchmarks/gpu_train.py [--network densenet121] [--size 224] [--batch-size 64] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipelines.modeling.networks import build_model


class UtilisationSampler:
    """Samples GPU utilisation (%) in a background thread while a loop runs."""

    def __init__(self, device_index: int, interval_s: float = 0.2) -> None:
        """Pick pynvml if importable, else ``nvidia-smi``; with neither, report nothing."""
        self._index = device_index
        self._interval = interval_s
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read: Callable[[], float | None] = self._reader()

    def _reader(self) -> Callable[[], float | None]:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self._index)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # pynvml missing or unusable: fall back to the CLI
            smi = shutil.which("nvidia-smi")
            if smi is None:
                return lambda: None

            def query() -> float | None:
                out = subprocess.run(
                    [
                        smi,
                        "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits",
                        f"--id={self._index}",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                try:
                    return float(out.stdout.strip().splitlines()[0])
                except (ValueError, IndexError):
                    return None

            return query

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self._samples.append(value)
            self._stop.wait(self._interval)

    def __enter__(self) -> UtilisationSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def mean(self) -> float | None:
        """Mean utilisation over the samples taken (``None`` when none could be read)."""
        return sum(self._samples) / len(self._samples) if self._samples else None


def run_loop(args: argparse.Namespace, device: torch.device, *, shipa: bool) -> dict[str, Any]:
    """Train for ``args.seconds`` after warm-up; return images/s, utilisation and peak memory."""
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    model = build_model(args.network, "fused", 4, embed_dim=32, ehr_hidden=32, dropout=0.1).to(device)
    memory_format = torch.channels_last if shipa else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    n_batches = 8
    images = [torch.rand(args.batch_size, 1, args.size, args.size).pin_memory() for _ in range(n_batches)]
    ehr = [torch.randn(args.batch_size, 4).pin_memory() for _ in range(n_batches)]
    labels = [torch.randint(0, 2, (args.batch_size,)).float().pin_memory() for _ in range(n_batches)]

    def step(i: int, running: torch.Tensor | float) -> torch.Tensor | float:
        k = i % n_batches
        x = images[k].to(device, non_blocking=shipa).contiguous(memory_format=memory_format)
        e = ehr[k].to(device, non_blocking=shipa)
        y = labels[k].to(device, non_blocking=shipa)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=shipa):
            logits = model(x, e)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # The plain loop reads the loss every step (a host sync) as tutorials do; Shipa sums it on the GPU.
        return running + loss.detach() if shipa else running + loss.item()

    model.train()
    running: torch.Tensor | float = torch.zeros((), device=device) if shipa else 0.0
    for i in range(args.warmup):
        running = step(i, running)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    steps = 0
    with UtilisationSampler(device.index or 0) as sampler:
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            for _ in range(5):
                running = step(steps, running)
                steps += 1
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
    float(running)
    return {
        "loop": "shipa (bf16 autocast, channels-last)" if shipa else "plain fp32",
        "images_per_s": steps * args.batch_size / elapsed,
        "gpu_utilisation_pct": sampler.mean(),
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "steps": steps,
    }


def main() -> int:
    """Run both loops and print the comparison; exit 0 with a message when there is no CUDA device."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="densenet121")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per loop")
    parser.add_argument("--warmup", type=int, default=10, help="steps before measuring")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(f"gpu_train: no CUDA device here (torch {torch.__version__}); nothing to measure.")
        return 0
    device = torch.device("cuda", 0)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.network} at {args.size} px")
    plain = run_loop(args, device, shipa=False)
    torch.cuda.empty_cache()
    fast = run_loop(args, device, shipa=True)
    for row in (plain, fast):
        util = row["gpu_utilisation_pct"]
        print(
            f"{row['loop']:38} {row['images_per_s']:9.1f} img/s  "
            f"GPU util {'n/a' if util is None else f'{util:.0f} %':>6}  peak {row['peak_memory_gib']:.2f} GiB"
        )
    ratio = fast["images_per_s"] / plain["images_per_s"]
    print(f"ratio (shipa / plain): {ratio:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "loops": [plain, fast]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

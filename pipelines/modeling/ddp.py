"""Multi-process training with DistributedDataParallel, launched by torchrun.

``torchrun --nproc_per_node N --standalone -m pipelines.modeling.ddp --table T --out-dir D [--options O]``
starts N ranks; each calls :func:`run`, which joins the process group (NCCL on CUDA, gloo on CPU) and runs
the ordinary :func:`pipelines.modeling.engine.train` with a :class:`DistContext`. The engine then shards the
training set with ``DistributedSampler``, wraps the model in DDP, shards validation and gathers it, and lets
rank 0 alone write checkpoints and artifacts. At the end rank 0 writes ``ddp.json`` with a digest of every
rank's final weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from pipelines.modeling.engine import TrainResult
    from pipelines.modeling.options import TrainOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Whether this rank writes files and logs."""
        return self.rank == 0


def context_from_env(env: Mapping[str, str]) -> DistContext | None:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``None`` when not launched by torchrun."""
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    return DistContext(
        rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]), local_rank=int(env.get("LOCAL_RANK", "0"))
    )


def init_process_group(ctx: DistContext, device: torch.device) -> torch.device:
    """Join the process group (address from torchrun's environment) and return this rank's device."""
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", rank=ctx.rank, world_size=ctx.world_size
        )
    return device


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext | None) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op without a context)."""
    if ctx is not None:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(obj: Any, ctx: DistContext | None) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without a context)."""
    if ctx is None:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module, ctx: DistContext | None) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step each rank holds the
    statistics of its own last batch; validation and the saved weights need one set.
    """
    if ctx is None:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext | None) -> None:
    """Wait for every rank (no-op without a context)."""
    if ctx is not None:
        dist.barrier()


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes: equal digests mean identical weights."""
    h = hashlib.sha256()
    for name, tensor in state.items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run(
    options: TrainOptions,
    table: Any,
    *,
    ehr_columns: Sequence[str],
    out_dir: Path,
    seed: int,
    device: str = "auto",
    env: Mapping[str, str],
    progress: bool = False,
) -> TrainResult:
    """Train on every rank of a torchrun launch (or in one process when ``env`` names no ranks).

    Args:
        options: training options (``batch_size`` is per rank).
        table: the study table (every rank reads the same one).
        ehr_columns: EHR feature columns.
        out_dir: where rank 0 writes checkpoints and artifacts.
        seed: the run seed (identical on every rank).
        device: ``auto``, ``cpu`` or ``cuda``.
        env: the launcher's environment (``os.environ`` from the entry point).
        progress: progress bars on rank 0.
    """
    from pipelines.modeling.engine import resolve_device, train

    ctx = context_from_env(env)
    if ctx is None or ctx.world_size == 1:
        return train(
            options,
            table,
            ehr_columns=ehr_columns,
            out_dir=out_dir,
            device=device,
            seed=seed,
            progress=progress,
        )
    rank_device = init_process_group(ctx, resolve_device(device))
    try:
        return train(
            options,
            table,
            ehr_columns=ehr_columns,
            out_dir=out_dir,
            device=str(rank_device),
            seed=seed,
            dist_ctx=ctx,
            progress=progress,
        )
    finally:
        dist.destroy_process_group()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.modeling.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="study table (.parquet or .csv)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--options", type=Path, help="JSON file of TrainOptions fields")
    parser.add_argument("--ehr-columns", default=None, help="comma-separated; default: every ehr_* and miss_* column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point for torchrun: read the table and options, train on this rank."""
    import pandas as pd

    from pipelines.logging_setup import configure_logging
    from pipelines.modeling.options import TrainOptions

    args = _parse_args(argv)
    configure_logging("INFO" if os.environ.get("RANK", "0") == "0" else "WARNING")
    table = pd.read_parquet(args.table) if args.table.suffix == ".parquet" else pd.read_csv(args.table)
    options = TrainOptions(**json.loads(args.options.read_text(encoding="utf-8"))) if args.options else TrainOptions()
    columns = (
        args.ehr_columns.split(",")
        if args.ehr_columns
        else [c for c in table.columns if c.startswith(("ehr_", "miss_"))]
    )
    run(
        options,
        table,
        ehr_columns=columns,
        out_dir=args.out_dir,
        seed=args.seed,
        device=args.device,
        env=os.environ,
    )


if __name__ == "__main__":
    main()

"""Multi-process training with DistributedDataParallel, launched by torchrun.

``torchrun --nproc_per_node N --standalone -m pipelines.modeling.ddp --table T --out-dir D [--options O]``
starts N ranks; each calls :func:`run`, which joins the process group (NCCL on CUDA, gloo on CPU) and runs
the ordinary :func:`pipelines.modeling.engine.train` with a :class:`~pipelines.modeling.distributed.DistContext`.
The engine then shards the training set with ``DistributedSampler``, wraps the model in DDP, shards validation
and gathers it, and lets rank 0 alone write checkpoints and artifacts. At the end rank 0 writes ``ddp.json``
with a digest of every rank's final weights. The primitives the engine itself calls live in
:mod:`pipelines.modeling.distributed`, so this launcher imports the engine and the engine never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from pipelines.modeling.distributed import context_from_env, init_process_group
from pipelines.modeling.engine import TrainResult, resolve_device, train
from pipelines.modeling.options import TrainOptions


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

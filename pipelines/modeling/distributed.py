"""Distributed-training primitives the engine calls: a rank's context, process group, collectives, digests.

Every helper is a no-op (or a one-element answer) without a :class:`DistContext`, so the engine runs the
same code in one process. The torchrun launcher that calls the engine is :mod:`pipelines.modeling.ddp`; it
lives apart so that imports go one way (``ddp`` -> ``engine`` -> ``distributed``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


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

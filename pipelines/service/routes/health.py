"""Liveness: the only endpoint without a token."""

from __future__ import annotations

from fastapi import APIRouter

from pipelines.service.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    """The process is up (no token needed, no dependencies checked)."""
    return HealthOut()

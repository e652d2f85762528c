"""Readiness, model cards and model reload."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from pipelines.service.deps import AdminPrincipal, CurrentPrincipal, ModelSourceDep
from pipelines.service.errors import FhirHTTPError
from pipelines.service.heap import resettle_if_frozen
from pipelines.service.model_source import ModelSource
from pipelines.service.schemas import ERROR_RESPONSES, ModelsOut, OperationOutcomeOut, ReadyOut
from pipelines.service.server import restart_other_workers

log = logging.getLogger(__name__)
router = APIRouter(tags=["models"], responses=ERROR_RESPONSES)
_NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": OperationOutcomeOut, "description": "models not loaded"}}


def _checked_state(state: dict[str, Any]) -> ReadyOut:
    if not state.get("ready"):
        reason = str(state.get("reason") or "models are not loaded")
        raise FhirHTTPError(503, "transient", f"not ready: {reason}")
    try:
        return ReadyOut.model_validate({"ready": True, "models": state.get("models", [])})
    except ValidationError:
        # A provider bug, not the client's: never let it surface as a 422 about the request.
        log.error("model provider returned an unusable ready state")
        raise FhirHTTPError(503, "transient", "model provider returned an unusable state; see the log") from None


def _call(provider: ModelSource, what: str) -> dict[str, Any]:
    try:
        return provider.reload() if what == "reload" else provider.ready()
    except Exception as exc:
        # The provider's message may carry paths or URIs: log its type only, answer generically.
        log.error("model provider %s failed: %s", what, type(exc).__name__)
        raise FhirHTTPError(503, "transient", f"model {what} failed; see the service log") from None


@router.get("/ready", response_model=ReadyOut, responses=_NOT_READY)
def ready(_principal: CurrentPrincipal, provider: ModelSourceDep) -> ReadyOut:
    """Whether the models are loaded, with their names, versions and aliases (503 if not)."""
    return _checked_state(_call(provider, "ready"))


@router.get("/models", response_model=ModelsOut, responses=_NOT_READY)
def models(_principal: CurrentPrincipal, provider: ModelSourceDep) -> ModelsOut:
    """The machine-readable model cards of the served models."""
    try:
        cards = provider.cards()
    except Exception as exc:
        log.error("model provider cards failed: %s", type(exc).__name__)
        raise FhirHTTPError(503, "transient", "model cards are not available; see the service log") from None
    return ModelsOut(models=cards)


@router.post("/admin/reload", response_model=ReadyOut, responses=_NOT_READY)
def reload(principal: AdminPrincipal, provider: ModelSourceDep) -> ReadyOut:
    """Load the champion models again (admin only) and return the new readiness."""
    log.info("model reload requested by token %s", principal.name)
    state = _call(provider, "reload")
    resettle_if_frozen()  # the old models can go, the new ones join the frozen heap
    checked = _checked_state(state)
    restart_other_workers()  # with `shipa serve --workers N`, every worker must load the champions too
    return checked

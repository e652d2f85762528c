"""Response shapes of the infrastructure endpoints (documented in the OpenAPI schema at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class OutcomeIssue(BaseModel):
    """One OperationOutcome.issue."""

    severity: Literal["fatal", "error", "warning", "information"]
    code: str
    diagnostics: str
    expression: list[str] | None = None


class OperationOutcomeOut(BaseModel):
    """The FHIR OperationOutcome every error response carries."""

    resourceType: Literal["OperationOutcome"] = "OperationOutcome"  # FHIR's own field name
    issue: list[OutcomeIssue]


class HealthOut(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class ModelRef(BaseModel):
    """A served model."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), coerce_numbers_to_str=True)

    name: str
    version: str
    alias: str | None = None


class ReadyOut(BaseModel):
    """Readiness: the served models."""

    ready: bool
    models: list[ModelRef]


class ModelsOut(BaseModel):
    """The model cards of the served models."""

    models: list[dict[str, Any]]


class VerifyOut(BaseModel):
    """The result of walking the audit chain."""

    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None
    head_hash: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": OperationOutcomeOut, "description": "missing, unknown or revoked token"},
    403: {"model": OperationOutcomeOut, "description": "the token's role may not call this endpoint"},
    429: {"model": OperationOutcomeOut, "description": "rate limit of the token exceeded"},
}

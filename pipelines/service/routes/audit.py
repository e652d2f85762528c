"""Audit log read endpoints (auditor role): search as a FHIR Bundle of AuditEvents, and chain verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from pipelines.predictionlog.roles import Role
from pipelines.service.deps import AuditorPrincipal, PredictionLogDep
from pipelines.service.outcome import FHIR_JSON
from pipelines.service.schemas import ERROR_RESPONSES, VerifyOut

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)

OUTCOME_PATTERN = r"^(0|4|8|12|success|minor_failure|serious_failure|major_failure)$"


def _page_url(request: Request, page: int) -> str:
    return str(request.url.include_query_params(page=page))


@router.get("/events", response_model=None)
def events(
    request: Request,
    _principal: AuditorPrincipal,
    audit_log: PredictionLogDep,
    start: Annotated[datetime | None, Query(description="earliest time, inclusive (ISO 8601)")] = None,
    end: Annotated[datetime | None, Query(description="latest time, exclusive (ISO 8601)")] = None,
    model: Annotated[str | None, Query(max_length=200, description="registered model name")] = None,
    role: Annotated[Role | None, Query(description="role of the calling token")] = None,
    outcome: Annotated[str | None, Query(pattern=OUTCOME_PATTERN, description="0/4/8/12 or its name")] = None,
    token: Annotated[str | None, Query(max_length=64, description="token name")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    format: Annotated[Literal["fhir", "json"], Query(description="fhir: a Bundle; json: plain records")] = "fhir",
) -> JSONResponse:
    """Page through the audit log, newest first, as a FHIR searchset Bundle of AuditEvents (or plain JSON)."""
    result = audit_log.query(
        start=start,
        end=end,
        model=model,
        role=role.value if role else None,
        outcome=outcome,
        token_name=token,
        page=page,
        page_size=page_size,
    )
    if format == "json":
        return JSONResponse(
            {
                "total": result.total,
                "page": result.page,
                "page_size": result.page_size,
                "items": [r.as_dict() for r in result.items],
            }
        )
    base = str(request.base_url)
    links: list[dict[str, Any]] = [{"relation": "self", "url": str(request.url)}]
    if result.has_next:
        links.append({"relation": "next", "url": _page_url(request, page + 1)})
    if page > 1:
        links.append({"relation": "previous", "url": _page_url(request, page - 1)})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": result.total, "link": links}
    if result.items:  # FHIR forbids empty arrays
        bundle["entry"] = [
            {
                "fullUrl": f"{base}AuditEvent/{record.seq}",
                "resource": audit_log.to_fhir(record),
                "search": {"mode": "match"},
            }
            for record in result.items
        ]
    return JSONResponse(bundle, media_type=FHIR_JSON)


@router.get("/verify", response_model=VerifyOut)
def verify(_principal: AuditorPrincipal, audit_log: PredictionLogDep) -> VerifyOut:
    """Walk the HMAC chain and check it against the signed checkpoints: ok, records checked, the first fault.

    A fault found by a checkpoint (records cut off the end, a rewritten chain, a forged line) names its line in
    ``reason``; ``first_bad_id`` is the record it concerns (null for a forged line).
    """
    result = audit_log.verify()
    return VerifyOut(
        ok=result.ok,
        checked=result.checked,
        first_bad_id=result.first_bad_id,
        reason=result.reason,
        head_hash=result.head_hash,
    )

"""FHIR OperationOutcome bodies for every error the service returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

FHIR_JSON = "application/fhir+json"

# The FHIR issue type for a status when the raiser did not choose one.
CODE_BY_STATUS: dict[int, str] = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-long",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    500: "exception",
    503: "transient",
}


def issue(
    code: str, diagnostics: str, severity: str = "error", expression: Sequence[str] | None = None
) -> dict[str, Any]:
    """One OperationOutcome.issue entry."""
    entry: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        entry["expression"] = list(expression)
    return entry


def operation_outcome(issues: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An OperationOutcome resource holding the given issues (at least one)."""
    return {"resourceType": "OperationOutcome", "issue": [dict(i) for i in issues]}


def outcome_response(
    status_code: int, issues: Sequence[Mapping[str, Any]], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """A JSON response (``application/fhir+json``) carrying an OperationOutcome."""
    return JSONResponse(
        operation_outcome(issues), status_code=status_code, headers=dict(headers or {}), media_type=FHIR_JSON
    )


def error_response(
    status_code: int,
    diagnostics: str,
    code: str | None = None,
    expression: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OperationOutcome response with one error issue; the code defaults from the status."""
    chosen = code or CODE_BY_STATUS.get(status_code, "processing")
    return outcome_response(status_code, [issue(chosen, diagnostics, expression=expression)], headers)

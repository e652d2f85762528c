"""Exception handlers: every HTTP and validation error becomes a FHIR OperationOutcome naming the field at fault."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from pipelines.service.errors import FhirHTTPError
from pipelines.service.outcome import CODE_BY_STATUS, error_response, issue, outcome_response

MAX_ISSUES = 20
_SOURCES = {"body": "body field", "query": "query parameter", "path": "path parameter", "header": "header"}


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a FHIRPath-like expression: ``entry[0].resource.status``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def _validation_issues(errors: Sequence[Any], root: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Status and issues for pydantic errors; never echoes the rejected input (it could be personal data)."""
    status, issues = 422, []
    for err in list(errors)[:MAX_ISSUES]:
        loc = list(err.get("loc", ()))
        source = loc.pop(0) if loc and loc[0] in _SOURCES else None
        if err.get("type") == "json_invalid":
            status = 400
            position = f" at character {loc[0]}" if loc and isinstance(loc[0], int) else ""
            issues.append(issue("structure", f"request body is not valid JSON{position}"))
            continue
        path = field_path(loc) if loc else (source or "body")
        if root:
            path = f"{root}.{path}" if loc else root
        where = f"{_SOURCES[source]} '{path}'" if source else f"'{path}'"
        issues.append(issue("invalid", f"{where}: {err.get('msg', 'invalid value')}", expression=[path]))
    if not issues:
        issues.append(issue("invalid", "the request is not valid"))
    return status, issues


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = getattr(exc, "headers", None)
    if isinstance(exc, FhirHTTPError):
        return error_response(exc.status_code, exc.diagnostics, exc.code, exc.expression, headers)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    code = CODE_BY_STATUS.get(exc.status_code, "processing")
    return error_response(exc.status_code, detail, code, headers=headers)


async def _request_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    status, issues = _validation_issues(exc.errors())
    return outcome_response(status, issues)


async def _model_validation_error(_request: Request, exc: Exception) -> Response:
    # A FHIR or other pydantic model validated inside a route (e.g. a Bundle checked with fhir.resources).
    assert isinstance(exc, ValidationError)
    _, issues = _validation_issues(exc.errors(include_input=False, include_url=False), root=exc.title)
    return outcome_response(422, issues)


def install_exception_handlers(app: FastAPI) -> None:
    """Register the OperationOutcome handlers on ``app`` (the catch-all 500 is ``CatchAllMiddleware``)."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(ValidationError, _model_validation_error)

"""``GET /audit/report/{name}/{version}`` (auditor role): the auditors' HTML report of one model version.

The same self-contained page as ``shipa audit report`` writes (no scripts, images inline, a Content-Security-Policy
that forbids any fetch), built on request from the registry, the service's own audit log and the workspace the
service runs in (its ``dvc.lock`` and ``models/``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from pipelines.config import mlflow_tracking_uri
from pipelines.service.deps import AuditorPrincipal, PredictionLogDep, SettingsDep
from pipelines.service.errors import FhirHTTPError
from pipelines.service.schemas import ERROR_RESPONSES
from pipelines.tracking.errors import ModelVersionNotFoundError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
VERSION_PATTERN = r"^[0-9]{1,9}$"


@router.get("/report/{name}/{version}", response_class=HTMLResponse)
def audit_report(
    name: Annotated[str, PathParam(pattern=NAME_PATTERN, description="registered model name")],
    version: Annotated[str, PathParam(pattern=VERSION_PATTERN, description="model version number")],
    _principal: AuditorPrincipal,
    audit_log: PredictionLogDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """The report of ``models:/<name>/<version>``: lineage, metrics, gate, promotion, usage, drift, log integrity."""
    # Imported on first use: matplotlib and scipy need not slow the service's start-up.
    from pipelines.audit.html_render import CSP, render_html
    from pipelines.audit.model_report import audit_source, report_document

    tracking_uri = settings.tracking_uri or mlflow_tracking_uri()
    source = audit_source(audit_log, "this service's audit log")
    try:
        doc = report_document(name, version, tracking_uri=tracking_uri, project_root=Path.cwd(), source=source)
    except ModelVersionNotFoundError:
        raise FhirHTTPError(404, "not-found", "no such model version in the registry") from None
    return HTMLResponse(
        render_html(doc),
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )

"""``GET /audit/report/{name}/{version}`` (auditor role): the auditors' HTML report of one model version.

The same self-contained page as ``shipa audit report`` writes (no scripts, images inline, a Content-Security-Policy
that forbids any fetch), built on request from the registry, the service's own audit log and the workspace the
service runs in (its ``dvc.lock`` and ``models/``). The page is built by a :class:`ReportRenderer` handed to
``create_app`` (``shipa serve`` gives :func:`pipelines.audit.served.html_report`): the service does not import the
auditors' package, so the two stay side by side. Without one the route answers 404.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Protocol

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse

from pipelines.config import mlflow_tracking_uri
from pipelines.predictionlog.log import PredictionLog
from pipelines.service.deps import AuditorPrincipal, PredictionLogDep, SettingsDep
from pipelines.service.errors import FhirHTTPError
from pipelines.service.schemas import ERROR_RESPONSES
from pipelines.tracking.errors import ModelVersionNotFoundError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$"
VERSION_PATTERN = r"^[0-9]{1,9}$"


class ReportRenderer(Protocol):
    """Builds the report page of one model version: ``(html, content_security_policy)``.

    Raises ``ModelVersionNotFoundError`` for a version the registry does not hold.
    """

    def __call__(
        self, name: str, version: str, *, prediction_log: PredictionLog, tracking_uri: str, project_root: Path
    ) -> tuple[str, str]: ...


@router.get("/report/{name}/{version}", response_class=HTMLResponse)
def audit_report(
    request: Request,
    name: Annotated[str, PathParam(pattern=NAME_PATTERN, description="registered model name")],
    version: Annotated[str, PathParam(pattern=VERSION_PATTERN, description="model version number")],
    _principal: AuditorPrincipal,
    audit_log: PredictionLogDep,
    settings: SettingsDep,
) -> HTMLResponse:
    """The report of ``models:/<name>/<version>``: lineage, metrics, gate, promotion, usage, drift, log integrity."""
    renderer: ReportRenderer | None = getattr(request.app.state, "report_renderer", None)
    if renderer is None:
        raise FhirHTTPError(404, "not-found", "this service does not serve the auditors' report")
    tracking_uri = settings.tracking_uri or mlflow_tracking_uri()
    try:
        html, csp = renderer(
            name, version, prediction_log=audit_log, tracking_uri=tracking_uri, project_root=Path.cwd()
        )
    except ModelVersionNotFoundError:
        raise FhirHTTPError(404, "not-found", "no such model version in the registry") from None
    return HTMLResponse(
        html,
        headers={"Content-Security-Policy": csp, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )

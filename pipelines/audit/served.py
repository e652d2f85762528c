"""The auditors' HTML report as the service serves it (``GET /audit/report/{name}/{version}``).

The service never imports this package: ``service`` and ``audit`` sit side by side above the prediction log.
Whoever assembles the app (``shipa serve`` in :mod:`pipelines.cli.service`, or a test) hands :func:`html_report`
to :func:`pipelines.service.app.create_app`, and the route calls it on request.
"""

from __future__ import annotations

from pathlib import Path

from pipelines.predictionlog.log import PredictionLog


def html_report(
    name: str, version: str, *, prediction_log: PredictionLog, tracking_uri: str, project_root: Path
) -> tuple[str, str]:
    """The self-contained report page of ``models:/<name>/<version>`` and its Content-Security-Policy.

    Args:
        name: registered model name.
        version: model version number.
        prediction_log: the service's prediction log (usage, drift, and whether its chain verifies).
        tracking_uri: the MLflow store holding the registry.
        project_root: the workspace (its ``dvc.lock`` and ``models/``).

    Returns:
        ``(html, content_security_policy)``.

    Raises:
        ModelVersionNotFoundError: no such version in the registry.
    """
    # Imported on first use: matplotlib and scipy need not slow the service's start-up.
    from pipelines.audit.html_render import CSP, render_html
    from pipelines.audit.model_report import audit_source, report_document

    source = audit_source(prediction_log, "this service's prediction log")
    doc = report_document(name, version, tracking_uri=tracking_uri, project_root=project_root, source=source)
    return render_html(doc), CSP

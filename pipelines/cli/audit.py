"""Command-line pieces for ``pipelines/cli.py`` to mount under ``shipa audit``: ``report`` and ``trace``.

Both read the MLflow store (``MLFLOW_TRACKING_URI`` or ``<root>/mlflow.db``) and the service's audit log
(``--database-url`` or the ``SHIPA_SERVICE_*`` settings); neither writes to either. The report and trace
libraries (matplotlib, scipy, MLflow) are imported when a command runs, so mounting these costs ``shipa`` nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from sqlalchemy.engine import make_url

from pipelines.audit.errors import AuditLogNotFoundError
from pipelines.errors import ShipaError

if TYPE_CHECKING:
    from pipelines.audit.report import AuditSource, ReportFiles
    from pipelines.service.audit import AuditLog

T = TypeVar("T")

DatabaseOpt = Annotated[
    str | None, typer.Option("--database-url", help="audit log database (default: SHIPA_SERVICE_* settings)")
]
RootOpt = Annotated[Path, typer.Option("--root", help="project folder (dvc.lock, models/, mlflow.db)")]


def _guard(fn: Callable[[], T]) -> T:
    """Expected errors become one line on stderr and exit code 2, never a traceback."""
    try:
        return fn()
    except ShipaError as exc:
        typer.echo(f"shipa: error: {exc}", err=True)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None


def audit_database_url(database_url: str | None) -> str:
    """``database_url``, else the service's (``SHIPA_SERVICE_DATABASE_URL`` or ``<STATE_DIR>/service.db``)."""
    if database_url:
        return database_url
    from pipelines.service.settings import load_service_settings

    # Reading the log needs no token pepper: demo_mode only waives the pepper check, the URL is derived as usual.
    return load_service_settings(demo_mode=True).database_url


def open_audit_log(database_url: str) -> AuditLog | None:
    """The audit log at ``database_url``, or None for an SQLite file that does not exist (never created here)."""
    url = make_url(database_url)
    file_backed = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if file_backed and not Path(str(url.database)).expanduser().is_file():
        return None
    from pipelines.service.audit import AuditLog

    return AuditLog(database_url)


def _tracking_uri(root: Path) -> str:
    from pipelines.config import mlflow_tracking_uri

    # MLflow draws a progress bar per downloaded artifact; a report reads a dozen small ones.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return mlflow_tracking_uri(root)


def audit_report(
    model_uri: Annotated[
        str | None, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>", show_default=False)
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help="every version (of MODEL_URI's model, or of every shipa-* model)")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="folder for the HTML and PDF files")] = Path("reports/audit"),
    database_url: DatabaseOpt = None,
    root: RootOpt = Path("."),
) -> None:
    """Write a self-contained HTML report and a PDF per model version: lineage, metrics, gate, usage, drift.

    Exits 1 (after writing) when the audit log's hash chain fails verification.
    """
    from pipelines.audit.report import audit_source, describe_database, report_targets, write_report

    def go() -> tuple[list[tuple[str, str]], AuditSource, str]:
        uri = _tracking_uri(root)
        targets = report_targets(model_uri, all_versions=all_versions, tracking_uri=uri)
        url = audit_database_url(database_url)
        label = describe_database(url)
        audit_log = open_audit_log(url)
        return targets, audit_source(audit_log, label if audit_log else f"{label} (not found)"), uri

    targets, source, uri = _guard(go)

    def write(name: str, version: str) -> ReportFiles:
        return write_report(name, version, out, tracking_uri=uri, project_root=root.resolve(), source=source)

    try:
        for name, version in targets:
            files = _guard(partial(write, name, version))
            typer.echo(f"{files.name} version {files.version}: {files.html} and {files.pdf} ({files.pdf_pages} pages)")
    finally:
        if source.log is not None:
            source.log.close()
    if source.verify is None:
        typer.echo(f"audit log not read: {source.label}", err=True)
    elif not source.verify.ok:
        typer.echo(f"audit log ALTERED at record {source.verify.first_bad_id}: {source.verify.reason}", err=True)
        raise typer.Exit(1)


def audit_trace(
    event_id: Annotated[str, typer.Argument(help="the AuditEvent id (sequence number) or the event's uuid")],
    database_url: DatabaseOpt = None,
    root: RootOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="print the chain as JSON")] = False,
) -> None:
    """Print the chain behind one prediction: audit record, model version, MLflow run, commit, data, ingest report."""
    from pipelines.audit.report import describe_database
    from pipelines.audit.trace import render_trace, trace_dict, trace_event

    def go() -> str:
        url = audit_database_url(database_url)
        audit_log = open_audit_log(url)
        if audit_log is None:
            raise AuditLogNotFoundError(f"no audit log at {describe_database(url)}")
        try:
            result = trace_event(
                event_id, audit_log=audit_log, tracking_uri=_tracking_uri(root), project_root=root.resolve()
            )
        finally:
            audit_log.close()
        return json.dumps(trace_dict(result), indent=2) if as_json else render_trace(result)

    typer.echo(_guard(go), nl=as_json)

"""``shipa audit verify|report|trace``: the auditors' commands.

They read the MLflow store (``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``<root>/mlflow.db``) and the
service's prediction log (``--database-url``, else the ``SHIPA_SERVICE_*`` settings); none writes to either. The log
is checked with the audit key (``SHIPA_SERVICE_AUDIT_KEY``) against its checkpoint file; no token pepper is read.
The report and trace libraries (matplotlib, scipy, MLflow) are imported when a command runs, so mounting these
costs ``shipa`` nothing.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.cli.common import DatabaseUrlOpt, JsonOpt, RootOpt, TrackingUriOpt, guard, tracking_uri_of

if TYPE_CHECKING:
    from pipelines.audit.model_report import AuditSource, ReportFiles
    from pipelines.predictionlog.log import PredictionLog, VerifyResult
    from pipelines.service.settings import AuditSettings

app = typer.Typer(
    help="Auditors: verify the prediction log, report on a model version, trace a prediction.", no_args_is_help=True
)


CheckpointsOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoints",
        help="the audit checkpoint file (default: SHIPA_SERVICE_AUDIT_CHECKPOINTS, else beside the database)",
        show_default=False,
    ),
]


def audit_settings(database_url: str | None, checkpoints: Path | None = None, *, demo: bool = False) -> AuditSettings:
    """The database, audit key and checkpoint file to read, from the options and ``SHIPA_SERVICE_*``.

    Args:
        database_url: ``--database-url``, else ``SHIPA_SERVICE_DATABASE_URL`` or ``<STATE_DIR>/service.db``.
        checkpoints: ``--checkpoints``, else ``SHIPA_SERVICE_AUDIT_CHECKPOINTS`` or the file beside the database.
        demo: fall back to the public demo key when no audit key is set (the report and trace then still run; a
            log written under a real key fails their verification, naming the key as a possible cause).

    Raises:
        ServiceConfigError: no usable audit key (and not ``demo``), or another invalid setting.
    """
    from pipelines.service.settings import load_audit_settings

    overrides: dict[str, object] = {}
    if database_url:
        overrides["database_url"] = database_url
    if checkpoints is not None:
        overrides["audit_checkpoints"] = checkpoints
    if demo:
        overrides["demo_mode"] = True
    return load_audit_settings(**overrides)


def audit_database_url(database_url: str | None) -> str:
    """``database_url``, else the service's (``SHIPA_SERVICE_DATABASE_URL`` or ``<STATE_DIR>/service.db``)."""
    return database_url or audit_settings(None, demo=True).database_url


def open_audit_log(database_url: str, settings: AuditSettings | None = None) -> PredictionLog | None:
    """The prediction log at ``database_url``, or None for an SQLite file that does not exist (never created here).

    Args:
        database_url: the log's database.
        settings: the audit key and checkpoint file to verify with (default: from ``SHIPA_SERVICE_*``, the demo key
            when none is set).
    """
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    file_backed = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if file_backed and not Path(str(url.database)).expanduser().is_file():
        return None
    from pipelines.predictionlog.log import PredictionLog

    settings = settings or audit_settings(database_url, demo=True)
    return PredictionLog(database_url, key=settings.audit_key_bytes(), checkpoints=settings.audit_checkpoints)


def verify_message(result: VerifyResult) -> str:
    """One line: the chain is intact (records, checkpoints, head hash), or where it breaks and why."""
    if result.ok:
        anchored = f"{result.checkpoints} checkpoints, anchored up to record {result.anchored}"
        return f"audit log ok: {result.checked} records, {anchored}, head hash {result.head_hash}"
    if result.first_bad_id is None:
        return f"audit log BROKEN at checkpoint line {result.first_bad_checkpoint}: {result.reason}"
    return f"audit log BROKEN at record {result.first_bad_id}: {result.reason}"


def _store(tracking_uri: str | None, root: Path) -> str:
    # MLflow draws a progress bar per downloaded artifact; a report reads a dozen small ones.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return tracking_uri_of(tracking_uri, root)


@app.command("verify")
def audit_verify(
    database_url: DatabaseUrlOpt = None, checkpoints: CheckpointsOpt = None, as_json: JsonOpt = False
) -> None:
    """Check the prediction log's HMAC chain against its signed checkpoints; exit 1 naming the first fault.

    Needs SHIPA_SERVICE_AUDIT_KEY (the service's audit key) and the database (SHIPA_SERVICE_DATABASE_URL or
    --database-url); not the token pepper. Exit 2 when the key is missing or the database does not exist.
    """
    from pipelines.errors import InputError

    def go() -> PredictionLog:
        settings = audit_settings(database_url, checkpoints)
        audit_log = open_audit_log(settings.database_url, settings)
        if audit_log is None:
            from sqlalchemy.engine import make_url

            shown = make_url(settings.database_url).render_as_string(hide_password=True)
            raise InputError(f"no audit log at {shown}: set SHIPA_SERVICE_DATABASE_URL or --database-url")
        return audit_log

    audit_log = guard(go)
    try:
        result = audit_log.verify()
    finally:
        audit_log.close()
    if as_json:
        typer.echo(json.dumps(result.__dict__, indent=2))
    elif result.ok:
        typer.echo(verify_message(result))
    else:
        typer.echo(verify_message(result), err=True)
    if not result.ok:
        raise typer.Exit(1)


@app.command("report")
def audit_report(
    model_uri: Annotated[
        str | None, typer.Argument(help="models:/<name>/<version> or models:/<name>@<alias>", show_default=False)
    ] = None,
    all_versions: Annotated[
        bool, typer.Option("--all", help="every version (of MODEL_URI's model, or of every shipa-* model)")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="folder for the HTML and PDF files")] = Path("reports/audit"),
    database_url: DatabaseUrlOpt = None,
    root: RootOpt = Path("."),
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Write a self-contained HTML report and a PDF per model version: lineage, metrics, gate, usage, drift.

    Exits 1 (after writing) when the prediction log's hash chain fails verification.
    """
    from pipelines.audit.model_report import audit_source, describe_database, report_targets, write_report

    def go() -> tuple[list[tuple[str, str]], AuditSource, str]:
        uri = _store(tracking_uri, root)
        targets = report_targets(model_uri, all_versions=all_versions, tracking_uri=uri)
        url = audit_database_url(database_url)
        label = describe_database(url)
        audit_log = open_audit_log(url)
        return targets, audit_source(audit_log, label if audit_log else f"{label} (not found)"), uri

    targets, source, uri = guard(go)

    def write(name: str, version: str) -> ReportFiles:
        return write_report(name, version, out, tracking_uri=uri, project_root=root.resolve(), source=source)

    try:
        for name, version in targets:
            files = guard(partial(write, name, version))
            typer.echo(f"{files.name} version {files.version}: {files.html} and {files.pdf} ({files.pdf_pages} pages)")
    finally:
        if source.log is not None:
            source.log.close()
    if source.verify is None:
        typer.echo(f"audit log not read: {source.label}", err=True)
    elif not source.verify.ok:
        typer.echo(f"audit log ALTERED at record {source.verify.first_bad_id}: {source.verify.reason}", err=True)
        raise typer.Exit(1)


@app.command("trace")
def audit_trace(
    event_id: Annotated[str, typer.Argument(help="the AuditEvent id (sequence number) or the event's uuid")],
    database_url: DatabaseUrlOpt = None,
    root: RootOpt = Path("."),
    tracking_uri: TrackingUriOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the chain as JSON")] = False,
) -> None:
    """Print the chain behind one prediction: log record, model version, MLflow run, commit, data, ingest report."""
    from pipelines.audit.errors import AuditLogNotFoundError
    from pipelines.audit.model_report import describe_database
    from pipelines.audit.trace import render_trace, trace_dict, trace_event

    def go() -> str:
        url = audit_database_url(database_url)
        audit_log = open_audit_log(url)
        if audit_log is None:
            raise AuditLogNotFoundError(f"no audit log at {describe_database(url)}")
        try:
            result = trace_event(
                event_id,
                audit_log=audit_log,
                tracking_uri=_store(tracking_uri, root),
                project_root=root.resolve(),
            )
        finally:
            audit_log.close()
        return json.dumps(trace_dict(result), indent=2) if as_json else render_trace(result)

    typer.echo(guard(go), nl=as_json)

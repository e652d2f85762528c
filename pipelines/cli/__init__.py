"""The ``shipa`` command line: one command per pipeline stage (same name as its DVC stage and module), plus the
registry, investigator, auditor and service commands.

One module per group: ``stages`` (synthesize ... register, results, check-params), ``registry`` (promote,
reproduce), ``fraud`` (``shipa fraud worklist``), ``audit`` (``shipa audit verify|report|trace``) and ``service``
(``shipa serve``, ``shipa tokens``); ``common`` holds the error guard and the options they share. Every heavy
library (torch, MONAI, MLflow, FastAPI) is imported inside the command that needs it.
"""

from __future__ import annotations

import os

import typer

from pipelines.cli import audit, fraud, pacs, registry, release, service, stages
from pipelines.config import get_settings
from pipelines.logging_setup import configure_logging

app = typer.Typer(
    name="shipa",
    help="Shipa: FHIR R4 + DICOM to validated, de-identified tables, models, registry and service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """Configure logging and the process environment shared by every command."""
    configure_logging(get_settings().log_level)
    # Sovereign by default: no telemetry leaves the machine.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


stages.mount(app)
registry.mount(app)
release.mount(app)
app.add_typer(fraud.app, name="fraud")
app.command()(service.serve)
app.command()(pacs.watch)
app.add_typer(service.tokens_app, name="tokens")
app.add_typer(audit.app, name="audit")


def main() -> None:  # pragma: no cover - entry point of `python -m pipelines.cli`
    """Run the ``shipa`` command line."""
    app(prog_name="shipa")


__all__ = ["app", "main"]

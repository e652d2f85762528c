"""What every ``shipa`` command shares: the error guard, the params loader, typed options and deprecated aliases.

One spelling per meaning across the whole CLI (``tests/cli/test_commands.py`` checks it over the command tree):
``--out`` for a folder a command writes, ``--input`` for the raw export it reads, ``--params``, ``--tracking-uri``,
``--database-url``, ``--root``, ``--json``, ``--progress/--no-progress``. An old spelling stays for one release as
a hidden option declared with :func:`deprecated_alias`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pipelines.config import DEFAULT_PARAMS, ConfigError, mlflow_tracking_uri
from pipelines.errors import ShipaError

log = logging.getLogger("shipa")

T = TypeVar("T")

ParamsOpt = Annotated[
    Path | None,
    typer.Option(
        "--params",
        help="params file with one section per stage [default: ./params.yaml if present, else the built-in defaults]",
        show_default=False,
    ),
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="show a progress bar")]
TrackingUriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow tracking and registry store [default: MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db]",
        show_default=False,
    ),
]
DatabaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="the service database: tokens and prediction log [default: SHIPA_SERVICE_* settings]",
        show_default=False,
    ),
]
RootOpt = Annotated[Path, typer.Option("--root", help="project folder (dvc.lock, models/, mlflow.db)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
InterimOpt = Annotated[Path, typer.Option("--interim", help="ingest output folder")]
ProcessedOpt = Annotated[Path, typer.Option("--processed", help="features output root (one folder per model)")]
ModelsOpt = Annotated[Path, typer.Option("--models", help="models root (one folder per model)")]


class ModelName(StrEnum):
    """The models a per-model stage runs for (the DVC ``foreach`` items)."""

    diagnosis = "diagnosis"
    fraud = "fraud"


ModelArg = Annotated[ModelName, typer.Argument(help="which model: diagnosis or fraud")]


def guard(fn: Callable[[], T]) -> T:
    """Run a command's work; expected errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        return fn()
    except (ConfigError, ShipaError) as exc:
        typer.echo(f"shipa: error: {exc}", err=True)
        raise typer.Exit(getattr(exc, "exit_code", 2)) from None
    except KeyboardInterrupt:
        typer.echo("shipa: interrupted", err=True)
        raise typer.Exit(130) from None


def print_summary(summary: dict[str, Any]) -> None:
    """A command's result as indented JSON on stdout (the one thing a script reads)."""
    typer.echo(json.dumps(summary, indent=2, sort_keys=True, default=str))


def params_file(params: Path | None) -> Path | None:
    """The params file to read: ``params`` as given, else ./params.yaml if it exists, else None (built-in defaults).

    An explicitly given file that does not exist is an error later, when a section is loaded from it.
    """
    if params is not None:
        return params
    if DEFAULT_PARAMS.is_file():
        return DEFAULT_PARAMS
    log.info("no %s in %s: using the built-in defaults (pass --params to override)", DEFAULT_PARAMS, Path.cwd())
    return None


def tracking_uri_of(tracking_uri: str | None, root: Path | None = None) -> str:
    """``--tracking-uri`` (or ``MLFLOW_TRACKING_URI``), else the sqlite store ``<root or cwd>/mlflow.db``."""
    return tracking_uri or mlflow_tracking_uri(root)


def deprecated_alias(ctx: typer.Context, name: str, new: str, old: str, value: T | None, current: T) -> T:
    """The value of option ``new`` (parameter ``name``), taking the hidden deprecated spelling ``old`` into account.

    Args:
        ctx: the command's context (to tell an explicitly given ``new`` from its default).
        name: the parameter name of ``new``.
        new: the current spelling, e.g. ``--out``.
        old: the deprecated spelling, e.g. ``--output`` (a hidden option of the same command).
        value: what ``old`` was given, or None.
        current: what ``new`` holds (given or default).

    Raises:
        typer.BadParameter: both spellings were given (exit code 2).
    """
    if value is None:
        return current
    source = ctx.get_parameter_source(name)
    # Compared by name: typer bundles its own click, whose ParameterSource enum is not click's.
    if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
        raise typer.BadParameter(f"give {new} only ({old} is its deprecated spelling)", param_hint=old)
    typer.echo(f"shipa: warning: {old} is deprecated and goes in the next release; use {new}", err=True)
    return value

"""``shipa serve`` and ``shipa tokens ...``: both read the same ``SHIPA_SERVICE_*`` settings as the service.

FastAPI, uvicorn and the model libraries are imported only when ``serve`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipelines.cli.common import DatabaseUrlOpt, JsonOpt, guard
from pipelines.cli.release import serve_release

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pipelines.service.tokens import TokenStore

tokens_app = typer.Typer(
    help="Manage the service's bearer tokens (stored hashed in the service database).", no_args_is_help=True
)


def serve(
    host: Annotated[str | None, typer.Option("--host", help="override SHIPA_SERVICE_HOST")] = None,
    port: Annotated[int | None, typer.Option("--port", help="override SHIPA_SERVICE_PORT")] = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            help="MLflow store [default: SHIPA_SERVICE_TRACKING_URI, else MLFLOW_TRACKING_URI, else ./mlflow.db]",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="server processes, each with its own models [default: SHIPA_SERVICE_WORKERS, else 1]",
            show_default=False,
        ),
    ] = None,
    release: Annotated[
        Path | None, typer.Option("--release", help="serve this release bundle's models (verified first)")
    ] = None,
    trusted_key: Annotated[
        Path | None, typer.Option("--trusted-key", help="the publisher's public key a --release must be signed by")
    ] = None,
) -> None:
    """Serve the champion models (diagnosis, fraud) over HTTP: FHIR in and out, tokens and roles, prediction log.

    Settings come from SHIPA_SERVICE_* (see pipelines/service/README.md); binds 127.0.0.1 unless told otherwise.
    With --workers N, N processes share the port (about one per core; each holds its own copy of the models).
    """
    from pipelines.audit.served import html_report
    from pipelines.service.assemble import serve as run_service  # FastAPI is imported only when serving

    if release is not None:  # verified like `shipa install` before anything in it is used
        tracking_uri = serve_release(release, trusted_key, tracking_uri)
    guard(
        lambda: run_service(
            host=host,
            port=port,
            tracking_uri=tracking_uri,
            report_renderer=html_report,
            workers=workers,
            worker_factory=f"{__name__}:worker_app",
        )
    )


def worker_app() -> FastAPI:
    """One worker's app, from the ``SHIPA_SERVICE_*`` environment (``shipa serve --workers N`` starts N of them)."""
    from pipelines.audit.served import html_report
    from pipelines.logging_setup import configure_logging
    from pipelines.service.assemble import worker_app as build
    from pipelines.service.settings import load_service_settings

    settings = load_service_settings()
    configure_logging(settings.log_level)
    return build(settings, html_report)


def _store(database_url: str | None) -> TokenStore:
    from pipelines.predictionlog.db import make_engine
    from pipelines.service.settings import load_service_settings
    from pipelines.service.tokens import TokenStore

    overrides = {"database_url": database_url} if database_url else {}
    settings = load_service_settings(**overrides)
    return TokenStore(make_engine(settings.database_url), settings.pepper())


@tokens_app.command("add")
def tokens_add(
    name: Annotated[str, typer.Option("--name", help="unique token name (shown in the prediction log)")],
    role: Annotated[str, typer.Option("--role", help="clinician | investigator | auditor | admin")],
    database_url: DatabaseUrlOpt = None,
) -> None:
    """Create a token and print it once on stdout; only its hash is stored."""
    token = guard(lambda: _store(database_url).add(name, role))
    typer.echo(token)
    typer.echo(f"token {name!r} added with role {role.strip().lower()}; it is shown only this once", err=True)


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="name of the token to revoke")], database_url: DatabaseUrlOpt = None
) -> None:
    """Revoke a token; the service refuses it from the next request on."""
    info = guard(lambda: _store(database_url).revoke(name))
    typer.echo(f"token {info.name!r} revoked at {info.revoked_at}")


@tokens_app.command("list")
def tokens_list(as_json: JsonOpt = False, database_url: DatabaseUrlOpt = None) -> None:
    """List token names, roles and status (never the tokens)."""
    infos = guard(lambda: _store(database_url).list())
    rows = [
        {"name": i.name, "role": i.role.value, "created_at": i.created_at, "revoked_at": i.revoked_at} for i in infos
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'NAME':<24} {'ROLE':<13} {'CREATED':<21} STATUS")
    for r in rows:
        status = f"revoked {r['revoked_at']}" if r["revoked_at"] else "active"
        typer.echo(f"{r['name']:<24} {r['role']:<13} {r['created_at']:<21} {status}")

"""Command-line pieces for ``pipelines/cli.py`` to mount: ``shipa tokens ...`` and ``shipa audit verify``.

Both read the same ``SHIPA_SERVICE_*`` settings as the service (database URL, token pepper).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from pipelines.errors import ShipaError
from pipelines.service.audit import AuditLog
from pipelines.service.db import make_engine
from pipelines.service.settings import load_service_settings
from pipelines.service.tokens import TokenStore

T = TypeVar("T")

tokens_app = typer.Typer(
    help="Manage the service's bearer tokens (stored hashed in the service database).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DatabaseOpt = Annotated[
    str | None, typer.Option("--database-url", help="override SHIPA_SERVICE_DATABASE_URL", show_default=False)
]


def _guard(fn: Callable[[], T]) -> T:
    """Expected errors become one line on stderr and exit code 2, never a traceback."""
    try:
        return fn()
    except ShipaError as exc:
        typer.echo(f"shipa: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _store(database_url: str | None) -> TokenStore:
    overrides = {"database_url": database_url} if database_url else {}
    settings = load_service_settings(**overrides)
    return TokenStore(make_engine(settings.database_url), settings.pepper())


@tokens_app.command("add")
def tokens_add(
    name: Annotated[str, typer.Option("--name", help="unique token name (shown in the audit log)")],
    role: Annotated[str, typer.Option("--role", help="clinician | investigator | auditor | admin")],
    database_url: DatabaseOpt = None,
) -> None:
    """Create a token and print it once on stdout; only its hash is stored."""
    token = _guard(lambda: _store(database_url).add(name, role))
    typer.echo(token)
    typer.echo(f"token {name!r} added with role {role.strip().lower()}; it is shown only this once", err=True)


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="name of the token to revoke")], database_url: DatabaseOpt = None
) -> None:
    """Revoke a token; the service refuses it from the next request on."""
    info = _guard(lambda: _store(database_url).revoke(name))
    typer.echo(f"token {info.name!r} revoked at {info.revoked_at}")


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False, database_url: DatabaseOpt = None
) -> None:
    """List token names, roles and status (never the tokens)."""
    infos = _guard(lambda: _store(database_url).list())
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


def audit_verify(
    database_url: DatabaseOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Check the audit log's hash chain; exit 1 naming the first altered or deleted record."""

    def go() -> AuditLog:
        overrides = {"database_url": database_url} if database_url else {}
        return AuditLog(load_service_settings(**overrides).database_url)

    audit_log = _guard(go)
    try:
        result = audit_log.verify()
    finally:
        audit_log.close()
    if as_json:
        typer.echo(json.dumps(result.__dict__, indent=2))
    elif result.ok:
        typer.echo(f"audit log ok: {result.checked} records, head hash {result.head_hash}")
    else:
        typer.echo(f"audit log BROKEN at record {result.first_bad_id}: {result.reason}", err=True)
    if not result.ok:
        raise typer.Exit(1)

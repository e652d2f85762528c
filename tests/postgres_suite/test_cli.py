"""``shipa tokens`` and ``shipa audit verify`` with ``SHIPA_SERVICE_DATABASE_URL`` pointing at PostgreSQL: the
commands an operator runs against a hospital's database server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest
import typer
from postgres import Database
from service.helpers import AUDIT_KEY, PEPPER, make_record
from typer.testing import CliRunner

from pipelines.cli.audit import audit_verify
from pipelines.cli.service import tokens_app
from pipelines.predictionlog.db import make_engine
from pipelines.predictionlog.log import PredictionLog
from pipelines.service.settings import CHECKPOINTS_SUFFIX
from pipelines.service.tokens import TokenStore

runner = CliRunner()


@pytest.fixture
def state(tmp_path: Path, pg_database: Database, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service environment the commands read, with the database on PostgreSQL."""
    for name in list(os.environ):
        if name.startswith("SHIPA_SERVICE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHIPA_SERVICE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SHIPA_SERVICE_DATABASE_URL", pg_database.url)
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", PEPPER)
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", AUDIT_KEY)
    return tmp_path / "state"


def test_tokens_add_list_revoke(state: Path, pg_database: Database) -> None:
    added = runner.invoke(tokens_app, ["add", "--name", "dr-aliya", "--role", "clinician"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    store = TokenStore(make_engine(pg_database.url), PEPPER.encode())
    assert store.authenticate(token) is not None
    assert not (state / "service.db").exists()  # nothing fell back to SQLite
    listed = runner.invoke(tokens_app, ["list", "--json"])
    assert [(r["name"], r["role"], r["revoked_at"]) for r in json.loads(listed.stdout)] == [
        ("dr-aliya", "clinician", None)
    ]
    assert runner.invoke(tokens_app, ["revoke", "dr-aliya"]).exit_code == 0
    assert store.authenticate(token) is None
    missing = runner.invoke(tokens_app, ["revoke", "dr-aliya"])
    assert missing.exit_code == 2 and "no active token named 'dr-aliya'" in missing.stderr


def test_audit_verify_passes_then_names_the_bad_record(state: Path, pg_database: Database) -> None:
    # Checkpoints where the service puts them for a database server: in its state folder.
    checkpoints = state / f"service{CHECKPOINTS_SUFFIX}"
    log = PredictionLog(pg_database.url, key=AUDIT_KEY.encode(), checkpoints=checkpoints)
    for i in range(4):
        log.append(make_record(i))
    log.close()
    app = typer.Typer()
    app.command("verify")(audit_verify)
    app.command("noop")(lambda: None)  # keeps "verify" a subcommand, as the CLI mounts it
    ok = runner.invoke(app, ["verify"])
    assert ok.exit_code == 0, ok.output
    assert "audit log ok: 4 records, 4 checkpoints, anchored up to record 4" in ok.stdout
    with psycopg.connect(pg_database.conninfo) as conn:
        conn.execute("UPDATE audit_events SET output_json = '{}' WHERE seq = 2")
    bad = runner.invoke(app, ["verify"])
    assert bad.exit_code == 1 and "BROKEN at record 2" in bad.stderr

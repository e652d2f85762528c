"""`shipa tokens add/revoke/list` and `shipa audit verify` through typer's CliRunner, on real files."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipelines.cli.audit import audit_verify
from pipelines.cli.service import tokens_app
from pipelines.predictionlog.db import make_engine
from pipelines.predictionlog.log import PredictionLog
from pipelines.service.tokens import TokenStore

from .helpers import PEPPER, make_record

runner = CliRunner()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service environment the commands read: a state folder and a real pepper."""
    monkeypatch.setenv("SHIPA_SERVICE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", PEPPER)
    return tmp_path / "state"


def verify_app() -> typer.Typer:
    app = typer.Typer()
    app.command("verify")(audit_verify)
    app.command("noop")(lambda: None)  # keeps "verify" a subcommand, as the lead mounts it
    return app


def test_tokens_add_list_revoke(state: Path) -> None:
    added = runner.invoke(tokens_app, ["add", "--name", "dr-aliya", "--role", "clinician"])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert token.startswith("shipa_") and "shown only this once" in added.stderr
    runner.invoke(tokens_app, ["add", "--name", "fsms-1", "--role", "investigator"])

    db = state / "service.db"
    store = TokenStore(make_engine(f"sqlite:///{db}"), PEPPER.encode())
    assert store.authenticate(token) is not None
    wal = db.with_name("service.db-wal")
    raw = db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert token.encode() not in raw

    listed = runner.invoke(tokens_app, ["list"])
    assert listed.exit_code == 0 and token not in listed.output
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "CREATED", "STATUS"]
    assert lines[1].split()[:2] == ["dr-aliya", "clinician"] and lines[1].endswith("active")

    revoked = runner.invoke(tokens_app, ["revoke", "dr-aliya"])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert store.authenticate(token) is None
    as_json = json.loads(runner.invoke(tokens_app, ["list", "--json"]).stdout)
    assert [(r["name"], r["revoked_at"] is not None) for r in as_json] == [("dr-aliya", True), ("fsms-1", False)]
    assert all(set(r) == {"name", "role", "created_at", "revoked_at"} for r in as_json)


def test_token_errors_are_one_line_and_exit_2(state: Path) -> None:
    bad_role = runner.invoke(tokens_app, ["add", "--name", "x", "--role", "nurse"])
    assert bad_role.exit_code == 2 and bad_role.stderr.startswith("shipa: error: unknown role 'nurse'")
    missing = runner.invoke(tokens_app, ["revoke", "nobody"])
    assert missing.exit_code == 2 and "no active token named 'nobody'" in missing.stderr
    assert "Traceback" not in bad_role.output + missing.output


def test_placeholder_pepper_stops_the_command(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", "change-me")
    result = runner.invoke(tokens_app, ["add", "--name", "x", "--role", "admin"])
    assert result.exit_code == 2 and "SHIPA_SERVICE_TOKEN_PEPPER" in result.stderr
    assert "change-me" not in result.output


def test_audit_verify_passes_then_names_the_bad_record(state: Path) -> None:
    db = state / "service.db"
    log = PredictionLog(f"sqlite:///{db}")
    for i in range(4):
        log.append(make_record(i))
    log.close()
    app = verify_app()
    ok = runner.invoke(app, ["verify"])
    assert ok.exit_code == 0 and "audit log ok: 4 records" in ok.stdout
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE audit_events SET output_json = '{}' WHERE seq = 2")
    bad = runner.invoke(app, ["verify"])
    assert bad.exit_code == 1 and "BROKEN at record 2" in bad.stderr
    as_json = json.loads(runner.invoke(app, ["verify", "--json"]).stdout)
    assert (as_json["ok"], as_json["first_bad_id"], as_json["checked"]) == (False, 2, 1)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 2")
    deleted = runner.invoke(app, ["verify", "--database-url", f"sqlite:///{db}"])
    assert deleted.exit_code == 1 and "record 2 is missing" in deleted.stderr

"""`shipa tokens add/revoke/list` and `shipa audit verify` through typer's CliRunner (and one real process), on
real files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
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

from .helpers import AUDIT_KEY, PEPPER, make_record

runner = CliRunner()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The service environment the commands read: a state folder, a real pepper and a real audit key."""
    monkeypatch.setenv("SHIPA_SERVICE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", PEPPER)
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", AUDIT_KEY)
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
    db = write_log(state / "service.db", 4)
    app = verify_app()
    ok = runner.invoke(app, ["verify"])
    assert ok.exit_code == 0 and "audit log ok: 4 records, 4 checkpoints, anchored up to record 4" in ok.stdout
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


def write_log(db: Path, n: int) -> Path:
    """``n`` records under the test audit key, checkpointed where the service puts them (beside the database)."""
    log = PredictionLog(f"sqlite:///{db}", key=AUDIT_KEY.encode(), checkpoints=checkpoints_of(db))
    for i in range(n):
        log.append(make_record(i))
    log.close()
    return db


def checkpoints_of(db: Path) -> Path:
    return db.with_name(db.stem + ".audit-checkpoints.jsonl")


def test_audit_verify_names_a_truncated_chain_and_a_forged_checkpoint(state: Path) -> None:
    db = write_log(state / "service.db", 5)
    with closing(sqlite3.connect(db)) as conn, conn:
        (hash3,) = conn.execute("SELECT hash FROM audit_events WHERE seq = 3").fetchone()
        conn.execute("DELETE FROM audit_events WHERE seq > 3")
        conn.execute("UPDATE audit_head SET seq = 3, hash = ?", (hash3,))
    cut = runner.invoke(verify_app(), ["verify"])
    assert cut.exit_code == 1
    assert cut.stderr.startswith("audit log BROKEN at record 4: the chain ends at record 3 but checkpoint line 5 (")
    assert "records 4 to 5 were cut off and the head moved back" in cut.stderr

    moved = state / "elsewhere.jsonl"
    lines = checkpoints_of(db).read_text().splitlines()[:3]
    forged = json.loads(lines[-1]) | {"seq": 2}
    moved.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    bad = runner.invoke(verify_app(), ["verify", "--checkpoints", str(moved)])
    assert bad.exit_code == 1
    assert bad.stderr == (
        f"audit log BROKEN at checkpoint line 4: checkpoint line 4 of {moved} is unreadable or not signed with the "
        "audit key (forged or altered)\n"
    )


def test_audit_verify_with_another_key_fails_at_the_first_record(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_log(state / "service.db", 2)
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", "another-audit-key-0123456789")
    result = runner.invoke(verify_app(), ["verify"])
    assert result.exit_code == 1 and result.stderr.startswith("audit log BROKEN at record 1: record 1 does not match")


@pytest.mark.parametrize("key", [None, "change-me", "short", "shipa-demo-audit-key-not-for-production"])
def test_audit_verify_without_a_usable_key_is_one_line_exit_2(
    state: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    write_log(state / "service.db", 1)
    monkeypatch.delenv("SHIPA_SERVICE_AUDIT_KEY")
    if key is not None:
        monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", key)
    result = runner.invoke(verify_app(), ["verify"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("shipa: error: invalid service settings: SHIPA_SERVICE_AUDIT_KEY is empty, a ")
    assert result.stderr.count("\n") == 1 and "TOKEN_PEPPER" not in result.stderr


def test_audit_verify_of_a_missing_database_is_exit_2_and_creates_nothing(state: Path) -> None:
    result = runner.invoke(verify_app(), ["verify"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"shipa: error: no audit log at sqlite:///{state / 'service.db'}: set SHIPA_SERVICE_DATABASE_URL or "
        "--database-url\n"
    )
    assert not state.exists()


def test_the_service_refuses_the_pepper_as_audit_key(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", PEPPER)
    result = runner.invoke(tokens_app, ["list"])
    assert result.exit_code == 2 and "SHIPA_SERVICE_AUDIT_KEY must not be the token pepper" in result.stderr
    assert PEPPER not in result.output


def test_shipa_audit_verify_runs_with_only_the_audit_key_set(tmp_path: Path) -> None:
    """The installed command in its own process: no pepper, no state dir, no demo mode; only the key and the URL."""
    db = write_log(tmp_path / "srv" / "service.db", 3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPA_")}
    env |= {"SHIPA_SERVICE_AUDIT_KEY": AUDIT_KEY, "SHIPA_SERVICE_DATABASE_URL": f"sqlite:///{db}"}
    command = [sys.executable, "-m", "pipelines.cli", "audit", "verify"]
    ok = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert (ok.returncode, ok.stderr) == (0, "")
    assert ok.stdout.startswith("audit log ok: 3 records, 3 checkpoints, anchored up to record 3, head hash ")
    del env["SHIPA_SERVICE_AUDIT_KEY"]
    missing = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 2 and "SHIPA_SERVICE_AUDIT_KEY is empty" in missing.stderr
    assert "Traceback" not in missing.stderr and missing.stderr.count("\n") == 1

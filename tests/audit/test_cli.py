"""``shipa audit report`` and ``shipa audit trace`` through typer's CliRunner (mounted as the lead mounts them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner

from pipelines.cli.audit import audit_report, audit_trace, open_audit_log
from pipelines.predictionlog.log import PredictionLog

from .helpers import COMMIT, NAME, Registered

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    audit = typer.Typer()
    audit.command("report")(audit_report)
    audit.command("trace")(audit_trace)
    app.add_typer(audit, name="audit")
    return app


@pytest.fixture(autouse=True)
def _store(registered: Registered, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered.tracking_uri)
    for name in ("SHIPA_SERVICE_DATABASE_URL", "SHIPA_SERVICE_STATE_DIR", "SHIPA_SERVICE_TOKEN_PEPPER"):
        monkeypatch.delenv(name, raising=False)


def test_report_command_writes_the_files_and_exits_1_on_an_altered_log(
    registered: Registered, audit_log: PredictionLog, audit_db: str, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    common = ["--out", str(out), "--database-url", audit_db, "--root", str(registered.root)]
    ok = runner.invoke(_app(), ["audit", "report", f"models:/{NAME}/{registered.version}", *common])
    assert ok.exit_code == 0, ok.output
    html, pdf = out / f"{NAME}-v{registered.version}.html", out / f"{NAME}-v{registered.version}.pdf"
    assert f"{NAME} version {registered.version}: {html} and {pdf}" in ok.stdout
    assert "Audit log chain verified" in html.read_text(encoding="utf-8")

    with audit_log.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_events WHERE seq = 2"))
    broken = runner.invoke(_app(), ["audit", "report", f"models:/{NAME}", "--all", *common])
    assert broken.exit_code == 1
    assert "audit log ALTERED at record 2: record 2 is missing (deleted)" in broken.stderr
    assert "AUDIT LOG ALTERED" in html.read_text(encoding="utf-8")


def test_report_command_errors_are_one_line(registered: Registered, tmp_path: Path) -> None:
    args = [
        "--out",
        str(tmp_path),
        "--database-url",
        f"sqlite:///{tmp_path / 'none.db'}",
        "--root",
        str(registered.root),
    ]
    missing = runner.invoke(_app(), ["audit", "report", f"models:/{NAME}/42", *args])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == f"shipa: error: models:/{NAME}/42 does not exist in the registry"
    neither = runner.invoke(_app(), ["audit", "report", *args])
    assert neither.exit_code == 2 and "give models:/<name>/<version> or --all" in neither.stderr
    assert not (tmp_path / "none.db").exists()  # a report never creates an audit log


def test_trace_command_prints_the_chain(registered: Registered, audit_log: PredictionLog, audit_db: str) -> None:
    args = ["--database-url", audit_db, "--root", str(registered.root)]
    result = runner.invoke(_app(), ["audit", "trace", "3", *args])
    assert result.exit_code == 0, result.output
    assert f"-> Git commit {COMMIT}" in result.stdout
    as_json = runner.invoke(_app(), ["audit", "trace", "3", "--json", *args])
    assert json.loads(as_json.stdout)["git_commit"] == COMMIT


def test_trace_command_errors(registered: Registered, audit_log: PredictionLog, audit_db: str, tmp_path: Path) -> None:
    unknown = runner.invoke(
        _app(), ["audit", "trace", "999", "--database-url", audit_db, "--root", str(registered.root)]
    )
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == "shipa: error: audit event '999' is not in the audit log"
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    absent = runner.invoke(_app(), ["audit", "trace", "1", "--database-url", url])
    assert absent.exit_code == 2 and f"no audit log at {url}" in absent.stderr
    assert open_audit_log(url) is None and not (tmp_path / "absent.db").exists()

"""``shipa fraud decide`` and ``shipa fraud reveal``: investigators only, every call audited, decisions become labels.

Everything is real: the service's token store and prediction log in a temporary SQLite database (tokens made with
``shipa tokens add``), the chain checked with ``shipa audit verify``, the tiny cohort's raw export and ingest tables.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner, Result

from pipelines.cli import app
from pipelines.config import DEMO_PSEUDONYM_KEY
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.decisions import HEADER, read_decisions
from pipelines.predictionlog.entry import LogEntry
from pipelines.predictionlog.log import PredictionLog

REPO = Path(__file__).resolve().parents[2]
CLAIM = "0123456789abcdef0123456789abcdef"
AUDIT_KEY = secrets.token_urlsafe(32)  # the service's audit key in these tests: its own secret
runner = CliRunner()


class Service:
    """The service database of one test, its tokens by role, and a way to read the prediction log."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tokens: dict[str, str] = {}

    def add_token(self, name: str, role: str) -> str:
        result = runner.invoke(app, ["tokens", "add", "--name", name, "--role", role])
        assert result.exit_code == 0, result.output
        self.tokens[name] = result.stdout.strip()
        return self.tokens[name]

    def records(self) -> list[LogEntry]:
        audit_log = PredictionLog(self.url, key=AUDIT_KEY.encode())
        try:
            return list(audit_log.iter_all())
        finally:
            audit_log.close()

    def verify(self) -> Result:
        return runner.invoke(app, ["audit", "verify"])


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    url = f"sqlite:///{tmp_path / 'state' / 'service.db'}"
    monkeypatch.setenv("SHIPA_SERVICE_DATABASE_URL", url)
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", secrets.token_urlsafe(32))
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", AUDIT_KEY)
    for name in ("SHIPA_SERVICE_DEMO_MODE", "SHIPA_TOKEN", "SHIPA_PSEUDONYM_KEY"):
        monkeypatch.delenv(name, raising=False)
    svc = Service(url)
    svc.add_token("inv.aigerim", "investigator")
    svc.add_token("dr.bolat", "clinician")
    svc.add_token("root", "admin")
    return svc


def _decide(decisions: Path, *args: str) -> Result:
    return runner.invoke(app, ["fraud", "decide", *args, "--decisions", str(decisions)])


def _as(monkeypatch: pytest.MonkeyPatch, service: Service, name: str | None) -> None:
    if name is None:
        monkeypatch.delenv("SHIPA_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SHIPA_TOKEN", service.tokens.get(name, name))


def test_an_investigator_records_a_decision_and_the_chain_verifies(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decisions = tmp_path / "decisions.csv"
    _as(monkeypatch, service, "inv.aigerim")
    result = _decide(decisions, CLAIM.upper(), "--confirmed", "--by", "Aigerim Nurlanova", "--note", "no visit")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["claim_id"] == CLAIM and summary["decision"] == "confirmed" and summary["by"] == "Aigerim Nurlanova"
    (record,) = read_decisions(decisions)
    assert (record.claim_id, record.decision.value, record.by, record.note) == (
        CLAIM,
        "confirmed",
        "Aigerim Nurlanova",
        "no visit",
    )
    (entry,) = service.records()
    assert summary["audit_event"] == entry.seq == 1
    assert (entry.token_name, entry.role, entry.purpose_of_use) == ("inv.aigerim", "investigator", "FRAUD")
    assert (entry.endpoint, entry.model_name, entry.model_alias, entry.outcome) == (
        "shipa fraud decide",
        "fraud-decide",
        "cli",
        "0",
    )
    assert entry.output == {
        "claim_id": CLAIM,
        "decision": "confirmed",
        "by": "Aigerim Nurlanova",
        "decided_at": summary["decided_at"],
        "written": True,
    }
    # An admin token passes every role check, as in the service.
    _as(monkeypatch, service, "root")
    assert _decide(decisions, CLAIM, "--cleared", "--by", "Root Admin").exit_code == 0
    assert [r.decision.value for r in read_decisions(decisions)] == ["confirmed", "cleared"]
    verified = service.verify()
    assert verified.exit_code == 0, verified.output
    assert "audit log ok: 2 records" in verified.stdout


@pytest.mark.parametrize(
    ("who", "token_name", "role", "message"),
    [
        (None, "unauthenticated", "none", "set SHIPA_TOKEN to your investigator token"),
        ("shipa_not-a-real-token", "unauthenticated", "none", "the token in SHIPA_TOKEN is unknown or revoked"),
        ("dr.bolat", "dr.bolat", "clinician", "token 'dr.bolat' has the clinician role; `shipa fraud decide` needs"),
    ],
)
def test_a_caller_without_an_investigator_token_is_refused_and_audited(
    service: Service,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    who: str | None,
    token_name: str,
    role: str,
    message: str,
) -> None:
    decisions = tmp_path / "decisions.csv"
    _as(monkeypatch, service, who)
    result = _decide(decisions, CLAIM, "--confirmed", "--by", "Bolat")
    assert result.exit_code == 77
    assert result.stderr.startswith(f"shipa: error: {message}")
    assert "Traceback" not in result.output
    assert not decisions.exists()
    (entry,) = service.records()
    assert (entry.token_name, entry.role, entry.outcome, entry.endpoint) == (
        token_name,
        role,
        "4",
        "shipa fraud decide",
    )
    assert entry.output["refused"]
    assert service.verify().exit_code == 0


def test_a_revoked_token_is_refused(service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _as(monkeypatch, service, "inv.aigerim")
    assert runner.invoke(app, ["tokens", "revoke", "inv.aigerim"]).exit_code == 0
    result = _decide(tmp_path / "d.csv", CLAIM, "--cleared", "--by", "Aigerim")
    assert result.exit_code == 77
    assert "unknown or revoked" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ORG-77-CLAIM-12345", "--confirmed", "--by", "Ann"], "claim id must be the pseudonymous id of the worklist"),
        ([CLAIM, "--confirmed", "--cleared", "--by", "Ann"], "give exactly one of --confirmed and --cleared"),
        ([CLAIM, "--by", "Ann"], "give exactly one of --confirmed and --cleared"),
        ([CLAIM, "--confirmed"], "--by NAME is required"),
        ([CLAIM, "--confirmed", "--by", "Ann\nBob"], "--by must be 1-64"),
        ([CLAIM, "--confirmed", "--by", "Ann", "--note", "two\nlines"], "--note must be one line"),
    ],
)
def test_malformed_input_is_a_clear_audited_refusal(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    decisions = tmp_path / "decisions.csv"
    _as(monkeypatch, service, "inv.aigerim")
    result = _decide(decisions, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"shipa: error: {message}")
    assert not decisions.exists()
    (entry,) = service.records()
    assert (entry.token_name, entry.outcome, entry.output) == ("inv.aigerim", "4", {"refused": "invalid input"})
    assert "ORG-77" not in entry.output_json + (entry.outcome_desc or "")  # the bad input is never stored


def test_a_missing_service_database_is_named_and_not_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "elsewhere" / "service.db"
    monkeypatch.setenv("SHIPA_SERVICE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("SHIPA_SERVICE_TOKEN_PEPPER", secrets.token_urlsafe(32))
    monkeypatch.setenv("SHIPA_SERVICE_AUDIT_KEY", AUDIT_KEY)
    monkeypatch.setenv("SHIPA_TOKEN", "shipa_x")
    result = _decide(tmp_path / "d.csv", CLAIM, "--confirmed", "--by", "Ann")
    assert result.exit_code == 2
    assert f"no service database at sqlite:///{db}" in result.stderr
    assert not db.exists()


def test_two_concurrent_cli_runs_lose_no_decision_and_no_audit_record(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(HEADER, encoding="utf-8")
    script = textwrap.dedent(
        """
        import sys
        import traceback
        from typer.testing import CliRunner
        from pipelines.cli import app
        decisions, digit = sys.argv[1], sys.argv[2]
        for i in range(8):
            claim = f"{digit}{i:031x}"
            args = ["fraud", "decide", claim, "--confirmed", "--by", f"Investigator {digit}", "--decisions", decisions]
            result = CliRunner().invoke(app, args)
            if result.exit_code != 0:  # say why: the output, and the traceback of an unexpected exception
                print(result.output, file=sys.stderr)
                if result.exc_info is not None and not isinstance(result.exception, SystemExit):
                    traceback.print_exception(*result.exc_info)
                sys.exit(1)
        """
    )
    env = {**os.environ, "SHIPA_TOKEN": service.tokens["inv.aigerim"]}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(decisions), d], cwd=REPO, env=env) for d in ("1", "2")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    records = read_decisions(decisions)
    assert len({r.claim_id for r in records}) == len(records) == 16
    entries = service.records()
    assert len(entries) == 16 and all(e.outcome == "0" for e in entries)
    assert {e.output["claim_id"] for e in entries} == {r.claim_id for r in records}
    verified = service.verify()
    assert verified.exit_code == 0 and "16 records" in verified.stdout


def _claims_by_label(df: pl.DataFrame) -> tuple[str, str]:
    negative = df.filter(pl.col("label") == 0).sort("claim_id")["claim_id"][0]
    positive = df.filter(pl.col("label") == 1).sort("claim_id")["claim_id"][0]
    return negative, positive


def test_a_decision_appears_as_a_label_in_the_next_features_run(
    service: Service, tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance test of issue 17: decide through the CLI, rerun ``shipa features fraud``, the labels follow."""
    interim = tiny_cohort / "data" / "interim"
    params = tmp_path / "params.yaml"
    params.write_text("features: {}\n", encoding="utf-8")
    decisions = tmp_path / "decisions" / "fraud_decisions.csv"
    decisions.parent.mkdir()
    decisions.write_text(HEADER, encoding="utf-8")  # as committed: the header only

    def features(processed: Path) -> tuple[dict[str, Any], pl.DataFrame]:
        args = ["features", "fraud", "--interim", str(interim), "--processed", str(processed)]
        result = runner.invoke(app, [*args, "--params", str(params), "--decisions", str(decisions)])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout), pl.read_parquet(processed / "fraud" / "dataset.parquet")

    before_summary, before = features(tmp_path / "before")
    assert before_summary["decisions"]["labels_from_decisions"] == 0
    negative, positive = _claims_by_label(before)

    _as(monkeypatch, service, "inv.aigerim")
    assert _decide(decisions, negative, "--confirmed", "--by", "Aigerim").exit_code == 0
    assert _decide(decisions, positive, "--confirmed", "--by", "Aigerim").exit_code == 0
    assert _decide(decisions, positive, "--cleared", "--by", "Aigerim", "--note", "finding overturned").exit_code == 0

    after_summary, after = features(tmp_path / "after")
    labels = dict(zip(after["claim_id"], after["label"], strict=True))
    assert labels[negative] == 1, "confirmed: label 1 although the Fund has no finding"
    assert labels[positive] == 0, "cleared (the latest decision): label 0 although the Fund has a finding"
    joined = before.select("claim_id", "label", "split").join(
        after.select("claim_id", "label", "split"), on="claim_id", suffix="_after"
    )
    changed = joined.filter(pl.col("label") != pl.col("label_after"))["claim_id"].sort().to_list()
    assert changed == sorted([negative, positive]), "no other label moved"
    assert joined.filter(pl.col("split") != pl.col("split_after")).height == 0, "a decision never moves a split"
    assert after_summary["decisions"] == {
        "file": str(decisions),
        "claims_decided": 2,
        "labels_from_decisions": 2,
        "confirmed": 1,
        "cleared": 1,
        "changed_finding_labels": 2,
        "unmatched_claims": 0,
    }
    assert sum(after_summary[s]["decision_labelled"] for s in ("train", "val", "test")) == 2
    assert len(service.records()) == 3 and service.verify().exit_code == 0


def test_features_for_diagnosis_refuses_a_decisions_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["features", "diagnosis", "--interim", str(tmp_path), "--decisions", "x.csv"])
    assert result.exit_code == 2
    assert "--decisions applies to `shipa features fraud` only" in result.stderr


# --- reveal ------------------------------------------------------------------------------------------------------


def _reveal(raw: Path, *claims: str, extra: tuple[str, ...] = ()) -> Result:
    return runner.invoke(app, ["fraud", "reveal", *claims, "--raw", str(raw), *extra])


def test_reveal_maps_pseudonyms_to_the_funds_claims_for_an_investigator(
    service: Service, tiny_cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tiny_cohort / "data" / "raw"
    claims = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "claims.parquet", columns=["claim_id"])
    wanted = claims["claim_id"].sort().head(2).to_list()
    _as(monkeypatch, service, "inv.aigerim")
    result = _reveal(raw, *wanted)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    revealed = {}
    for line in lines:
        pseudonym, claim, number, where = line.split("\t")
        source_id = claim.removeprefix("claim ")
        assert Pseudonymizer(DEMO_PSEUDONYM_KEY).id("Claim", source_id) == pseudonym
        assert number == f"number {source_id}"  # the synthetic Fund numbers its claims with their ids
        assert where.startswith("fhir/Claim.ndjson line ")
        revealed[pseudonym] = source_id
    assert sorted(revealed) == wanted

    as_json = _reveal(raw, wanted[0], extra=("--json",))
    assert as_json.exit_code == 0
    (match,) = json.loads(as_json.stdout)[wanted[0]]
    assert match["claim_id"] == revealed[wanted[0]] and match["source"] == "fhir/Claim.ndjson"

    # Audited with the pseudonyms only: no revealed id in the log, nor on stderr (the log lines).
    entries = service.records()
    assert [e.output for e in entries] == [
        {"claim_ids": wanted, "found": wanted, "not_found": []},
        {"claim_ids": [wanted[0]], "found": [wanted[0]], "not_found": []},
    ]
    assert all((e.endpoint, e.token_name, e.outcome) == ("shipa fraud reveal", "inv.aigerim", "0") for e in entries)
    for source_id in revealed.values():
        assert all(source_id not in e.output_json + (e.outcome_desc or "") for e in entries)
        assert source_id not in result.stderr
    assert service.verify().exit_code == 0


def test_reveal_logs_no_revealed_id_even_at_debug_level(service: Service, tiny_cohort: Path, tmp_path: Path) -> None:
    raw = tiny_cohort / "data" / "raw"
    claims = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "claims.parquet", columns=["claim_id"])
    pseudonym = claims["claim_id"].sort()[0]
    env = {
        **os.environ,
        "SHIPA_TOKEN": service.tokens["inv.aigerim"],
        "SHIPA_LOG_LEVEL": "DEBUG",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "fraud", "reveal", pseudonym, "--raw", str(raw)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    source_id = done.stdout.split("\t")[1].removeprefix("claim ")
    assert Pseudonymizer(DEMO_PSEUDONYM_KEY).id("Claim", source_id) == pseudonym
    assert source_id not in done.stderr


def test_reveal_of_an_unknown_pseudonym_exits_1_and_is_audited(
    service: Service, tiny_cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tiny_cohort / "data" / "raw"
    known = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "claims.parquet")["claim_id"][0]
    _as(monkeypatch, service, "inv.aigerim")
    result = _reveal(raw, known, CLAIM)
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith(known)
    assert f"no claim in {raw} has the pseudonym {CLAIM}" in result.stderr
    (entry,) = service.records()
    assert entry.outcome == "4" and entry.output == {
        "claim_ids": [known, CLAIM],
        "found": [known],
        "not_found": [CLAIM],
    }
    assert entry.outcome_desc == "1 of 2 pseudonyms match no claim"


def test_reveal_is_refused_to_other_roles_and_to_malformed_ids(
    service: Service, tiny_cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tiny_cohort / "data" / "raw"
    _as(monkeypatch, service, "dr.bolat")
    refused = _reveal(raw, CLAIM)
    assert refused.exit_code == 77 and refused.stdout == ""
    assert "`shipa fraud reveal` needs the investigator role" in refused.stderr
    _as(monkeypatch, service, "inv.aigerim")
    bad = _reveal(raw, "ORG0015")
    assert bad.exit_code == 2 and "32 hex digits" in bad.stderr
    entries = service.records()
    assert [(e.token_name, e.outcome, e.output) for e in entries] == [
        ("dr.bolat", "4", {"refused": "role"}),
        ("inv.aigerim", "4", {"refused": "invalid input"}),
    ]
    assert service.verify().exit_code == 0

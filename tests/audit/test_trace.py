"""``shipa audit trace``: from one audit record to the model version, run, commit, data and ingest report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from pipelines.audit.errors import AuditEventNotFoundError
from pipelines.audit.lineage import file_md5
from pipelines.audit.trace import find_record, render_trace, trace_dict, trace_event
from pipelines.predictionlog.log import PredictionLog

from .helpers import COMMIT, EVAL_MD5, IMAGES_MD5, NAME, PIPELINE_ID, TABLES_MD5, TRAIN_MD5, Registered, dvc_lock


def _trace(ref: str, log: PredictionLog, reg: Registered, root: Path | None = None) -> str:
    result = trace_event(ref, audit_log=log, tracking_uri=reg.tracking_uri, project_root=root or reg.root)
    return render_trace(result)


def test_trace_follows_the_chain_to_the_ingest_report(registered: Registered, audit_log: PredictionLog) -> None:
    out = _trace("3", audit_log, registered)
    record = find_record(audit_log, "3")
    assert out.startswith(f"Audit event 3 (event id {record.event_id})")
    assert f"model           {NAME} version {registered.version} (alias champion)" in out
    assert "hash chain      verified: the whole chain is intact" in out
    assert f"-> Model version models:/{NAME}/{registered.version}" in out
    assert f"-> MLflow run {registered.run_id}" in out
    assert f"pipeline run    {PIPELINE_ID}" in out
    assert f"-> Git commit {COMMIT} (uncommitted changes: false)" in out
    assert f"models/diagnosis/eval                  {EVAL_MD5}  match" in out
    assert f"models/diagnosis/train                 {TRAIN_MD5}  match" in out
    assert f"data/interim/tables  {TABLES_MD5}" in out and f"dvc.lock {TABLES_MD5}: match" in out
    assert f"data/interim/images  {IMAGES_MD5}" in out
    assert "-> Ingest report: MATCH" in out
    assert f"{registered.root / 'data' / 'interim' / 'ingest_report.json'} (md5 ok)" in out
    assert "quarantined     7 records" in out
    assert "FHIR resources  accepted 98, quarantined 2, read 100" in out


def test_trace_by_event_uuid_and_as_json(registered: Registered, audit_log: PredictionLog) -> None:
    record = find_record(audit_log, "7")
    assert find_record(audit_log, record.event_id) == record
    result = trace_event(
        record.event_id, audit_log=audit_log, tracking_uri=registered.tracking_uri, project_root=registered.root
    )
    data = trace_dict(result)
    json.dumps(data)
    assert data["record"]["seq"] == 7
    assert data["git_commit"] == COMMIT
    assert {d["path"]: d["recorded"] for d in data["data"]}["models/diagnosis/eval"] == EVAL_MD5
    assert data["ingest"]["status"] == "match"
    assert data["ingest"]["hashes"]["data/interim/tables"] == {"recorded": TABLES_MD5, "dvc_lock": TABLES_MD5}
    assert data["chain"]["ok"] is True and data["chain"]["record_verified"] is True


def test_trace_says_clearly_when_the_workspace_holds_other_data(
    registered: Registered, audit_log: PredictionLog, tmp_path: Path
) -> None:
    shutil.copytree(registered.root / "data", tmp_path / "data")
    report_md5 = file_md5(tmp_path / "data" / "interim" / "ingest_report.json")
    (tmp_path / "dvc.lock").write_text(dvc_lock(report_md5, tables_md5="d" * 32 + ".dir"), encoding="utf-8")
    out = _trace("3", audit_log, registered, tmp_path)
    assert "-> Ingest report: DIFFERS: the workspace's dvc.lock does NOT match the version's ingest data" in out
    assert f"data/interim/tables  {TABLES_MD5}" in out and f"dvc.lock {'d' * 32}.dir: DIFFERS" in out
    assert "quarantined" not in out


def test_trace_marks_records_the_chain_no_longer_vouches_for(registered: Registered, audit_log: PredictionLog) -> None:
    with audit_log.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET model_alias = 'challenger' WHERE seq = 4"))
    before, after = _trace("3", audit_log, registered), _trace("4", audit_log, registered)
    assert "hash chain      verified up to record 3; the log is ALTERED later" in before
    assert "hash chain      NOT VERIFIED: the log is ALTERED at or before this record" in after


def test_a_record_of_an_unregistered_model_stops_at_the_registry(
    registered: Registered, audit_log: PredictionLog
) -> None:
    last = max(r.seq for r in audit_log.iter_all())
    out = _trace(str(last), audit_log, registered)
    assert "shipa-fraud version 1" in out
    assert "-> Model version: models:/shipa-fraud/1 does not exist in the registry" in out


def test_unknown_events_are_named(registered: Registered, audit_log: PredictionLog) -> None:
    with pytest.raises(AuditEventNotFoundError, match="audit event '9999' is not in the audit log"):
        _trace("9999", audit_log, registered)
    with pytest.raises(AuditEventNotFoundError):
        _trace("0b0e5a31-0000-4000-8000-000000000000", audit_log, registered)

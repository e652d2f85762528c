"""``shipa audit trace``: from one prediction's audit record back to the data it was built from.

The chain: audit record (and whether the log's hash chain vouches for it) -> registered model version ->
MLflow run -> git commit and data hashes -> the stages upstream in ``dvc.lock`` -> the ingest report of that
data version (only when the workspace's ``dvc.lock`` records the same ingest outputs; otherwise it says so).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pipelines.audit.errors import AuditEventNotFoundError
from pipelines.audit.evidence import VersionEvidence, collect
from pipelines.audit.usage import outcome_name
from pipelines.predictionlog.entry import LogEntry
from pipelines.predictionlog.log import PredictionLog, VerifyResult, events_table
from pipelines.tracking import tags as names
from pipelines.tracking.errors import ModelVersionNotFoundError


@dataclass(frozen=True)
class TraceResult:
    """The chain behind one audit record.

    Attributes:
        record: the audit record.
        verify: the whole log's verification.
        evidence: the model version's evidence, or None when the version is not in the registry.
        problem: why the chain stops early (None when complete).
    """

    record: LogEntry
    verify: VerifyResult
    evidence: VersionEvidence | None
    problem: str | None = None

    @property
    def record_verified(self) -> bool:
        """Whether the hash chain vouches for this record (intact up to and including it)."""
        return self.verify.ok or (self.verify.first_bad_id is not None and self.record.seq < self.verify.first_bad_id)


def find_record(audit_log: PredictionLog, ref: str) -> LogEntry:
    """The record with sequence number ``ref`` (the AuditEvent id) or event id (uuid) ``ref``.

    Raises:
        AuditEventNotFoundError: no such record.
    """
    ref = ref.strip()
    c = events_table.c
    condition = c.seq == int(ref) if ref.isdigit() else c.event_id == ref
    with audit_log.engine.connect() as conn:
        row = conn.execute(select(events_table).where(condition)).mappings().first()
    if row is None:
        raise AuditEventNotFoundError(f"audit event {ref!r} is not in the audit log")
    return LogEntry(**dict(row))


def trace_event(ref: str, *, audit_log: PredictionLog, tracking_uri: str, project_root: Path) -> TraceResult:
    """Follow audit event ``ref`` to its model version, run, commit, data and ingest report.

    Raises:
        AuditEventNotFoundError: no such record.
    """
    record = find_record(audit_log, ref)
    verify = audit_log.verify()
    try:
        evidence = collect(
            record.model_name, record.model_version, tracking_uri=tracking_uri, project_root=project_root
        )
    except ModelVersionNotFoundError as exc:
        return TraceResult(record, verify, None, str(exc))
    return TraceResult(record, verify, evidence)


def _chain_line(result: TraceResult) -> str:
    v = result.verify
    if v.ok:
        return f"verified: the whole chain is intact ({v.checked} records, head {v.head_hash})"
    if result.record_verified:
        last_good = v.first_bad_id - 1 if v.first_bad_id else "?"
        return f"verified up to record {last_good}; the log is ALTERED later: {v.reason}"
    return f"NOT VERIFIED: the log is ALTERED at or before this record: {v.reason}"


def render_trace(result: TraceResult) -> str:
    """The chain as plain text, one step per block."""
    r = result.record
    out = [
        f"Audit event {r.seq} (event id {r.event_id})",
        f"  recorded        {r.recorded}",
        f"  endpoint        {r.endpoint}",
        f"  requested by    token {r.token_name} (role {r.role}, purpose {r.purpose_of_use})",
        f"  model           {r.model_name} version {r.model_version} (alias {r.model_alias})",
        f"  patient         {r.patient_pseudonym or 'none'} (pseudonym)",
        f"  input sha256    {r.input_sha256}",
        f"  output          {r.output_json}",
        f"  outcome         {outcome_name(r.outcome)}, latency {r.latency_ms:.1f} ms",
        f"  record hash     {r.hash} (previous {r.prev_hash})",
        f"  hash chain      {_chain_line(result)}",
    ]
    ev = result.evidence
    if ev is None:
        out += ["", f"-> Model version: {result.problem}"]
        return "\n".join(out) + "\n"
    tags = ev.lineage_tags
    out += [
        "",
        f"-> Model version {ev.info.uri}",
        f"  registered      {ev.info.created}",
        f"  aliases now     {', '.join(ev.info.aliases) or 'none'}",
        f"  gate            {tags.get(names.GATE_DECISION, 'none')} by {tags.get(names.GATE_BY, 'n/a')} "
        f"at {tags.get(names.GATE_AT, 'n/a')}",
        f"  test data md5   {tags.get(names.TEST_DATA_MD5, 'n/a')}",
    ]
    run = ev.run
    out += ["", f"-> MLflow run {run.run_id if run else 'none recorded'}"]
    if run:
        out += [
            f"  stage           {run.stage or run.name} ({run.status}, {run.start} to {run.end})",
            f"  pipeline run    {tags.get(names.PIPELINE_RUN_ID, 'n/a')}",
            f"  experiment      {run.experiment_id}",
        ]
    out += [
        "",
        f"-> Git commit {tags.get(names.GIT_COMMIT, 'unknown')} "
        f"(uncommitted changes: {tags.get(names.GIT_DIRTY, 'unknown')})",
        f"  params sha256   {tags.get(names.PARAMS_SHA256, 'n/a')}",
        "",
        f"-> Data hashes (shipa.data.*) against {ev.lock_path}{'' if ev.lock_found else ' (not found)'}",
    ]
    width = max((len(c.path) for c in ev.data_checks), default=0)
    out += [f"  {c.path:<{width}}  {c.recorded}  {c.status}" for c in ev.data_checks] or ["  none recorded"]
    for step in ev.upstream:
        out.append(
            f"  <- {step.stage} (through {step.via}): reads "
            + ", ".join(f"{p} {m}" for p, m in sorted(step.deps.items()))
        )
    out += _ingest_lines(ev)
    return "\n".join(out) + "\n"


def _ingest_lines(ev: VersionEvidence) -> list[str]:
    link = ev.ingest
    out = ["", f"-> Ingest report: {link.status.upper()}: {link.message}"]
    for path, (recorded, lock) in link.hashes.items():
        state = "match" if recorded == lock else "DIFFERS"
        out.append(f"  {path}  {recorded} (from {link.sources.get(path, '?')}); dvc.lock {lock or 'none'}: {state}")
    if link.status == "match":
        out.append(f"  report          {link.report_path} (md5 {link.report_status})")
        report = link.report or {}
        if "quarantined_total" in report:
            out.append(f"  quarantined     {report['quarantined_total']} records")
        by_type = (report.get("fhir") or {}).get("by_resource_type") or {}
        totals: dict[str, int] = {}
        for counts in by_type.values():
            for key, value in (counts or {}).items():
                if isinstance(value, int):
                    totals[key] = totals.get(key, 0) + value
        if totals:
            out.append("  FHIR resources  " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
        dicom = report.get("dicom") or {}
        if isinstance(dicom, dict) and dicom:
            scalars = {k: v for k, v in dicom.items() if isinstance(v, int)}
            out.append("  DICOM           " + ", ".join(f"{k} {v}" for k, v in sorted(scalars.items())))
    return out


def trace_dict(result: TraceResult) -> dict[str, Any]:
    """The chain as plain JSON-ready data (``shipa audit trace --json``)."""
    ev = result.evidence
    out: dict[str, Any] = {
        "record": result.record.as_dict(),
        "chain": {**result.verify.__dict__, "record_verified": result.record_verified},
        "problem": result.problem,
    }
    if ev is not None:
        out["model_version"] = {"uri": ev.info.uri, "aliases": list(ev.info.aliases), "created": ev.info.created}
        out["run"] = (
            None if ev.run is None else {"run_id": ev.run.run_id, "stage": ev.run.stage, "status": ev.run.status}
        )
        tags = ev.lineage_tags
        out["git_commit"] = tags.get(names.GIT_COMMIT)
        out["git_dirty"] = tags.get(names.GIT_DIRTY)
        out["data"] = [c.__dict__ for c in ev.data_checks]
        out["upstream"] = [s.__dict__ for s in ev.upstream]
        link = ev.ingest
        out["ingest"] = {
            "status": link.status,
            "message": link.message,
            "hashes": {p: {"recorded": a, "dvc_lock": b} for p, (a, b) in link.hashes.items()},
            "sources": link.sources,
            "report_path": link.report_path,
            "report_status": link.report_status,
            "report": link.report,
        }
    plain: dict[str, Any] = json.loads(json.dumps(out, default=str))
    return plain

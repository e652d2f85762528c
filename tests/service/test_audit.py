"""The HMAC-chained audit log: append, verify after tampering (records, head, checkpoints), concurrency, FHIR
AuditEvent, queries. Every test that touches the database runs on an SQLite file and on PostgreSQL
(``database_url``, tests/postgres.py); tampering goes through a separate SQLAlchemy engine, as someone with the
sqlite3 shell or psql would, outside the service's code."""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateTable

from pipelines.predictionlog.checkpoints import CheckpointFile
from pipelines.predictionlog.log import (
    _HASHED_FIELDS,
    GENESIS_HASH,
    AuditOutcome,
    PredictionLog,
    compact_json,
    events_table,
    head_table,
    record_hash,
)

from .helpers import AUDIT_KEY, FAKE_IIN, T0, make_record

KEY = AUDIT_KEY.encode()
ALTERED_OUTPUT = '{"scores":{"claim-2":0.01}}'  # a bound value: SQLAlchemy's text() reads ":0" as a parameter


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    return tmp_path / "audit.audit-checkpoints.jsonl"


@pytest.fixture
def log(database_url: str, checkpoints: Path) -> Iterator[PredictionLog]:
    audit_log = PredictionLog(database_url, key=KEY, checkpoints=checkpoints)
    yield audit_log
    audit_log.close()


def execute_sql(url: str, sql: str, params: dict[str, Any] | list[dict[str, Any]] | None = None) -> None:
    """Tamper with the database as someone with the sqlite3 shell or psql would: one statement (run once per
    parameter set when given a list), committed on an engine and connection of its own, outside the service's code."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def fill(log: PredictionLog, n: int = 5) -> list[Any]:
    return [log.append(make_record(i)) for i in range(n)]


def test_append_chains_records_and_verify_passes(log: PredictionLog) -> None:
    assert log.verify().ok and log.verify().checked == 0
    records = fill(log)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in pairwise(records))
    assert records[2].output == {"scores": {"claim-2": 0.502}}
    assert records[2].latency_ms == 14.5 and records[2].purpose_of_use == "FRAUD"
    assert records[2].recorded == "2025-03-01T09:02:00.000000Z"
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id, result.head_hash) == (True, 5, None, records[-1].hash)


def test_edited_output_is_named(log: PredictionLog, database_url: str) -> None:
    fill(log)
    execute_sql(database_url, "UPDATE audit_events SET output_json = :json WHERE seq = 3", {"json": ALTERED_OUTPUT})
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.checked) == (False, 3, 2)
    assert "altered" in (result.reason or "")


def test_edited_and_rehashed_record_breaks_the_next_link(log: PredictionLog, database_url: str) -> None:
    fill(log)
    with log.engine.connect() as conn:
        row = dict(conn.execute(events_table.select().where(events_table.c.seq == 3)).mappings().one())
    row["latency_us"] = 1
    execute_sql(
        database_url,
        "UPDATE audit_events SET latency_us = 1, hash = :hash WHERE seq = 3",
        {"hash": record_hash(row, KEY)},
    )
    unanchored = PredictionLog(database_url, key=KEY)
    result = unanchored.verify()
    unanchored.close()
    assert (result.ok, result.first_bad_id) == (False, 4)
    assert "does not chain" in (result.reason or "")
    anchored = log.verify()  # the checkpoint of record 3 shows it first
    assert (anchored.ok, anchored.first_bad_id, anchored.first_bad_checkpoint) == (False, 3, 3)


def test_deleted_record_is_named(log: PredictionLog, database_url: str) -> None:
    fill(log)
    execute_sql(database_url, "DELETE FROM audit_events WHERE seq = 2")
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.checked) == (False, 2, 1)
    assert "record 2 is missing (deleted)" in (result.reason or "")


def test_deleted_last_records_are_named(log: PredictionLog, database_url: str) -> None:
    fill(log)
    execute_sql(database_url, "DELETE FROM audit_events WHERE seq >= 4")
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        4,
        "records 4 to 5 are missing (deleted from the end)",
    )
    execute_sql(database_url, "DELETE FROM audit_events")
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        1,
        "records 1 to 5 are missing (deleted from the end)",
    )


def test_edited_first_record_is_named(log: PredictionLog, database_url: str) -> None:
    fill(log, 2)
    execute_sql(database_url, "UPDATE audit_events SET token_name = 'someone-else' WHERE seq = 1")
    assert log.verify().first_bad_id == 1


def checkpoint_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def test_each_commit_appends_one_signed_checkpoint_of_the_head(log: PredictionLog, checkpoints: Path) -> None:
    records = fill(log, 3)
    lines = checkpoint_lines(checkpoints)
    assert [(c["seq"], c["hash"]) for c in lines] == [(r.seq, r.hash) for r in records]
    assert all(c["v"] == 1 and len(c["sig"]) == 64 and c["time"].endswith("Z") for c in lines)
    assert checkpoints.stat().st_mode & 0o777 == 0o600
    result = log.verify()
    assert (result.ok, result.checked, result.checkpoints, result.anchored) == (True, 3, 3, 3)


def test_truncation_with_the_head_rewound_is_detected(log: PredictionLog, database_url: str, checkpoints: Path) -> None:
    records = fill(log, 6)
    # What someone with the sqlite3 shell or psql does to hide the last two requests: cut them, move the head back.
    execute_sql(database_url, "DELETE FROM audit_events WHERE seq >= 5")
    execute_sql(database_url, "UPDATE audit_head SET seq = 4, hash = :hash WHERE id = 1", {"hash": records[3].hash})
    unanchored = PredictionLog(database_url, key=KEY)  # the chain alone: a valid, shorter chain
    assert unanchored.verify().ok and unanchored.verify().checked == 4
    unanchored.close()
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id, result.first_bad_checkpoint) == (False, 4, 5, 6)
    assert result.reason is not None and result.reason.startswith(
        f"the chain ends at record 4 but checkpoint line 6 ({checkpoint_lines(checkpoints)[5]['time']}) vouches for "
        "6 records: records 5 to 6 were cut off and the head moved back"
    )
    # The service appending after the rewind builds on the shorter chain: the cut stays visible.
    log.append(make_record(9))
    assert not log.verify().ok


def test_an_altered_head_row_is_named(log: PredictionLog, database_url: str) -> None:
    fill(log, 3)
    execute_sql(database_url, "UPDATE audit_head SET hash = :hash WHERE id = 1", {"hash": "f" * 64})
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        3,
        "the chain head does not match record 3 (altered)",
    )


def test_verifying_while_another_process_appends_finds_no_fault(database_url: str, checkpoints: Path) -> None:
    """An auditor's verify races the service's appends: records committed after it read the head are no fault
    (on PostgreSQL under READ COMMITTED, where each statement sees its own snapshot)."""
    writer = PredictionLog(database_url, key=KEY, checkpoints=checkpoints)
    reader = PredictionLog(database_url, key=KEY, checkpoints=checkpoints)
    done = threading.Event()

    def append() -> None:
        for i in range(300):
            writer.append(make_record(i))
        done.set()

    thread = threading.Thread(target=append)
    thread.start()
    results = []
    while not done.is_set():
        results.append(reader.verify())
    thread.join()
    results.append(reader.verify())
    writer.close()
    reader.close()
    assert len(results) > 1 and [r.reason for r in results if not r.ok] == []
    assert results[-1].checked == 300


def _sha256(row: dict[str, Any]) -> str:
    return hashlib.sha256(compact_json({name: row[name] for name in _HASHED_FIELDS}).encode()).hexdigest()


def _rewrite_chain(url: str, log: PredictionLog, hasher: Callable[[dict[str, Any]], str]) -> None:
    """Alter record 3, then recompute every hash and link with ``hasher`` and move the head to the new last hash."""
    with log.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(events_table.select().order_by(events_table.c.seq)).mappings()]
    prev = GENESIS_HASH
    for row in rows:
        if row["seq"] == 3:
            row["output_json"] = ALTERED_OUTPUT
        row["prev_hash"] = prev
        row["hash"] = prev = hasher(row)
    execute_sql(
        url,
        "UPDATE audit_events SET output_json = :output_json, prev_hash = :prev_hash, hash = :hash WHERE seq = :seq",
        [{name: row[name] for name in ("output_json", "prev_hash", "hash", "seq")} for row in rows],
    )
    execute_sql(url, "UPDATE audit_head SET hash = :hash WHERE id = 1", {"hash": prev})


@pytest.mark.parametrize(
    "hasher",
    [_sha256, lambda row: record_hash(row, b"another-key-of-enough-length")],
    ids=["plain-sha256", "another-key"],
)
def test_a_chain_recomputed_without_the_key_fails_at_its_first_record(
    log: PredictionLog, database_url: str, hasher: Any
) -> None:
    fill(log, 5)
    _rewrite_chain(database_url, log, hasher)
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id) == (False, 0, 1)
    assert result.reason == "record 1 does not match its hash (altered), or the log was hashed under another audit key"


def test_a_chain_recomputed_with_the_key_still_fails_at_the_checkpoints(log: PredictionLog, database_url: str) -> None:
    """A leaked key lets the chain be rewritten, but not the checkpoint lines already written outside it."""
    fill(log, 5)
    _rewrite_chain(database_url, log, lambda row: record_hash(row, KEY))
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id, result.first_bad_checkpoint) == (False, 2, 3, 3)
    assert (result.reason or "").startswith("record 3 is not the record checkpoint line 3 (")


@pytest.mark.parametrize(
    "forge",
    [
        lambda cp, last: CheckpointFile(cp, b"another-key-of-enough-length").line_for(last["seq"], last["hash"]),
        lambda cp, last: (json.dumps({**last, "seq": 9}) + "\n").encode(),  # a signed line with its count raised
        lambda cp, last: (json.dumps({**last, "time": "2020-01-01T00:00:00.000000Z"}) + "\n").encode(),
        lambda cp, last: b'{"v":1,"seq":3,"hash":"',  # not JSON
    ],
    ids=["other-key", "raised-count", "moved-time", "garbage"],
)
def test_a_forged_checkpoint_line_is_named(log: PredictionLog, checkpoints: Path, forge: Any) -> None:
    fill(log, 3)
    last = checkpoint_lines(checkpoints)[-1]
    with checkpoints.open("ab") as handle:
        handle.write(forge(checkpoints, last))
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id, result.first_bad_checkpoint) == (False, 3, None, 4)
    assert result.reason == (
        f"checkpoint line 4 of {checkpoints} is unreadable or not signed with the audit key (forged or altered)"
    )


def test_a_deleted_checkpoint_file_is_named(log: PredictionLog, checkpoints: Path) -> None:
    fill(log, 2)
    checkpoints.unlink()
    result = log.verify()
    assert (result.ok, result.checked) == (False, 2)
    assert (result.reason or "").startswith(f"no checkpoint file at {checkpoints}: nothing shows")


def test_an_unwritable_checkpoint_file_does_not_fail_the_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    path = tmp_path / "not-a-folder" / "cp.jsonl"
    audit_log = PredictionLog(f"sqlite:///{tmp_path / 'a.db'}", key=KEY, checkpoints=path)
    assert audit_log.append(make_record(1)).seq == 1  # committed: the request is answered and audited
    assert f"audit checkpoint for record 1 not written to {path}" in caplog.text
    assert not audit_log.verify().ok
    audit_log.close()


def test_concurrent_appends_from_threads_and_two_engines_keep_one_chain(database_url: str, checkpoints: Path) -> None:
    # Two logs on one database stand for two worker processes: each has its own lock and engine (connection pool).
    logs = [PredictionLog(database_url, key=KEY, checkpoints=checkpoints) for _ in range(2)]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            for i in range(25):
                logs[k % 2].append(make_record(k * 100 + i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = logs[0].verify()
    lines = checkpoint_lines(checkpoints)
    assert (result.ok, result.checked, result.checkpoints, result.anchored) == (True, 200, len(lines), 200)
    assert len({c["seq"] for c in lines}) == len(lines)  # one line per transaction, never two for one head
    with logs[0].engine.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("SELECT seq FROM audit_events ORDER BY seq"))]
        head = conn.execute(head_table.select()).one()
    assert seqs == list(range(1, 201)) and head.seq == 200
    for audit_log in logs:
        audit_log.close()


def _append_many(url: str, checkpoints: Path, barrier: Any, k: int) -> None:
    audit_log = PredictionLog(url, key=KEY, checkpoints=checkpoints)
    barrier.wait(timeout=60)
    for i in range(40):
        audit_log.append(make_record(k * 100 + i))
    audit_log.close()


def test_processes_appending_together_keep_one_chain_with_consistent_checkpoints(
    database_url: str, checkpoints: Path
) -> None:
    """Service workers (``shipa serve --workers N``) append to one chain and one checkpoint file."""
    url = database_url
    PredictionLog(url, key=KEY, checkpoints=checkpoints).close()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    procs = [context.Process(target=_append_many, args=(url, checkpoints, barrier, k)) for k in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    audit_log = PredictionLog(url, key=KEY, checkpoints=checkpoints)
    result = audit_log.verify()
    hashes = {r.seq: r.hash for r in audit_log.iter_all()}
    audit_log.close()
    lines = checkpoint_lines(checkpoints)
    assert (result.ok, result.checked, result.checkpoints, result.anchored) == (True, 160, len(lines), 160)
    assert len(lines) == 160  # one process appending one record at a time: one transaction, one line each
    assert sorted(c["seq"] for c in lines) == list(range(1, 161))
    assert all(hashes[c["seq"]] == c["hash"] for c in lines)


def _open_and_append(url: str, barrier: Any, k: int) -> None:
    from pipelines.service.tokens import TokenStore

    barrier.wait(timeout=60)  # every process opens the new database at the same moment
    audit_log = PredictionLog(url)
    TokenStore(audit_log.engine, b"pepper").list()
    audit_log.append(make_record(k))
    audit_log.close()


def test_processes_opening_a_new_database_together_all_create_it_and_append(
    new_database_url: Callable[[], str],
) -> None:
    """Two CLI commands (or service workers) on a database nobody opened yet: all create the tables, none fails
    (PostgreSQL reports the loser of a CREATE TABLE race as a duplicate type or table)."""
    context = multiprocessing.get_context("fork")
    for _attempt in range(4):
        url = new_database_url()
        barrier = context.Barrier(4)
        procs = [context.Process(target=_open_and_append, args=(url, barrier, k)) for k in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        audit_log = PredictionLog(url)
        result = audit_log.verify()
        audit_log.close()
        assert (result.ok, result.checked) == (True, 4)


def test_appends_waiting_for_a_writer_are_committed_together(
    log: PredictionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    log.append(make_record(0))
    transactions: list[int] = []
    write = log._append_once
    monkeypatch.setattr(log, "_append_once", lambda rows: transactions.append(len(rows)) or write(rows))
    stored: dict[int, Any] = {}

    def worker(i: int) -> None:
        stored[i] = log.append(make_record(i))

    with log._lock:  # a write in progress: the appends below queue up behind it
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 6)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(log._pending) < 5 and time.monotonic() < deadline:
            time.sleep(0.001)
    for t in threads:
        t.join()
    assert transactions == [5]  # one head update and one commit for the five records
    assert sorted(r.seq for r in stored.values()) == [2, 3, 4, 5, 6]
    for i, record in stored.items():
        assert record.input_sha256 == make_record(i).input_sha256  # each caller gets its own record back
    result = log.verify()
    assert (result.ok, result.checked) == (True, 6)


def test_a_failed_group_write_fails_every_waiting_append(log: PredictionLog, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(rows: list[dict[str, Any]]) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(log, "_append_once", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        log.append(make_record(1))
    monkeypatch.undo()
    assert log.append(make_record(2)).seq == 1 and log.verify().ok


def test_appends_of_one_event_loop_turn_share_one_commit(log: PredictionLog, checkpoints: Path) -> None:
    commits: list[int] = []
    event.listen(log.engine, "commit", lambda _conn: commits.append(1))
    thread_record = log.append(make_record(0))  # a thread's append (one commit) before the loop's

    async def requests() -> list[Any]:
        return await asyncio.gather(*(log.append_on_loop(make_record(i)) for i in range(1, 9)))

    stored = asyncio.run(requests())
    assert len(commits) == 2  # the thread's record, then the eight of one turn together
    assert [c["seq"] for c in checkpoint_lines(checkpoints)] == [1, 9]  # and one checkpoint line each
    assert [r.seq for r in stored] == list(range(2, 10))
    assert stored[0].prev_hash == thread_record.hash
    assert [r.input_sha256 for r in stored] == [make_record(i).input_sha256 for i in range(1, 9)]
    result = log.verify()
    assert (result.ok, result.checked) == (True, 9)


def test_a_failed_loop_commit_fails_its_turn_and_the_log_goes_on(
    log: PredictionLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(rows: list[dict[str, Any]]) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr(log, "_append_once", broken)

    async def requests() -> list[Any]:
        return await asyncio.gather(*(log.append_on_loop(make_record(i)) for i in range(3)), return_exceptions=True)

    outcomes = asyncio.run(requests())
    assert [str(o) for o in outcomes] == ["disk full"] * 3
    monkeypatch.undo()
    with pytest.raises(ValueError, match="IIN"):  # refused before it joins a turn, as by append
        asyncio.run(log.append_on_loop(make_record(9, patient_pseudonym=FAKE_IIN)))
    assert asyncio.run(log.append_on_loop(make_record(4))).seq == 1 and log.verify().ok


def test_to_fhir_is_a_valid_r4_audit_event(log: PredictionLog) -> None:
    with_patient = log.append(make_record(1))
    without = log.append(
        make_record(2, patient_pseudonym=None, outcome=AuditOutcome.serious_failure, outcome_desc="model error")
    )
    event = log.to_fhir(with_patient)
    parsed = AuditEvent.model_validate(event)
    assert parsed.recorded is not None and event["outcome"] == "0" and event["action"] == "E"
    assert event["type"]["code"] == "rest"
    agent = event["agent"][0]
    assert agent["requestor"] is True and agent["who"]["display"] == "inv-1"
    assert agent["role"][0]["coding"][0]["code"] == "investigator"
    assert event["source"]["observer"]["display"] == "shipa-service"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "FRAUD"
    model, data, patient = event["entity"][:3]
    assert model["what"]["identifier"]["value"] == "shipa-fraud/7"
    assert {"type": "alias", "valueString": "champion"} in model["detail"]
    assert data["detail"] == [{"type": "sha256", "valueString": with_patient.input_sha256}]
    assert patient["what"] == {"reference": f"Patient/{'f' * 32}"}
    other = log.to_fhir(without)
    AuditEvent.model_validate(other)
    assert other["outcome"] == "8" and other["outcomeDesc"] == "model error"
    assert all("Patient/" not in str(e.get("what")) for e in other["entity"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"patient_pseudonym": FAKE_IIN}, "never an IIN"),
        ({"patient_pseudonym": "Иванов"}, "never an IIN"),
        ({"input_sha256": "abc"}, "input_sha256"),
        ({"output": {"image": "x" * 70_000}}, "not images"),
        ({"output": {"score": float("nan")}}, "Out of range float"),
        ({"outcome": "bad"}, "bad"),
        ({"output": {"when": object()}}, "not JSON"),
        ({"model_name": "m" * 201}, "model_name must be 1-200"),
        ({"model_version": ""}, "model_version must be"),
    ],
)
def test_unusable_records_are_refused_and_not_written(
    log: PredictionLog, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        log.append(make_record(0, **overrides))
    assert log.verify().checked == 0


def test_query_filters_and_pages_newest_first(log: PredictionLog) -> None:
    fill(log, 6)
    log.append(make_record(6, model_name="shipa-pneumonia", role="clinician", token_name="doc-1"))
    log.append(make_record(7, outcome="major_failure"))
    page = log.query(page=1, page_size=3)
    assert page.total == 8 and [r.seq for r in page.items] == [8, 7, 6] and page.has_next
    assert [r.seq for r in log.query(page=3, page_size=3).items] == [2, 1]
    window = log.query(start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=4))
    assert [r.seq for r in window.items] == [4, 3]
    naive = log.query(start=datetime(2025, 3, 1, 9, 5))  # naive means UTC
    assert [r.seq for r in naive.items] == [8, 7, 6]
    assert [r.seq for r in log.query(model="shipa-pneumonia").items] == [7]
    assert [r.token_name for r in log.query(role="clinician").items] == ["doc-1"]
    assert [r.seq for r in log.query(outcome="12").items] == [8]
    assert log.query(outcome="success").total == 7
    assert log.query(token_name="doc-1").total == 1
    assert [r.seq for r in log.iter_all()] == list(range(1, 9))
    with pytest.raises(ValueError):
        log.query(page=0)


def test_schema_and_statements_compile_for_postgresql() -> None:
    # The log must not depend on SQLite-only SQL: its DDL compiles for PostgreSQL.
    ddl = str(CreateTable(events_table).compile(dialect=postgresql.dialect()))
    assert "BIGINT NOT NULL" in ddl and "TEXT NOT NULL" in ddl
    str(CreateTable(head_table).compile(dialect=postgresql.dialect()))


def test_many_appends_chain_and_verify(log: PredictionLog) -> None:
    # Speed is measured by benchmarks/bench_service.py, never asserted here (CI machines are noisy).
    n = 300
    for i in range(n):
        log.append(make_record(i))
    result = log.verify()
    assert result.ok and result.checked == n


def test_numpy_outputs_are_stored_as_plain_json(log: PredictionLog) -> None:
    np = pytest.importorskip("numpy")
    record = log.append(make_record(1, output={"score": np.float32(0.25), "top": np.array([1, 2])}))
    assert record.output_json == '{"score":0.25,"top":[1,2]}'
    assert log.verify().ok

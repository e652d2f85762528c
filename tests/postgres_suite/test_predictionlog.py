"""The HMAC-chained prediction log on a real PostgreSQL server: the SQLite suite's tests again (those that reach
the database only through the log run unchanged; those that tamper with it do so here with psycopg, as someone
with ``psql`` would), plus worker processes and two real service processes appending to one chain."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from postgres import Database, PostgresServer
from service import test_audit as sqlite_suite
from service.helpers import AUDIT_KEY, StaticProvider, auth, build_app, make_record, make_settings, served
from service.test_audit import _sha256, checkpoint_lines, fill
from sqlalchemy import text

from pipelines.predictionlog.log import GENESIS_HASH, PredictionLog, events_table, head_table, record_hash
from pipelines.service.tokens import TokenStore

KEY = AUDIT_KEY.encode()

# The SQLite suite's tests that reach the database only through the log, collected again here on PostgreSQL.
test_append_chains_records_and_verify_passes = sqlite_suite.test_append_chains_records_and_verify_passes
test_each_commit_appends_one_signed_checkpoint_of_the_head = (
    sqlite_suite.test_each_commit_appends_one_signed_checkpoint_of_the_head
)
test_a_forged_checkpoint_line_is_named = sqlite_suite.test_a_forged_checkpoint_line_is_named
test_a_deleted_checkpoint_file_is_named = sqlite_suite.test_a_deleted_checkpoint_file_is_named
test_appends_waiting_for_a_writer_are_committed_together = (
    sqlite_suite.test_appends_waiting_for_a_writer_are_committed_together
)
test_a_failed_group_write_fails_every_waiting_append = sqlite_suite.test_a_failed_group_write_fails_every_waiting_append
test_appends_of_one_event_loop_turn_share_one_commit = sqlite_suite.test_appends_of_one_event_loop_turn_share_one_commit
test_a_failed_loop_commit_fails_its_turn_and_the_log_goes_on = (
    sqlite_suite.test_a_failed_loop_commit_fails_its_turn_and_the_log_goes_on
)
test_to_fhir_is_a_valid_r4_audit_event = sqlite_suite.test_to_fhir_is_a_valid_r4_audit_event
test_unusable_records_are_refused_and_not_written = sqlite_suite.test_unusable_records_are_refused_and_not_written
test_query_filters_and_pages_newest_first = sqlite_suite.test_query_filters_and_pages_newest_first
test_many_appends_chain_and_verify = sqlite_suite.test_many_appends_chain_and_verify
test_numpy_outputs_are_stored_as_plain_json = sqlite_suite.test_numpy_outputs_are_stored_as_plain_json


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    return tmp_path / "service.audit-checkpoints.jsonl"


@pytest.fixture
def log(pg_database: Database, checkpoints: Path) -> Iterator[PredictionLog]:
    audit_log = PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints)
    yield audit_log
    audit_log.close()


def raw_sql(db: Database, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Tamper with the database as someone with ``psql`` would, outside the service's code."""
    with psycopg.connect(db.conninfo) as conn:  # commits on leaving the block
        conn.execute(sql, params)  # type: ignore[arg-type]


def test_the_tables_are_postgresql_tables_with_the_declared_types(log: PredictionLog, pg_database: Database) -> None:
    fill(log, 1)
    with psycopg.connect(pg_database.conninfo) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'audit_events'"
            ).fetchall()
        )
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    assert log.engine.dialect.name == "postgresql" and log.engine.driver == "psycopg"
    assert (types["seq"], types["latency_us"], types["output_json"]) == ("bigint", "bigint", "text")
    assert types["hash"] == "character varying"
    assert head is not None and head[0] == 1 and head[1] == log.verify().head_hash


def test_edited_output_is_named(log: PredictionLog, pg_database: Database) -> None:
    fill(log)
    raw_sql(pg_database, 'UPDATE audit_events SET output_json = \'{"scores":{"claim-2":0.01}}\' WHERE seq = 3')
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.checked) == (False, 3, 2)
    assert "altered" in (result.reason or "")


def test_edited_and_rehashed_record_breaks_the_next_link(log: PredictionLog, pg_database: Database) -> None:
    fill(log)
    with log.engine.connect() as conn:
        row = dict(conn.execute(events_table.select().where(events_table.c.seq == 3)).mappings().one())
    row["latency_us"] = 1
    raw_sql(pg_database, "UPDATE audit_events SET latency_us = 1, hash = %s WHERE seq = 3", (record_hash(row, KEY),))
    unanchored = PredictionLog(pg_database.url, key=KEY)
    result = unanchored.verify()
    unanchored.close()
    assert (result.ok, result.first_bad_id) == (False, 4)
    assert "does not chain" in (result.reason or "")
    anchored = log.verify()  # the checkpoint of record 3 shows it first
    assert (anchored.ok, anchored.first_bad_id, anchored.first_bad_checkpoint) == (False, 3, 3)


def test_deleted_records_are_named(log: PredictionLog, pg_database: Database) -> None:
    fill(log)
    raw_sql(pg_database, "DELETE FROM audit_events WHERE seq = 2")
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.checked) == (False, 2, 1)
    assert "record 2 is missing (deleted)" in (result.reason or "")
    raw_sql(pg_database, "DELETE FROM audit_events WHERE seq >= 1")
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        1,
        "records 1 to 5 are missing (deleted from the end)",
    )


def test_truncation_with_the_head_rewound_is_detected(
    log: PredictionLog, pg_database: Database, checkpoints: Path
) -> None:
    records = fill(log, 6)
    # What someone with psql does to hide the last two requests: cut them and move the head back.
    raw_sql(pg_database, "DELETE FROM audit_events WHERE seq >= 5")
    raw_sql(pg_database, "UPDATE audit_head SET seq = 4, hash = %s WHERE id = 1", (records[3].hash,))
    unanchored = PredictionLog(pg_database.url, key=KEY)  # the chain alone: a valid, shorter chain
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


def test_an_altered_head_row_is_named(log: PredictionLog, pg_database: Database) -> None:
    fill(log, 3)
    raw_sql(pg_database, "UPDATE audit_head SET hash = %s WHERE id = 1", ("f" * 64,))
    result = log.verify()
    assert (result.ok, result.first_bad_id, result.reason) == (
        False,
        3,
        "the chain head does not match record 3 (altered)",
    )


def _rewrite_chain(db: Database, log: PredictionLog, hasher: Any) -> None:
    """Alter record 3, then recompute every hash and link with ``hasher`` and move the head to the new last hash."""
    with log.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(events_table.select().order_by(events_table.c.seq)).mappings()]
    prev = GENESIS_HASH
    with psycopg.connect(db.conninfo) as conn:
        for row in rows:
            if row["seq"] == 3:
                row["output_json"] = '{"scores":{"claim-2":0.01}}'
            row["prev_hash"] = prev
            row["hash"] = prev = hasher(row)
            conn.execute(
                "UPDATE audit_events SET output_json = %s, prev_hash = %s, hash = %s WHERE seq = %s",
                (row["output_json"], row["prev_hash"], row["hash"], row["seq"]),
            )
        conn.execute("UPDATE audit_head SET hash = %s WHERE id = 1", (prev,))


@pytest.mark.parametrize(
    "hasher",
    [_sha256, lambda row: record_hash(row, b"another-key-of-enough-length")],
    ids=["plain-sha256", "another-key"],
)
def test_a_chain_recomputed_without_the_key_fails_at_its_first_record(
    log: PredictionLog, pg_database: Database, hasher: Any
) -> None:
    fill(log, 5)
    _rewrite_chain(pg_database, log, hasher)
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id) == (False, 0, 1)
    assert result.reason == "record 1 does not match its hash (altered), or the log was hashed under another audit key"


def test_a_chain_recomputed_with_the_key_still_fails_at_the_checkpoints(
    log: PredictionLog, pg_database: Database
) -> None:
    fill(log, 5)
    _rewrite_chain(pg_database, log, lambda row: record_hash(row, KEY))
    result = log.verify()
    assert (result.ok, result.checked, result.first_bad_id, result.first_bad_checkpoint) == (False, 2, 3, 3)
    assert (result.reason or "").startswith("record 3 is not the record checkpoint line 3 (")


def test_verifying_while_another_engine_appends_finds_no_fault(pg_database: Database, checkpoints: Path) -> None:
    """An auditor's verify races the service's appends (READ COMMITTED: each statement sees its own snapshot)."""
    writer = PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints)
    reader = PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints)
    done = threading.Event()

    def append() -> None:
        for i in range(200):
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
    assert results[-1].checked == 200


def test_concurrent_appends_from_threads_and_two_engines_keep_one_chain(
    pg_database: Database, checkpoints: Path
) -> None:
    # Two logs on one database stand for two worker processes: each has its own lock and connection pool.
    logs = [PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints) for _ in range(2)]
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
    pg_database: Database, checkpoints: Path
) -> None:
    """Service workers (``shipa serve --workers N``) append to one chain and one checkpoint file."""
    PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints).close()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    procs = [context.Process(target=_append_many, args=(pg_database.url, checkpoints, barrier, k)) for k in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    audit_log = PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints)
    result = audit_log.verify()
    hashes = {r.seq: r.hash for r in audit_log.iter_all()}
    audit_log.close()
    lines = checkpoint_lines(checkpoints)
    assert (result.ok, result.checked, result.checkpoints, result.anchored) == (True, 160, len(lines), 160)
    assert len(lines) == 160  # one process appending one record at a time: one transaction, one line each
    assert sorted(c["seq"] for c in lines) == list(range(1, 161))
    assert all(hashes[c["seq"]] == c["hash"] for c in lines)


def _open_and_append(url: str, barrier: Any, k: int) -> None:
    barrier.wait(timeout=60)  # every process opens the new database at the same moment
    audit_log = PredictionLog(url)
    TokenStore(audit_log.engine, b"pepper").list()
    audit_log.append(make_record(k))
    audit_log.close()


def test_processes_opening_a_new_database_together_all_create_it_and_append(
    postgres_server: PostgresServer,
) -> None:
    """Two CLI commands (or service workers) on a database nobody opened yet: all create the tables, none fails
    (PostgreSQL reports the loser of a CREATE TABLE race as a duplicate type or table)."""
    context = multiprocessing.get_context("fork")
    for attempt in range(3):
        db = postgres_server.create_database(f"opened_together_{attempt}")
        barrier = context.Barrier(4)
        procs = [context.Process(target=_open_and_append, args=(db.url, barrier, k)) for k in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        audit_log = PredictionLog(db.url)
        result = audit_log.verify()
        audit_log.close()
        postgres_server.drop_database(db.name)
        assert (result.ok, result.checked) == (True, 4)


def _serve(url: str, checkpoints: Path, root: Path, port_queue: Any, stop: Any) -> None:
    """One service process: the real app (its shared engine, token store and audit log) under uvicorn."""
    settings = make_settings(root, database_url=url, audit_checkpoints=checkpoints, state_dir=root)
    with served(build_app(settings, StaticProvider()), settings) as base:
        port_queue.put(base)
        stop.wait(120)


def test_two_service_processes_append_to_one_chain(pg_database: Database, checkpoints: Path, tmp_path: Path) -> None:
    """Two service processes on one PostgreSQL database answer concurrent requests: every answer is audited in
    one unforked chain, anchored by one checkpoint file."""
    context = multiprocessing.get_context("fork")
    ports, stop = context.Queue(), context.Event()
    procs = [
        context.Process(target=_serve, args=(pg_database.url, checkpoints, tmp_path / f"s{k}", ports, stop))
        for k in range(2)
    ]
    for proc in procs:
        proc.start()
    try:
        bases = [ports.get(timeout=60) for _ in procs]
        # Added by a third process, as `shipa token add` would be: both services see it at once.
        store_log = PredictionLog(pg_database.url, key=KEY)
        token = TokenStore(store_log.engine, make_settings(tmp_path).pepper()).add("inv-1", "investigator")
        body = {"patient": "a" * 32, "claims": [{"claim_id": "c1", "amount": 10}]}

        def score(i: int) -> int:
            with httpx.Client(timeout=30) as client:
                return client.post(f"{bases[i % 2]}/test/score", json=body, headers=auth(token)).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(score, range(120)))
    finally:
        stop.set()
        for proc in procs:
            proc.join(timeout=30)
            if proc.exitcode is None:  # pragma: no cover - a hung server
                proc.kill()
    assert statuses == [200] * 120
    assert [proc.exitcode for proc in procs] == [0, 0]
    anchored = PredictionLog(pg_database.url, key=KEY, checkpoints=checkpoints)
    result = anchored.verify()
    entries = list(anchored.iter_all())
    anchored.close()
    store_log.close()
    assert (result.ok, result.checked, result.anchored) == (True, 120, 120)
    assert [e.seq for e in entries] == list(range(1, 121))
    assert {(e.token_name, e.endpoint, e.model_name) for e in entries} == {("inv-1", "/test/score", "shipa-fraud")}


@pytest.fixture(params=["sqlite", "postgresql"])
def either_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on an SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'service.db'}"
    database: Database = request.getfixturevalue("pg_database")
    return database.url


def test_nul_characters_are_handled_alike_on_both_backends(either_url: str) -> None:
    """PostgreSQL cannot store NUL in text: a NUL in an identifying field is refused before the record joins a
    group commit (where it would fail the others), and one in a failure's text is kept as U+FFFD."""
    audit_log = PredictionLog(either_url, key=KEY)
    with pytest.raises(ValueError, match="model_version must not contain NUL characters"):
        audit_log.append(make_record(1, model_version="7\x00"))
    stored = audit_log.append(make_record(2, outcome="minor_failure", outcome_desc="PatientName 'A\x00\x00'"))
    assert stored.outcome_desc == "PatientName 'A\ufffd\ufffd'"
    assert [e.outcome_desc for e in audit_log.iter_all()] == ["PatientName 'A\ufffd\ufffd'"]
    result = audit_log.verify()
    audit_log.close()
    assert (result.ok, result.checked) == (True, 1)

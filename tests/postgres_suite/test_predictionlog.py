"""The HMAC-chained prediction log on a real PostgreSQL server, where it differs from SQLite: the declared column
types, two real service processes appending to one chain, NUL characters. The tests that hold on both databases
(tampering, checkpoints, concurrency, worker processes) are tests/service/test_audit.py, run on both through the
``database_url`` fixture (tests/postgres.py)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from postgres import Database
from service.helpers import AUDIT_KEY, StaticProvider, auth, build_app, make_record, make_settings, served

from pipelines.predictionlog.log import PredictionLog
from pipelines.service.tokens import TokenStore

KEY = AUDIT_KEY.encode()


def test_the_tables_are_postgresql_tables_with_the_declared_types(pg_database: Database) -> None:
    log = PredictionLog(pg_database.url, key=KEY)
    log.append(make_record(0))
    with psycopg.connect(pg_database.conninfo) as conn:
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'audit_events'"
            ).fetchall()
        )
        head = conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    result = log.verify()
    log.close()
    assert log.engine.dialect.name == "postgresql" and log.engine.driver == "psycopg"
    assert (types["seq"], types["latency_us"], types["output_json"]) == ("bigint", "bigint", "text")
    assert types["hash"] == "character varying"
    assert head is not None and head[0] == 1 and head[1] == result.head_hash


def _serve(url: str, checkpoints: Path, root: Path, port_queue: Any, stop: Any) -> None:
    """One service process: the real app (its shared engine, token store and audit log) under uvicorn."""
    settings = make_settings(root, database_url=url, audit_checkpoints=checkpoints, state_dir=root)
    with served(build_app(settings, StaticProvider()), settings) as base:
        port_queue.put(base)
        stop.wait(120)


def test_two_service_processes_append_to_one_chain(pg_database: Database, tmp_path: Path) -> None:
    """Two service processes on one PostgreSQL database answer concurrent requests: every answer is audited in
    one unforked chain, anchored by one checkpoint file."""
    checkpoints = tmp_path / "service.audit-checkpoints.jsonl"
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


def test_nul_characters_are_handled_alike_on_both_backends(database_url: str) -> None:
    """PostgreSQL cannot store NUL in text: a NUL in an identifying field is refused before the record joins a
    group commit (where it would fail the others), and one in a failure's text is kept as U+FFFD."""
    audit_log = PredictionLog(database_url, key=KEY)
    with pytest.raises(ValueError, match="model_version must not contain NUL characters"):
        audit_log.append(make_record(1, model_version="7\x00"))
    stored = audit_log.append(make_record(2, outcome="minor_failure", outcome_desc="PatientName 'A\x00\x00'"))
    assert stored.outcome_desc == "PatientName 'A\ufffd\ufffd'"
    assert [e.outcome_desc for e in audit_log.iter_all()] == ["PatientName 'A\ufffd\ufffd'"]
    result = audit_log.verify()
    audit_log.close()
    assert (result.ok, result.checked) == (True, 1)

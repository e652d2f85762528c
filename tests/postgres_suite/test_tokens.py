"""The token store on a real PostgreSQL server: the SQLite suite's tests again, what is stored (hashes only), and
processes adding and revoking tokens at once."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres import Database
from service import test_tokens as sqlite_suite
from service.helpers import PEPPER

from pipelines.predictionlog.db import make_engine
from pipelines.service.errors import TokenError
from pipelines.service.tokens import TOKEN_PREFIX, TokenStore

# The SQLite suite's tests that reach the database only through the store, collected again here on PostgreSQL.
test_add_authenticate_revoke = sqlite_suite.test_add_authenticate_revoke
test_names_roles_and_reuse = sqlite_suite.test_names_roles_and_reuse


@pytest.fixture
def store(pg_database: Database) -> TokenStore:
    return TokenStore(make_engine(pg_database.url), PEPPER.encode())


def _stored_text(db: Database) -> str:
    """Every value of the token table as text, read with psycopg as an administrator with psql would."""
    with psycopg.connect(db.conninfo) as conn:
        rows = conn.execute("SELECT service_tokens::text FROM service_tokens").fetchall()
    return "\n".join(row[0] for row in rows)


def test_tokens_are_stored_hashed_only(store: TokenStore, pg_database: Database) -> None:
    tokens = [store.add(f"user-{i}", "investigator") for i in range(3)]
    stored = _stored_text(pg_database)
    assert stored.count("user-") == 3
    for token in tokens:
        assert token not in stored and token[len(TOKEN_PREFIX) :] not in stored
        assert store.hash_token(token) in stored


def test_pepper_keys_the_hash(store: TokenStore, pg_database: Database) -> None:
    token = store.add("a", "auditor")
    other = TokenStore(make_engine(pg_database.url), b"another-pepper-entirely-0123456789")
    assert other.authenticate(token) is None
    assert store.authenticate(token) is not None


def test_active_tokens_are_cached_for_a_moment_and_revocation_here_is_immediate(
    pg_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(pg_database.url)
    cached = TokenStore(engine, PEPPER.encode(), cache_s=30.0)
    elsewhere = TokenStore(make_engine(pg_database.url), PEPPER.encode())  # another process: the CLI
    token, other = cached.add("inv-1", "investigator"), cached.add("inv-2", "investigator")
    assert cached.authenticate(token) is not None and cached.authenticate(other) is not None
    elsewhere.revoke("inv-1")
    assert cached.authenticate(token) is not None  # trusted for cache_s
    later = time.monotonic() + 31.0
    monkeypatch.setattr("pipelines.service.tokens.time.monotonic", lambda: later)
    assert cached.authenticate(token) is None
    cached.revoke("inv-2")
    assert cached.authenticate(other) is None
    listed = [(i.name, i.active) for i in elsewhere.list()]
    assert listed == [("inv-1", False), ("inv-2", False)]


def _add_and_revoke(url: str, barrier: Any, results: Any, k: int) -> None:
    store = TokenStore(make_engine(url), PEPPER.encode())
    barrier.wait(timeout=60)
    outcome = []
    for name in ("shared", f"own-{k}"):
        try:
            store.add(name, "clinician")
            outcome.append(f"added {name}")
        except TokenError as exc:
            outcome.append(str(exc))
    store.revoke(f"own-{k}")
    results.put((k, outcome))


def test_processes_adding_one_name_at_once_get_it_once(pg_database: Database) -> None:
    """`shipa token add` run twice at once with one name: one wins, the other is told the name is used."""
    TokenStore(make_engine(pg_database.url), PEPPER.encode())  # the table exists: the race is on the name
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    procs = [context.Process(target=_add_and_revoke, args=(pg_database.url, barrier, results, k)) for k in range(4)]
    for proc in procs:
        proc.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
    assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
    shared = [outcome[0] for outcome in outcomes.values()]
    assert (
        sorted(shared)
        == ["added shared"] + ["token name 'shared' is already used (names are never reused); pick another"] * 3
    )
    assert all(outcome[1] == f"added own-{k}" for k, outcome in outcomes.items())
    listed = [(i.name, i.active) for i in TokenStore(make_engine(pg_database.url), PEPPER.encode()).list()]
    assert listed == [("own-0", False), ("own-1", False), ("own-2", False), ("own-3", False), ("shared", True)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_revoking_a_name_with_a_nul_is_no_such_token_on_both_backends(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'service.db'}" if backend == "sqlite" else request.getfixturevalue("pg_database").url
    store = TokenStore(make_engine(url), PEPPER.encode())
    store.add("ops", "admin")
    with pytest.raises(TokenError, match="no active token named 'ops\\\\x00'"):
        store.revoke("ops\x00")
    with pytest.raises(TokenError, match="not allowed"):
        store.add("ops\x00", "admin")
    assert [(i.name, i.active) for i in store.list()] == [("ops", True)]

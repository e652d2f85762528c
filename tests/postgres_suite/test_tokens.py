"""The token store on a real PostgreSQL server, where it differs from SQLite: processes adding and revoking tokens
at once, NUL characters. The tests that hold on both databases (what is stored, the pepper, the cache) are
tests/service/test_tokens.py, run on both through the ``database_url`` fixture (tests/postgres.py)."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from postgres import Database
from service.helpers import PEPPER

from pipelines.predictionlog.db import make_engine
from pipelines.service.errors import TokenError
from pipelines.service.tokens import TokenStore


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


def test_revoking_a_name_with_a_nul_is_no_such_token_on_both_backends(database_url: str) -> None:
    store = TokenStore(make_engine(database_url), PEPPER.encode())
    store.add("ops", "admin")
    with pytest.raises(TokenError, match="no active token named 'ops\\\\x00'"):
        store.revoke("ops\x00")
    with pytest.raises(TokenError, match="not allowed"):
        store.add("ops\x00", "admin")
    assert [(i.name, i.active) for i in store.list()] == [("ops", True)]

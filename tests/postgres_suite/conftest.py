"""Fixtures of the PostgreSQL suite: one throwaway server per test session (started and stopped here, so
``make test`` needs nothing running beforehand) and a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from postgres import Database, PostgresServer, PostgresUnavailable

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on a free 127.0.0.1 port for the session; skips where no server binaries exist."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_database(postgres_server: PostgresServer) -> Iterator[Database]:
    """An empty database for this test, dropped after it (with any connection the test left open)."""
    database = postgres_server.create_database(f"test_{next(_numbers)}")
    yield database
    postgres_server.drop_database(database.name)

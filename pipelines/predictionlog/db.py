"""The one SQLAlchemy engine of the service (tokens and prediction log share it), tuned for short concurrent writes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 10_000
_CREATE_ATTEMPTS = 5


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (token checks, audit queries) run while one writer appends.
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is crash-safe in WAL mode (a power cut may lose the last commits, never corrupt the chain).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _create_private(path: Path) -> None:
    """Create the database file (and its folder) readable by this user only, unless it exists.

    The file holds token hashes and the prediction log; SQLite gives its -wal and -shm files the database file's
    permissions, so they are private too. An existing file keeps the permissions its owner chose.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def make_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create the engine for ``url``; for an SQLite file, create its folder and switch it to WAL mode.

    Args:
        url: an SQLAlchemy database URL (``sqlite:///path.db``, ``postgresql+psycopg://...``).
        pool_size: connections kept open (ignored for in-memory SQLite).

    Returns:
        An engine to create once per process and share.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        # One shared connection, or every pooled connection would see its own empty database.
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        _create_private(Path(database).expanduser())
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_tables(metadata: MetaData, engine: Engine) -> None:
    """Create ``metadata``'s missing tables, also when another process is creating them at the same moment.

    ``create_all`` checks, then creates: two processes opening a new database together (two CLI commands, two
    service workers) can both find a table missing, and the second CREATE fails ("already exists" on SQLite,
    a duplicate table or type on PostgreSQL). Checking again then finds the table, so the loser retries.
    """
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            metadata.create_all(engine)
            return
        except DatabaseError:
            if attempt == _CREATE_ATTEMPTS - 1:
                raise

"""The service database (tokens, prediction log) is created readable by its owner only, with its WAL files."""

from __future__ import annotations

import stat
from pathlib import Path

from pipelines.predictionlog.db import make_engine
from pipelines.service.tokens import TokenStore

from .helpers import PEPPER


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "state" / "service.db"
    engine = make_engine(f"sqlite:///{db}")
    TokenStore(engine, PEPPER.encode()).add("ops", "admin")  # a write: the -wal and -shm files appear
    try:
        files = [db, db.with_name("service.db-wal"), db.with_name("service.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert _mode(db.parent) == 0o700
    finally:
        engine.dispose()


def test_an_existing_database_keeps_its_owners_permissions(tmp_path: Path) -> None:
    db = tmp_path / "service.db"
    db.touch(mode=0o640)
    db.chmod(0o640)
    engine = make_engine(f"sqlite:///{db}")
    TokenStore(engine, PEPPER.encode()).add("ops", "admin")
    engine.dispose()
    assert _mode(db) == 0o640

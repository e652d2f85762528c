"""Tokens: stored only as keyed hashes, one role each, revocable, names never reused. Every test that touches the
database runs on an SQLite file and on PostgreSQL (``database_url``, tests/postgres.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from pipelines.predictionlog.db import make_engine
from pipelines.predictionlog.roles import Role, role_allows
from pipelines.service.errors import TokenError
from pipelines.service.tokens import TOKEN_PREFIX, TokenStore

from .helpers import PEPPER


@pytest.fixture
def store(database_url: str) -> TokenStore:
    return TokenStore(make_engine(database_url), PEPPER.encode())


def stored_text(url: str) -> str:
    """What an administrator can read of the stored tokens: an SQLite file's bytes (with its write-ahead log), or
    every row of PostgreSQL's token table as text, read on a connection of its own as with psql."""
    if url.startswith("sqlite"):
        path = Path(make_url(url).database or "")
        wal = path.with_name(path.name + "-wal")
        return (path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")).decode("latin-1")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT service_tokens::text FROM service_tokens")).scalars().all()
    finally:
        engine.dispose()
    return "\n".join(rows)


def test_add_authenticate_revoke(store: TokenStore) -> None:
    token = store.add("dr-aliya", "clinician")
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    info = store.authenticate(token)
    assert info is not None and (info.name, info.role, info.active) == ("dr-aliya", Role.clinician, True)
    assert store.authenticate(token + "x") is None
    assert store.authenticate("not-even-prefixed") is None
    revoked = store.revoke("dr-aliya")
    assert revoked.revoked_at is not None and not revoked.active
    assert store.authenticate(token) is None
    with pytest.raises(TokenError, match="no active token"):
        store.revoke("dr-aliya")


def test_tokens_are_stored_hashed_only(store: TokenStore, database_url: str) -> None:
    tokens = [store.add(f"user-{i}", "investigator") for i in range(3)]
    stored = stored_text(database_url)
    for i, token in enumerate(tokens):
        assert f"user-{i}" in stored  # what was read holds the rows
        assert token not in stored and token[len(TOKEN_PREFIX) :] not in stored
        assert store.hash_token(token) in stored


def test_pepper_keys_the_hash(store: TokenStore, database_url: str) -> None:
    token = store.add("a", "auditor")
    other = TokenStore(make_engine(database_url), b"another-pepper-entirely-0123456789")
    assert other.authenticate(token) is None
    assert store.authenticate(token) is not None


def test_names_roles_and_reuse(store: TokenStore) -> None:
    with pytest.raises(TokenError, match="unknown role 'nurse'"):
        store.add("n", "nurse")
    with pytest.raises(TokenError, match="not allowed"):
        store.add("bad name;", "admin")
    for broken in ("ops\n", "ops\r\n", "\nops", "a" * 65):  # a trailing newline passed ^...$ and broke log lines
        with pytest.raises(TokenError, match="not allowed"):
            store.add(broken, "admin")
    store.add("ops", "ADMIN")
    with pytest.raises(TokenError, match="already used"):
        store.add("ops", "admin")
    store.revoke("ops")
    with pytest.raises(TokenError, match="already used"):
        store.add("ops", "admin")
    store.add("zed", Role.auditor)
    listed = [(i.name, i.role.value, i.active) for i in store.list()]
    assert listed == [("ops", "admin", False), ("zed", "auditor", True)]


def test_role_rules() -> None:
    assert role_allows(Role.admin, (Role.clinician,))
    assert role_allows(Role.clinician, (Role.clinician, Role.investigator))
    assert not role_allows(Role.auditor, (Role.clinician,))
    assert not role_allows(Role.clinician, (Role.admin,))


def test_active_tokens_are_cached_for_a_moment_and_revocation_here_is_immediate(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(database_url)
    cached = TokenStore(engine, PEPPER.encode(), cache_s=30.0)
    elsewhere = TokenStore(make_engine(database_url), PEPPER.encode())  # another process: the CLI
    token, other = cached.add("inv-1", "investigator"), cached.add("inv-2", "investigator")
    assert cached.authenticate(token) is not None and cached.authenticate(other) is not None
    # a revocation made elsewhere is seen once the cached entry expires (at most cache_s later)
    elsewhere.revoke("inv-1")
    assert cached.authenticate(token) is not None
    later = time.monotonic() + 31.0
    monkeypatch.setattr("pipelines.service.tokens.time.monotonic", lambda: later)
    assert cached.authenticate(token) is None
    assert cached.authenticate(token) is None  # unknown and revoked tokens are never cached
    # a revocation through this store takes effect at once
    assert cached.authenticate(other) is not None
    cached.revoke("inv-2")
    assert cached.authenticate(other) is None
    assert [(i.name, i.active) for i in elsewhere.list()] == [("inv-1", False), ("inv-2", False)]
    # without a cache (the default), every check asks the database
    fresh = elsewhere.add("inv-3", "investigator")
    plain = TokenStore(engine, PEPPER.encode())
    assert plain.authenticate(fresh) is not None
    elsewhere.revoke("inv-3")
    assert plain.authenticate(fresh) is None
    with pytest.raises(ValueError, match="cache_s"):
        TokenStore(engine, PEPPER.encode(), cache_s=-1)

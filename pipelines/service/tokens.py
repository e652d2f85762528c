"""Bearer tokens: stored only as keyed hashes (HMAC-SHA256 with a pepper) in the service database.

A token is shown once, when it is added. The table keeps its name, role, creation and revocation times; names are
never reused, so every name in the audit log means one token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Engine, MetaData, String, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from pipelines.predictionlog.db import create_tables
from pipelines.predictionlog.roles import Role, parse_role
from pipelines.service.errors import TokenError

TOKEN_PREFIX = "shipa_"
_CACHE_LIMIT = 10_000  # active tokens remembered at most (the cache is emptied when full)
# \A and \Z, not ^ and $: "$" also matches before a final newline, and a name ending in one breaks log lines.
NAME_PATTERN = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")

metadata = MetaData()
tokens_table = Table(
    "service_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True, index=True),
    Column("created_at", String(32), nullable=False),
    Column("revoked_at", String(32), nullable=True),
)

# Built once: a prepared statement with a parameter dict skips per-call statement construction on the hot path.
_FIND_ACTIVE = select(tokens_table.c.name, tokens_table.c.role, tokens_table.c.created_at).where(
    tokens_table.c.token_hash == bindparam("token_hash"), tokens_table.c.revoked_at.is_(None)
)


@dataclass(frozen=True)
class TokenInfo:
    """What the service knows about a token (never the token itself)."""

    name: str
    role: Role
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        """True until the token is revoked."""
        return self.revoked_at is None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TokenStore:
    """Adds, revokes, lists and checks tokens in the ``service_tokens`` table.

    Args:
        engine: the service's shared engine (the table is created if missing).
        pepper: the secret key of the token hashes (``ServiceSettings.pepper()``).
    """

    def __init__(self, engine: Engine, pepper: bytes, *, cache_s: float = 0.0) -> None:
        if not pepper:
            raise ValueError("token pepper must not be empty")
        if cache_s < 0:
            raise ValueError("cache_s must be >= 0")
        self._engine = engine
        self._pepper = pepper
        self._cache_s = cache_s
        self._cache: dict[str, tuple[TokenInfo, float]] = {}
        create_tables(metadata, engine)

    def hash_token(self, token: str) -> str:
        """The stored form of a token: hex HMAC-SHA256 under the pepper."""
        return hmac.new(self._pepper, token.encode("utf-8"), hashlib.sha256).hexdigest()

    def add(self, name: str, role: Role | str) -> str:
        """Create a token and return it; this is the only time it is ever available.

        Raises:
            TokenError: the name is malformed or already used, or the role is unknown.
        """
        if not NAME_PATTERN.match(name):
            raise TokenError(
                f"token name {name!r} is not allowed: use 1-64 letters, digits, '.', '_', '@' or '-', "
                "starting with a letter or digit"
            )
        try:
            chosen = role if isinstance(role, Role) else parse_role(role)
        except ValueError as exc:
            raise TokenError(str(exc)) from None
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {"name": name, "role": chosen.value, "token_hash": self.hash_token(token), "created_at": _now()}
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(tokens_table).values(**row))
        except IntegrityError:
            raise TokenError(f"token name {name!r} is already used (names are never reused); pick another") from None
        return token

    def revoke(self, name: str) -> TokenInfo:
        """Revoke the token called ``name``; requests with it get 401 from then on.

        Raises:
            TokenError: no active token has that name.
        """
        if "\x00" in name:  # no token has one (add refuses it); PostgreSQL would refuse the query outright
            raise TokenError(f"no active token named {name!r}")
        with self._engine.begin() as conn:
            result = conn.execute(
                update(tokens_table)
                .where(tokens_table.c.name == name, tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            )
            if result.rowcount != 1:
                raise TokenError(f"no active token named {name!r}")
            row = conn.execute(select(tokens_table).where(tokens_table.c.name == name)).one()
        self._cache.pop(row.token_hash, None)
        return TokenInfo(row.name, Role(row.role), row.created_at, row.revoked_at)

    def list(self) -> list[TokenInfo]:
        """Every token ever added, active and revoked, by name."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(tokens_table).order_by(tokens_table.c.name)).all()
        return [TokenInfo(r.name, Role(r.role), r.created_at, r.revoked_at) for r in rows]

    def authenticate(self, token: str) -> TokenInfo | None:
        """The active token matching ``token``, or None (unknown, revoked or malformed).

        With ``cache_s`` > 0, a token found active is trusted for that many seconds without asking the database
        again (a revocation in this process takes effect at once, one made elsewhere within ``cache_s``);
        unknown and revoked tokens are always looked up.
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        token_hash = self.hash_token(token)
        if self._cache_s:
            hit = self._cache.get(token_hash)
            if hit is not None and hit[1] > time.monotonic():
                return hit[0]
        with self._engine.connect() as conn:
            row = conn.execute(_FIND_ACTIVE, {"token_hash": token_hash}).first()
        if row is None:
            self._cache.pop(token_hash, None)
            return None
        info = TokenInfo(row.name, Role(row.role), row.created_at)
        if self._cache_s:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token_hash] = (info, time.monotonic() + self._cache_s)
        return info

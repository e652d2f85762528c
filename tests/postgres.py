"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary folder, started on a free 127.0.0.1 port,
stopped by its process id.

CI runs as root and ``initdb`` refuses root, so as root the server's commands run as an unprivileged system user
(Debian's ``postgres`` when it exists, else ``nobody``) through ``runuser``, and the temporary folder is handed to
that user. The server listens on 127.0.0.1 only (its unix socket lives in the temporary folder), trusts local
connections (nothing else can reach it) and runs with ``fsync=off``: a crash loses a test's data, never a patient's.

Also a pytest plugin (registered from ``tests/conftest.py``), so every test folder can use its fixtures:
``postgres_server`` (one per test session, started only when a test asks for it), ``pg_database`` (a fresh
database on it, for the PostgreSQL-only tests) and ``database_url`` (the same test once on an SQLite file and once
on a fresh PostgreSQL database; the PostgreSQL run skips, with the reason, where no server binaries exist).
Outside pytest::

    with PostgresServer.start() as server:
        db = server.create_database("audit")
        db.url       # postgresql+psycopg://shipa@127.0.0.1:PORT/audit (SQLAlchemy, MLflow)
        db.conninfo  # host=127.0.0.1 port=PORT user=shipa dbname=audit (psycopg, as psql would connect)
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SUPERUSER = "shipa"
_BINARIES = ("initdb", "pg_ctl", "postgres")
_NAME = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")
# Speed over durability: the data lives for one test session.
_SERVER_OPTIONS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (the tests that need them skip)."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``: on PATH, else the newest Debian install.

    Raises:
        PostgresUnavailable: none found.
    """
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    candidates.extend(versions)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in _BINARIES):
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or under /usr/lib/postgresql "
        "(Debian: apt-get install postgresql)"
    )


def _server_user() -> str | None:
    """The user to run the server as: None for this one, or an unprivileged one when running as root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists for initdb")


def _temp_parent(user: str | None) -> str | None:
    """Where to make the server's folder: the usual temporary folder, unless the server user cannot reach it
    (TMPDIR under /root, say), then /tmp."""
    if user is None:
        return None
    usual = Path(tempfile.gettempdir()).resolve()
    reachable = all(folder.stat().st_mode & 0o001 for folder in (usual, *usual.parents))
    return None if reachable else "/tmp"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user (we are not root)
        return True
    return True


@dataclass(frozen=True)
class Database:
    """One database on the server: its SQLAlchemy URL and its libpq connection string."""

    name: str
    url: str
    conninfo: str


class PostgresServer:
    """A running throwaway server; :meth:`start` makes one, :meth:`stop` (or leaving the ``with``) removes it."""

    def __init__(self, bin_dir: Path, root: Path, port: int, user: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.user = user
        self.data_dir = root / "data"
        self.socket_dir = root / "socket"
        self.log_file = root / "server.log"
        self.pid: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    @classmethod
    def start(cls, *, attempts: int = 3, timeout_s: float = 60.0) -> PostgresServer:
        """initdb in a new temporary folder and start the server on a free loopback port.

        Raises:
            PostgresUnavailable: no binaries, or no user to run them as.
            RuntimeError: initdb or the start failed (the message quotes the server log).
        """
        bin_dir = find_bin_dir()
        user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="shipa-postgres-", dir=_temp_parent(user)))
        server = cls(bin_dir, root, 0, user)
        try:
            server._initdb()
            for attempt in range(attempts):
                server.port = free_port()
                try:
                    server._start(timeout_s)
                    return server
                except RuntimeError:  # most likely the port was taken between our check and the bind
                    if attempt == attempts - 1:
                        raise
        except BaseException:
            server.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, args: Sequence[str], *, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        # cwd: the server user may not be allowed into the caller's folder.
        return subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout_s, check=False, env=_env()
        )

    def _initdb(self) -> None:
        self.socket_dir.mkdir()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        done = self._run(
            [
                "initdb",
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _start(self, timeout_s: float) -> None:
        options = {**_SERVER_OPTIONS, "port": str(self.port), "unix_socket_directories": str(self.socket_dir)}
        flags = " ".join(f"-c {key}={value}" for key, value in options.items())
        done = self._run(
            ["pg_ctl", "start", "--pgdata", str(self.data_dir), "--log", str(self.log_file), "--wait",
             "--timeout", str(int(timeout_s)), "--options", flags],
            timeout_s=timeout_s + 10,
        )  # fmt: skip
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, IndexError, OSError):
                self.pid = int(pid_file.read_text().splitlines()[0])
        if done.returncode != 0:
            tail = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            self._kill()
            raise RuntimeError(f"PostgreSQL did not start on port {self.port} ({done.stderr.strip()}): {tail}")

    def _kill(self) -> None:
        if self.pid is not None and _pid_alive(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        self.pid = None

    def stop(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL to its process id if it lingers) and delete its folder."""
        if self.pid is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run(["pg_ctl", "stop", "--pgdata", str(self.data_dir), "--mode", "fast", "--wait"], timeout_s=30)
            self._kill()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string for ``dbname`` over TCP on 127.0.0.1."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of ``dbname``."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def execute(self, sql: str, params: Sequence[Any] | None = None, *, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            conn.execute(sql, params)  # type: ignore[arg-type]

    def create_database(self, name: str) -> Database:
        """Create an empty database ``name`` (lowercase letters, digits, underscores) and describe it."""
        if not _NAME.match(name):
            raise ValueError(f"database name {name!r}: use lowercase letters, digits and underscores")
        self.execute(f"CREATE DATABASE {name}")
        return Database(name, self.url(name), self.conninfo(name))

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing any connection still open to it (PostgreSQL 13+)."""
        if not _NAME.match(name):
            raise ValueError(f"database name {name!r}")
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGHOST/PGPORT of the machine
    env["LC_ALL"] = "C"
    return env


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """:meth:`PostgresServer.start` for a ``with`` block."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


# -- pytest fixtures ------------------------------------------------------------------------------------------------

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


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes empty databases of one kind and returns their SQLAlchemy URLs: SQLite files in the test's folder, or
    databases on the session's server (dropped after the test). The server starts only for the PostgreSQL run, so
    the SQLite run needs no PostgreSQL anywhere."""
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
    made: list[str] = []

    def make() -> str:
        number = next(_numbers)
        if server is None:
            return f"sqlite:///{tmp_path / f'test_{number}.db'}"
        made.append(server.create_database(f"test_{number}").name)
        return server.url(made[-1])

    yield make
    if server is not None:
        for name in made:
            server.drop_database(name)


@pytest.fixture
def database_url(new_database_url: Callable[[], str]) -> str:
    """An empty database's SQLAlchemy URL: the test runs once on SQLite and once on PostgreSQL."""
    return new_database_url()

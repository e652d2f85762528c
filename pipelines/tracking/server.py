"""A real, local ``mlflow server`` (sqlite store + served artifacts) for tests and ``make mlflow-ui``.

:func:`server_command` builds the command line; :func:`mlflow_server` runs it as a subprocess on 127.0.0.1,
waits for ``/health`` and stops it by its process id (its own process group: terminate, then kill). Nothing
binds any address other than the one given (127.0.0.1 by default).

``python -m pipelines.tracking.server --root . --port 5000`` runs the same server in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipelines.tracking.errors import MlflowServerError

log = logging.getLogger(__name__)

DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_command(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    python: str | None = None,
) -> list[str]:
    """The ``mlflow server`` command line for a store kept under ``root``.

    Runs are stored in ``<root>/mlflow.db`` (sqlite) and artifacts, uploaded and downloaded through the
    server, in ``<root>/mlartifacts``.

    Args:
        root: folder of the store (created by the server when missing).
        host: interface to bind; keep 127.0.0.1 unless the store is meant to be shared.
        port: TCP port.
        workers: server worker processes.
        python: interpreter to run MLflow with (default: this one).
    """
    base = root.resolve()
    return [
        python or sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{base / DB_NAME}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(base / ARTIFACTS_NAME),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


@dataclass(frozen=True)
class ServerHandle:
    """A running server: its base URL (the tracking URI) and process id."""

    url: str
    pid: int
    log_file: Path


def _server_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "1"
    env.update(extra or {})
    return env


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    # The server forks workers into its own session: signal the whole group, which holds only our processes.
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived the leader


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def mlflow_server(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    startup_timeout_s: float = 60.0,
    stop_grace_s: float = 10.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerHandle]:
    """Run ``mlflow server`` for the block; yields its URL once ``/health`` answers.

    Args:
        root: folder of the sqlite store and artifacts (see :func:`server_command`); the server log goes
            there.
        host: interface to bind.
        port: TCP port; None picks a free one.
        startup_timeout_s: how long to wait for ``/health``.
        stop_grace_s: how long to wait after SIGTERM before SIGKILL.
        env: extra environment for the server.

    Raises:
        MlflowServerError: the server exited or did not answer in time (the message quotes its last log
            lines).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    log_file = root / "mlflow-server.log"
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            server_command(root, host=host, port=port),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_server_env(env),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            if proc.poll() is not None:
                raise MlflowServerError(f"mlflow server on {url} exited with {proc.returncode}: {_tail(log_file)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise MlflowServerError(f"mlflow server on {url} not healthy after {startup_timeout_s:g} s")
            time.sleep(0.25)
        log.info("mlflow server up on %s (pid %d)", url, proc.pid)
        yield ServerHandle(url=url, pid=proc.pid, log_file=log_file)
    finally:
        _stop(proc, stop_grace_s)
        log.info("mlflow server on %s stopped", url)


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground (``make mlflow-ui``); replaces this process."""
    parser = argparse.ArgumentParser(description="Run the local MLflow tracking server and UI.")
    parser.add_argument("--root", type=Path, default=Path("."), help="folder of mlflow.db and mlartifacts/")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    cmd = server_command(args.root, host=args.host, port=args.port)
    os.execve(cmd[0], cmd, _server_env(None))


if __name__ == "__main__":
    main()

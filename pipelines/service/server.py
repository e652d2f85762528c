"""Run the service with uvicorn (``shipa serve``): one process, or several worker processes sharing the port."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import ClassVar

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipelines.service.settings import ServiceSettings

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "SHIPA_SERVICE_SUPERVISOR_PID"
# A worker loads torch, the models and the Fund's history before it serves: far longer than uvicorn's 5 s default,
# after which a restart (a reload) would give up on the new worker.
WORKER_START_TIMEOUT_S = 300


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines: a client that stays silent while sending a request's
    headers or body has its connection closed.

    uvicorn arms no timer until a response is sent (its keep-alive timeout), so a client that sends its headers
    or its body a byte at a time (slowloris) held a connection, and its request, forever. The header deadline runs
    from the connection (or the first byte of a request) to the end of the headers; the body deadline is the
    longest silence while the body is being read, so a large upload on a slow line still goes through. A body
    whose reading is paused by uvicorn's flow control (the app is not reading) is not the client's silence.
    The deadlines are class attributes, set by :func:`apply_timeouts` in each serving process.
    """

    header_timeout_s: ClassVar[float] = 10.0
    body_timeout_s: ClassVar[float] = 30.0
    _deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, what, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if what == "body" and self.flow.read_paused:
            self._arm(seconds, what)
            return
        log.warning("connection closed: no request %s bytes for %.0f s", what, seconds)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "header")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(self.header_timeout_s, "header")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s, "body")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def apply_timeouts(settings: ServiceSettings) -> None:
    """Set this process's read deadlines (:class:`TimedHttpToolsProtocol`) from ``settings``."""
    TimedHttpToolsProtocol.header_timeout_s = settings.header_timeout_s
    TimedHttpToolsProtocol.body_timeout_s = settings.body_timeout_s


def uvicorn_config(app: FastAPI, settings: ServiceSettings, *, port: int | None = None) -> uvicorn.Config:
    """The uvicorn configuration of the service.

    uvicorn's own access log is off (it would log raw paths and query strings, which can carry identifiers);
    ``RequestLogMiddleware`` logs route templates instead. Logging goes through the root configuration
    (``configure_logging``); no ``Server`` header is sent.

    Args:
        app: the app from ``create_app``.
        settings: host and port come from here.
        port: overrides ``settings.port`` (tests bind a free port).
    """
    apply_timeouts(settings)
    return uvicorn.Config(
        app,
        http=TimedHttpToolsProtocol,
        host=settings.host,
        port=settings.port if port is None else port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        ssl_certfile=_text(settings.ssl_certfile),  # SHIPA_SERVICE_SSL_CERTFILE and _KEYFILE; none: plain http
        ssl_keyfile=_text(settings.ssl_keyfile),
    )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def restart_other_workers() -> bool:
    """Ask the supervisor of :func:`run_workers` to replace every worker, one at a time; False when not a worker.

    A reload in one worker leaves the others on the models they loaded; the supervisor (on SIGHUP) starts a fresh
    worker, which loads the current champions, before it stops each old one, so no request is dropped. Only the
    process named by :data:`SUPERVISOR_ENV` is signalled, and only when it is this process's parent.
    """
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if not supervisor.isdigit() or int(supervisor) != os.getppid():
        return False
    log.info("asking the supervisor to restart every worker with the reloaded models")
    os.kill(int(supervisor), signal.SIGHUP)
    return True


def run_server(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve ``app`` on ``settings.host:settings.port`` until interrupted."""
    uvicorn.Server(uvicorn_config(app, settings)).run()


def run_workers(factory: str, settings: ServiceSettings, overrides: dict[str, str]) -> None:
    """Serve with ``settings.workers`` processes on one listening socket, until interrupted.

    uvicorn's supervisor binds the socket, starts each worker with the ``spawn`` method and restarts one that
    dies. Every worker builds its own app by calling ``factory`` (``"module:function"``), so each loads its own
    models and Fund history (memory grows by one copy per worker): a worker accepts connections only once its
    app is built. The chained prediction log takes appends from several processes (see ``PredictionLog.append``).
    Rate limits and the token cache are per worker.

    Args:
        factory: the import string of a function that returns the app from the ``SHIPA_SERVICE_*`` environment.
        settings: host, port and the number of workers.
        overrides: ``SHIPA_SERVICE_*`` variables set for the workers (the command line's overrides).
    """
    os.environ.update(overrides)
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # uvicorn.run supervises from this process
    uvicorn.run(
        factory,
        factory=True,
        http=TimedHttpToolsProtocol,  # each worker's deadlines are set when it builds its app
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_worker_healthcheck=WORKER_START_TIMEOUT_S,
        ssl_certfile=_text(settings.ssl_certfile),  # SHIPA_SERVICE_SSL_CERTFILE and _KEYFILE; none: plain http
        ssl_keyfile=_text(settings.ssl_keyfile),
    )

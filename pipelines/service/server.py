"""Run the service with uvicorn (``shipa serve``): one process, or several worker processes sharing the port."""

from __future__ import annotations

import logging
import os
import signal

import uvicorn
from fastapi import FastAPI

from pipelines.service.settings import ServiceSettings

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "SHIPA_SERVICE_SUPERVISOR_PID"
# A worker loads torch, the models and the Fund's history before it serves: far longer than uvicorn's 5 s default,
# after which a restart (a reload) would give up on the new worker.
WORKER_START_TIMEOUT_S = 300


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
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port if port is None else port,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
    )


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
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        server_header=False,
        lifespan="on",
        timeout_worker_healthcheck=WORKER_START_TIMEOUT_S,
    )

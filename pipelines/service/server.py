"""Run the service with uvicorn (``shipa serve``)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from pipelines.service.settings import ServiceSettings


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


def run_server(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve ``app`` on ``settings.host:settings.port`` until interrupted."""
    uvicorn.Server(uvicorn_config(app, settings)).run()

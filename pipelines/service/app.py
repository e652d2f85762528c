"""The app factory: settings, one engine, tokens, audit log, rate limiter, error handlers, middleware, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from pipelines.predictionlog.db import make_engine
from pipelines.predictionlog.log import PredictionLog
from pipelines.service.handlers import install_exception_handlers
from pipelines.service.middleware import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    ContentTypeMiddleware,
    RequestLogMiddleware,
    TokenConcurrencyMiddleware,
)
from pipelines.service.model_source import ModelSource
from pipelines.service.ratelimit import TokenBucketLimiter
from pipelines.service.routes import audit, audit_report, docs, health, models
from pipelines.service.routes.audit_report import ReportRenderer
from pipelines.service.settings import ServiceSettings
from pipelines.service.threads import apply_thread_settings
from pipelines.service.tokens import TokenStore

log = logging.getLogger(__name__)

# FastAPI's built-in OpenTelemetry would record exception messages (possibly personal data) whenever some library
# installs a global tracer provider; the service keeps its own PHI-free logs instead.
_NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}


def create_app(
    settings: ServiceSettings,
    model_provider: ModelSource | None = None,
    *,
    report_renderer: ReportRenderer | None = None,
) -> FastAPI:
    """Build the service app; the model routes are added to it with ``app.include_router``.

    Args:
        settings: validated service settings (``load_service_settings()``).
        model_provider: loads and serves the models; without one, /ready, /models and /admin/reload answer 503.
        report_renderer: builds the auditors' report page (``pipelines.audit.served.html_report``); without one,
            ``GET /audit/report/...`` answers 404. Passed in so that the service never imports the auditors' package.

    Returns:
        The FastAPI app. ``app.state`` holds ``settings``, ``tokens``, ``audit_log``, ``limiter``, ``provider``,
        ``report_renderer`` and ``engine`` (one engine, created here, disposed at shutdown).
    """
    engine = make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        apply_thread_settings(settings.threads)
        log.info("service ready on the %s database backend", engine.dialect.name)
        try:
            yield
        finally:
            for name in ("fraud_scoring", "diagnosis_scoring"):  # the batchers' threads (made again on first use)
                scoring = getattr(_app.state, name, None)
                if scoring is not None:
                    scoring.close()
                    setattr(_app.state, name, None)
            engine.dispose()

    app = FastAPI(
        title="Shipa inference service",
        summary="Diagnosis and claims-fraud models behind bearer tokens, with a hash-chained audit log.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # served offline by routes.docs, not from a CDN
        redoc_url=None,
        telemetry=_NO_TELEMETRY,  # type: ignore[arg-type]
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.tokens = TokenStore(engine, settings.pepper(), cache_s=settings.token_cache_s)
    app.state.audit_log = PredictionLog(
        engine,
        observer=settings.service_name,
        key=settings.audit_key_bytes(),
        checkpoints=settings.audit_checkpoints,
    )
    app.state.limiter = TokenBucketLimiter(settings.rate_per_s, settings.burst)
    app.state.provider = model_provider
    app.state.report_renderer = report_renderer

    install_exception_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(audit.router)
    app.include_router(audit_report.router)
    app.include_router(docs.router)

    # Added innermost first: logging sees every final status, including the catch-all's 500.
    app.add_middleware(ContentTypeMiddleware, allowed=settings.content_types)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(TokenConcurrencyMiddleware, limit=settings.max_concurrent_per_token)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(RequestLogMiddleware)
    return app

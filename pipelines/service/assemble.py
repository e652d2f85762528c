"""The inference service put together: settings, MLflow model provider and model routes (``shipa serve``).

``build_app(settings)`` is ``create_app`` plus what the model routes need: the champion models (loaded before
the first request, in this worker), the pseudonymisation key (the ingest key, ``SHIPA_PSEUDONYM_KEY``, so the
service's pseudonyms equal the tables'), multipart uploads for DICOM files, and the numeric thread count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.config import DEFAULT_PARAMS, DEMO_PSEUDONYM_KEY, ConfigError
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.service.app import create_app
from pipelines.service.errors import ServiceConfigError
from pipelines.service.routes.audit_report import ReportRenderer
from pipelines.service.settings import ENV_PREFIX, ServiceSettings, load_service_settings
from pipelines.service.threads import apply_thread_settings

log = logging.getLogger(__name__)

MULTIPART = "multipart/form-data"
MODELS_DIRNAME = "models"


def pseudonym_key(settings: ServiceSettings, key: str | None = None) -> str:
    """The pseudonymisation key: ``key``, else ``SHIPA_PSEUDONYM_KEY``, else the demo key in demo mode only.

    Raises:
        ServiceConfigError: no key outside demo mode, the demo key outside demo mode, or a key under 16 bytes.
    """
    if key is None:
        from pipelines.config import get_settings

        key = get_settings().pseudonym_key
    if key is None:
        if not settings.demo_mode:
            raise ServiceConfigError(
                "SHIPA_PSEUDONYM_KEY is not set: the service needs the ingest's pseudonymisation key "
                "(or SHIPA_SERVICE_DEMO_MODE=true for the built-in cohort's demo key)"
            )
        key = DEMO_PSEUDONYM_KEY
    if key == DEMO_PSEUDONYM_KEY and not settings.demo_mode:
        raise ServiceConfigError("the demo pseudonymisation key is accepted only with SHIPA_SERVICE_DEMO_MODE=true")
    if len(key.encode("utf-8")) < 16:
        raise ServiceConfigError("SHIPA_PSEUDONYM_KEY must be at least 16 bytes")
    return key


def with_uploads(settings: ServiceSettings) -> ServiceSettings:
    """The settings with ``multipart/form-data`` among the accepted content types (DICOM uploads)."""
    if MULTIPART in settings.content_types:
        return settings
    return settings.model_copy(update={"content_types": (*settings.content_types, MULTIPART)})


def params_defaults(params_path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    """The ingest image size and the fraud feature options from ``params.yaml`` when the file is there.

    The registered models are the authority when they carry these; a deployment without the project's params
    file gets the library defaults.
    """
    from pipelines.config import FeaturesParams, IngestParams, load_section
    from pipelines.features.fraud import FraudFeatureOptions

    if not Path(params_path).exists():
        return {}
    try:
        ingest = load_section(IngestParams, "ingest", params_path)
        features = load_section(FeaturesParams, "features", params_path)
    except ConfigError as exc:
        log.warning("params file not used by the service: %s", exc)
        return {}
    options = FraudFeatureOptions(**features.fraud.model_dump(exclude={"split"}))
    return {"ingest_image_size": ingest.image_size, "fraud_options": options}


def iin_systems_of(params_path: Path = DEFAULT_PARAMS) -> frozenset[str]:
    """Ingest's ``iin_systems`` from ``params.yaml`` (Shipa's own IIN system when the file is absent): a request's
    Patient IIN under any of them is pseudonymised as ingest and the DICOM side do."""
    from pipelines.config import IngestParams, load_section

    if not Path(params_path).exists():
        return DEFAULT_IIN_SYSTEMS
    try:
        return frozenset(load_section(IngestParams, "ingest", params_path).iin_systems)
    except ConfigError as exc:
        log.warning("params file not used for the IIN systems: %s", exc)
        return DEFAULT_IIN_SYSTEMS


def build_app(
    settings: ServiceSettings,
    *,
    provider: Any | None = None,
    key: str | None = None,
    load: bool = True,
    params_path: Path = DEFAULT_PARAMS,
    report_renderer: ReportRenderer | None = None,
) -> FastAPI:
    """The service app with the real model provider and the diagnosis and fraud routes.

    Args:
        settings: validated service settings.
        provider: a model provider; None builds the
            :class:`~pipelines.service.mlflow_source.MlflowModelSource`
            on ``settings.tracking_uri`` (or the project's MLflow store), downloading into
            ``<state_dir>/models``, with the Fund's claims history from ``settings.fraud_history`` (else the
            ingest tables beside ``params_path``, when there).
        key: the pseudonymisation key (default: the environment, see :func:`pseudonym_key`).
        load: load the champion models now (a failure leaves the service up and not ready; ``POST
            /admin/reload`` tries again).
        params_path: where the ingest image size and fraud feature options are read from, if present.
        report_renderer: builds the auditors' report page (see :func:`pipelines.service.app.create_app`).

    Raises:
        ServiceConfigError: no usable pseudonymisation key.
    """
    from pipelines.fhir import fastcheck
    from pipelines.service.batching import FraudScoring
    from pipelines.service.fraud_history import HistorySource
    from pipelines.service.mlflow_source import MlflowModelSource
    from pipelines.service.routes import diagnosis, fraud, pacs
    from pipelines.service.routes.clinic import router as clinic_router

    apply_thread_settings(settings.threads)  # before torch is imported by the models
    fastcheck.install()  # before the R4B model classes are built; the stock library on another fhir_core version
    settings = with_uploads(settings)
    pseudonymizer = Pseudonymizer(pseudonym_key(settings, key))
    if provider is None:
        from pipelines.config import mlflow_tracking_uri

        provider = MlflowModelSource(
            tracking_uri=settings.tracking_uri or mlflow_tracking_uri(),
            cache_dir=settings.state_dir / MODELS_DIRNAME,
            histories=HistorySource.configured(settings.fraud_history, Path(params_path).parent),
            **params_defaults(params_path),
        )
    app = create_app(settings, provider, report_renderer=report_renderer)
    app.state.pseudonymizer = pseudonymizer
    app.state.iin_systems = iin_systems_of(params_path)
    app.state.fraud_scoring = FraudScoring.from_settings(settings)
    app.include_router(diagnosis.router)
    app.include_router(pacs.router)
    app.include_router(fraud.router)
    app.include_router(clinic_router)  # the clinicians' page, a client of the diagnosis route above
    if load:
        try:
            state = provider.reload()
        except Exception as exc:  # the service still starts; /ready says why it cannot answer
            log.error("loading the champion models failed: %s", type(exc).__name__)
        else:
            log.info("models ready: %s", state.get("ready"))
    return app


def serve(
    host: str | None = None,
    port: int | None = None,
    tracking_uri: str | None = None,
    report_renderer: ReportRenderer | None = None,
    *,
    workers: int | None = None,
    worker_factory: str | None = None,
) -> None:
    """Serve the champion models over HTTP until stopped (``shipa serve`` parses the options and calls this).

    Args:
        host: overrides ``SHIPA_SERVICE_HOST``.
        port: overrides ``SHIPA_SERVICE_PORT``.
        tracking_uri: overrides ``SHIPA_SERVICE_TRACKING_URI``.
        report_renderer: builds the auditors' report page (``shipa serve`` passes
            :func:`pipelines.audit.served.html_report`).
        workers: overrides ``SHIPA_SERVICE_WORKERS``.
        worker_factory: the import string of the function each worker builds its app with (needed for more than
            one worker; ``shipa serve`` passes :func:`pipelines.cli.service.worker_app`).

    Raises:
        ServiceConfigError: the settings cannot be used (the CLI prints it as one line).
    """
    from pipelines.logging_setup import configure_logging
    from pipelines.service.server import run_server, run_workers

    given = {"host": host, "port": port, "tracking_uri": tracking_uri, "workers": workers}
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = load_service_settings(**overrides)
    configure_logging(settings.log_level)
    if settings.workers == 1:
        run_server(worker_app(settings, report_renderer), settings)
        return
    if worker_factory is None:
        raise ServiceConfigError("more than one worker needs a worker factory (run `shipa serve`)")
    pseudonym_key(settings)  # a missing key is one clear error here, not one per worker
    env = {f"{ENV_PREFIX}{k.upper()}": str(v) for k, v in overrides.items()}
    run_workers(worker_factory, settings, env)


def worker_app(settings: ServiceSettings, report_renderer: ReportRenderer | None = None) -> FastAPI:
    """The app of one serving process, models loaded and its heap settled (see :mod:`pipelines.service.heap`)."""
    from pipelines.service.heap import settle_heap
    from pipelines.service.server import apply_timeouts

    apply_timeouts(settings)  # a worker of `--workers N` builds no uvicorn config of its own
    app = build_app(settings, report_renderer=report_renderer)
    log.debug("%d start-up objects frozen out of garbage collection", settle_heap())
    return app

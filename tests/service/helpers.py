"""Helpers of the service tests: a real in-test model provider, model-like routes (the shape of the lead's
diagnosis/fraud routes), settings on a temporary SQLite file."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from pipelines.predictionlog.log import PredictionRecord, sha256_hex
from pipelines.service.app import create_app
from pipelines.service.deps import InvestigatorPrincipal, ModelSourceDep, RequestAuditDep
from pipelines.service.server import uvicorn_config
from pipelines.service.settings import ServiceSettings

PEPPER = "test-pepper-0123456789-abcdefghij"
# The audit key of the service tests: its own secret, never the pepper (the settings refuse that).
AUDIT_KEY = "test-audit-key-9876543210-zyxwvuts"
# A syntactically valid IIN: must never appear in a response or a log line.
FAKE_IIN = "880101300010"


class StaticProvider:
    """A real ModelSource: two fixed models, a switch for readiness, and a reload counter."""

    def __init__(self, ready: bool = True) -> None:
        self.is_ready = ready
        self.reloads = 0
        self.models: list[dict[str, Any]] = [
            {"name": "shipa-pneumonia", "version": "3", "alias": "champion"},
            {"name": "shipa-fraud", "version": "7", "alias": "champion"},
        ]

    def ready(self) -> dict[str, Any]:
        if not self.is_ready:
            return {"ready": False, "models": [], "reason": "champion models are still loading"}
        return {"ready": True, "models": self.models}

    def reload(self) -> dict[str, Any]:
        self.reloads += 1
        self.is_ready = True
        return self.ready()

    def cards(self) -> list[dict[str, Any]]:
        return [{"name": m["name"], "version": m["version"], "intended_use": "decision support"} for m in self.models]


class Claim(BaseModel):
    claim_id: str = Field(min_length=1, max_length=64)
    amount: float = Field(ge=0)


class ScoreRequest(BaseModel):
    patient: str = Field(pattern=r"^[a-f0-9]{32}$")
    claims: list[Claim] = Field(min_length=1, max_length=50)


def model_router() -> APIRouter:
    """Routes shaped like the lead's model endpoints, plus one that fails on purpose."""
    router = APIRouter()

    @router.post("/test/score")
    def score(
        body: ScoreRequest, principal: InvestigatorPrincipal, audit: RequestAuditDep, provider: ModelSourceDep
    ) -> dict[str, Any]:
        model = provider.ready()["models"][1]
        scores = {c.claim_id: round(min(1.0, c.amount / 1e6), 4) for c in body.claims}
        audit.record(
            model_name=model["name"],
            model_version=model["version"],
            model_alias=model["alias"],
            output={"scores": scores},
            patient_pseudonym=body.patient,
        )
        return {"scores": scores, "token": principal.name}

    @router.post("/test/boom")
    def boom(_principal: InvestigatorPrincipal) -> dict[str, Any]:
        raise RuntimeError(f"cannot read /srv/secret/models/weights.pt for patient {FAKE_IIN}")

    @router.post("/test/fhir")
    def fhir_patient(body: dict[str, Any], _principal: InvestigatorPrincipal) -> dict[str, Any]:
        from fhir.resources.R4B.patient import Patient

        Patient.model_validate(body)
        return {"ok": True}

    return router


def make_settings(tmp_path: Path, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'service.db'}",
        "token_pepper": PEPPER,
        "audit_key": AUDIT_KEY,
        "rate_per_s": 1000.0,
        "burst": 1000,
        "max_body_bytes": 4096,
    }
    values.update(overrides)
    return ServiceSettings(**values)


def build_app(settings: ServiceSettings, provider: StaticProvider | None) -> FastAPI:
    app = create_app(settings, provider)
    app.include_router(model_router())
    return app


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def make_record(i: int = 0, **overrides: Any) -> PredictionRecord:
    values: dict[str, Any] = {
        "token_name": "inv-1",
        "role": "investigator",
        "endpoint": "/fraud/score",
        "model_name": "shipa-fraud",
        "model_version": "7",
        "model_alias": "champion",
        "input_sha256": sha256_hex(f"request {i}".encode()),
        "output": {"scores": {f"claim-{i}": 0.5 + i / 1000}},
        "latency_ms": 12.5 + i,
        "patient_pseudonym": "f" * 32,
        "recorded": T0 + timedelta(minutes=i),
    }
    values.update(overrides)
    return PredictionRecord(**values)


@contextlib.contextmanager
def served(app: FastAPI, settings: ServiceSettings, *, start_timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn (the service's own config) on a free 127.0.0.1 port in a thread.

    Yields the base URL once ``/health`` answers; the server is asked to exit and joined afterwards.
    """
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:  # pragma: no cover
        raise RuntimeError("uvicorn did not start")
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve_env(state: Path, history: Path) -> tuple[str, dict[str, str]]:
    """(database URL, environment) of a ``shipa serve`` subprocess in demo mode over the tiny cohort's history."""
    db = f"sqlite:///{state / 'service.db'}"
    env = {
        **os.environ,
        "SHIPA_SERVICE_DEMO_MODE": "true",
        "SHIPA_SERVICE_TOKEN_PEPPER": PEPPER,
        "SHIPA_SERVICE_STATE_DIR": str(state),
        "SHIPA_SERVICE_DATABASE_URL": db,
        "SHIPA_SERVICE_FRAUD_HISTORY": str(history),
        "SHIPA_SERVICE_LOG_LEVEL": "WARNING",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("SHIPA_PSEUDONYM_KEY", None)  # the demo key, as the tiny cohort was ingested
    return db, env

"""Fixtures of the service tests: settings on a temporary SQLite file, an app with model-like routes, a token per
role, a TestClient, and a real uvicorn server on a free 127.0.0.1 port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pipelines.predictionlog.roles import Role
from pipelines.service.settings import ServiceSettings

from .helpers import StaticProvider, build_app, make_settings, served


@pytest.fixture(autouse=True)
def _clean_service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHIPA_SERVICE_* variable of the machine leaks into a test."""
    for name in list(os.environ):
        if name.startswith("SHIPA_SERVICE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return make_settings(tmp_path)


@pytest.fixture
def provider() -> StaticProvider:
    return StaticProvider()


@pytest.fixture
def app(settings: ServiceSettings, provider: StaticProvider) -> FastAPI:
    return build_app(settings, provider)


@pytest.fixture
def tokens(app: FastAPI) -> dict[str, str]:
    """One active token per role, named after the role."""
    return {role.value: app.state.tokens.add(f"{role.value}-1", role) for role in Role}


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def live_server(app: FastAPI, settings: ServiceSettings) -> Iterator[str]:
    """The app served by a real uvicorn (the service's own config) on a free 127.0.0.1 port in a thread."""
    with served(app, settings, start_timeout=10) as base:
        yield base

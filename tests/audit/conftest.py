"""Fixtures of the audit tests: one registered version per session (real MLflow, seconds to build), and a fresh
audit log per test (a few dozen real appends, milliseconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.predictionlog.log import PredictionLog

from .helpers import Registered, build_registered, fill_audit_log


@pytest.fixture(scope="session")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """A registered version with its lineage, evaluation, gate report, model card and a matching workspace."""
    return build_registered(tmp_path_factory.mktemp("audit-project"))


@pytest.fixture
def audit_db(tmp_path: Path) -> str:
    """The URL of this test's audit log database."""
    return f"sqlite:///{tmp_path / 'service.db'}"


@pytest.fixture
def audit_log(audit_db: str, registered: Registered) -> Iterator[PredictionLog]:
    """An audit log with two days of predictions of the registered version (and one of another model)."""
    log = fill_audit_log(audit_db, registered.version, registered.test_scores)
    try:
        yield log
    finally:
        log.close()

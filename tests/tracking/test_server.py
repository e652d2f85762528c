"""A real `mlflow server` on a free 127.0.0.1 port: register over HTTP, read aliases back through REST."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from pipelines.tracking.gate import GateThresholds
from pipelines.tracking.promotion import gate_version
from pipelines.tracking.registry import register_version
from pipelines.tracking.runs import stage_run
from pipelines.tracking.server import mlflow_server, server_command

from .helpers import DIAGNOSIS_METADATA, DoublingModel

log = logging.getLogger(__name__)


def test_server_command_binds_localhost_with_sqlite_and_served_artifacts(tmp_path: Path) -> None:
    cmd = server_command(tmp_path, port=5123)

    assert cmd[:4] == [sys.executable, "-m", "mlflow", "server"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp_path.resolve() / "mlartifacts")
    assert "--serve-artifacts" in cmd
    assert (cmd[cmd.index("--host") + 1], cmd[cmd.index("--port") + 1]) == ("127.0.0.1", "5123")


def _alias(url: str, name: str, alias: str) -> httpx.Response:
    return httpx.get(f"{url}/api/2.0/mlflow/registered-models/alias", params={"name": name, "alias": alias})


def test_register_over_http_and_read_aliases_through_rest(
    tmp_path: Path, input_example: pd.DataFrame, good_report: dict[str, Any], _template_store: Path
) -> None:
    name = "shipa-diagnosis-pneumonia"
    (tmp_path / "server").mkdir()
    shutil.copy(_template_store, tmp_path / "server" / "mlflow.db")  # already migrated: the server starts faster
    started = time.monotonic()
    with mlflow_server(tmp_path / "server") as server:
        log.info("mlflow server answered after %.1f s", time.monotonic() - started)
        assert server.url.startswith("http://127.0.0.1:")
        with stage_run(
            "train@diagnosis",
            tracking_uri=server.url,
            experiment="shipa",
            params={"lr": 0.1},
            tags={"shipa.git_commit": "abc"},
            pipeline_run_id="http-1",
        ) as run:
            logged = run.log_pyfunc_model(DoublingModel(), input_example=input_example, metadata=DIAGNOSIS_METADATA)
        version = register_version(logged.model_uri, name, tracking_uri=server.url, run_id=logged.run_id)
        missing = _alias(server.url, name, "champion")
        assert missing.status_code == 400 and "not found" in missing.json()["message"]

        decision = gate_version(
            name, version, good_report, GateThresholds(min_primary_low=0.6), tracking_uri=server.url
        )

        assert decision.promote
        for alias in ("challenger", "champion"):
            response = _alias(server.url, name, alias)
            assert response.status_code == 200
            assert response.json()["model_version"]["version"] == version
        tags = {t["key"]: t["value"] for t in _alias(server.url, name, "champion").json()["model_version"]["tags"]}
        assert tags["shipa.gate.decision"] == "promote"
        # Artifacts went through the server into its artifacts destination, not the client's disk layout.
        assert list((tmp_path / "server" / "mlartifacts").rglob("MLmodel"))
        pid = server.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

"""MLflow's backend store on a real PostgreSQL server: runs, registered versions and aliases through
``pipelines.tracking``, with the ``postgresql+psycopg://`` URI itself and through an ``mlflow server`` using it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import psycopg
import pytest
from postgres import Database, free_port
from tracking.helpers import DoublingModel

from pipelines.tracking.client import tracking_uri_scope
from pipelines.tracking.errors import ModelVersionNotFoundError
from pipelines.tracking.registry import (
    alias_version,
    diagnosis_model_name,
    get_version,
    list_versions,
    register_version,
    resolve,
    set_alias,
)
from pipelines.tracking.runs import stage_run
from pipelines.tracking.server import _server_env, _stop

EXAMPLE = pd.DataFrame({"x": [0.1, 0.2]})


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's default experiment points at ./mlruns: keep any of it out of the repository."""
    monkeypatch.chdir(tmp_path)


def _logged(tracking_uri: str, artifacts: Path | None, stage: str) -> Any:
    with stage_run(
        stage,
        tracking_uri=tracking_uri,
        experiment="shipa",
        params={"lr": 0.1},
        tags={"shipa.git_commit": "abc"},
        pipeline_run_id="p-1",
        artifact_location=str(artifacts) if artifacts is not None else None,
    ) as run:
        run.log_metrics({"auroc": 0.91})
        return run.log_pyfunc_model(DoublingModel(), input_example=EXAMPLE)


def _register_and_read_back(tracking_uri: str, artifacts: Path | None, *, versions: int) -> None:
    """Register ``versions`` versions (1 or 2), make version 1 champion, read everything back and load it."""
    name = diagnosis_model_name("pneumonia")
    first = _logged(tracking_uri, artifacts, "train@diagnosis")
    v1 = register_version(first.model_uri, name, tracking_uri=tracking_uri, run_id=first.run_id, tags={"k": "v"})
    if versions == 2:
        second = _logged(tracking_uri, artifacts, "train@diagnosis")
        v2 = register_version(second.model_uri, name, tracking_uri=tracking_uri, run_id=second.run_id)
        assert (v1, v2, alias_version(name, "challenger", tracking_uri=tracking_uri)) == ("1", "2", "2")
    set_alias(name, "champion", v1, tracking_uri=tracking_uri)
    champion = resolve(f"models:/{name}@champion", tracking_uri=tracking_uri)
    assert (champion.version, champion.run_id, champion.tags["k"]) == ("1", first.run_id, "v")
    expected = [("1", ("champion",)), ("2", ("challenger",))] if versions == 2 else [("1", ("challenger", "champion"))]
    assert champion.aliases == expected[0][1]
    assert [(v.version, v.aliases) for v in list_versions(name, tracking_uri=tracking_uri)] == expected
    run = mlflow.MlflowClient(tracking_uri).get_run(first.run_id)
    assert run.data.metrics["auroc"] == 0.91 and run.data.params["lr"] == "0.1"
    assert run.data.tags["shipa.stage"] == "train@diagnosis" and run.info.status == "FINISHED"
    with tracking_uri_scope(tracking_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert loaded.predict(pd.DataFrame({"x": [1.5]}))["x"].tolist() == [3.0]
    with pytest.raises(ModelVersionNotFoundError, match=f"models:/{name}/9 does not exist"):
        get_version(name, "9", tracking_uri=tracking_uri)


def _tables(db: Database) -> set[str]:
    with psycopg.connect(db.conninfo) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {row[0] for row in rows}


def test_the_registry_on_a_postgresql_backend_store(pg_database: Database, tmp_path: Path) -> None:
    """``MLFLOW_TRACKING_URI=postgresql+psycopg://...``: MLflow migrates the database and keeps runs and the
    registry in it; artifacts go to the experiment's artifact location."""
    _register_and_read_back(pg_database.url, tmp_path / "mlartifacts", versions=2)
    assert {"experiments", "runs", "registered_models", "model_versions", "registered_model_aliases"} <= _tables(
        pg_database
    )
    with psycopg.connect(pg_database.conninfo) as conn:
        versions = conn.execute("SELECT name, version FROM model_versions ORDER BY version").fetchall()
    name = diagnosis_model_name("pneumonia")
    assert versions == [(name, 1), (name, 2)]
    assert any((tmp_path / "mlartifacts").rglob("MLmodel"))


@contextlib.contextmanager
def _mlflow_server(backend: str, artifacts: Path, log_file: Path) -> Iterator[str]:
    """``mlflow server`` on a free 127.0.0.1 port with ``backend`` as its store, stopped by its process group."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--serve-artifacts",
        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=_server_env(None), start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log_file.read_text(errors="replace")[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "mlflow server not healthy after 90 s"
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc, 10.0)


def test_an_mlflow_server_on_a_postgresql_backend_store(
    pg_database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlflow server --backend-store-uri postgresql+psycopg://...`` on 127.0.0.1: the stages and the service
    talk to it over HTTP; runs and versions land in PostgreSQL, artifacts under the server's destination."""
    artifacts = tmp_path / "served-artifacts"
    with _mlflow_server(pg_database.url, artifacts, tmp_path / "mlflow-server.log") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        _register_and_read_back(url, None, versions=1)
    with psycopg.connect(pg_database.conninfo) as conn:
        count = conn.execute("SELECT count(*) FROM model_versions").fetchone()
    assert count == (1,)
    assert any(artifacts.rglob("MLmodel"))

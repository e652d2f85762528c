"""MLflow plumbing shared by the tracking modules: clients, experiments, artifact roots, scoped URI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

ARTIFACTS_DIRNAME = "mlartifacts"


def connect(tracking_uri: str) -> MlflowClient:
    """A client whose tracking and registry stores are both ``tracking_uri``."""
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    # sqlite:///relative.db has path "/relative.db"; sqlite:////abs.db has path "//abs.db".
    raw = tracking_uri[len("sqlite:///") :]
    return Path(raw) if raw else None


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Where a new experiment's artifacts go: beside an sqlite store (``<db dir>/mlartifacts/<experiment>``).

    MLflow's own default is ``./mlruns`` relative to the current directory, which scatters artifacts wherever
    a command happens to run. For a server URI, None lets the server decide (its ``--artifacts-destination``).
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return str((db.resolve().parent / ARTIFACTS_DIRNAME / experiment).as_posix())


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``: created at ``artifact_location`` when missing, restored if deleted."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except MlflowException:
        # Another stage created it between our lookup and create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


@contextlib.contextmanager
def tracking_uri_scope(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``tracking_uri`` for the block, then restore the previous URI.

    Only model logging needs this: MLflow's ``Model.log`` resolves the store from the global URI.
    """
    previous = mlflow.get_tracking_uri()
    previous_registry = mlflow.get_registry_uri()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        mlflow.set_registry_uri(previous_registry)

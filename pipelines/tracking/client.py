"""MLflow plumbing shared by the tracking modules: clients, experiments, artifact roots, scoped URI."""

from __future__ import annotations

import contextlib
import os
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
    """Point MLflow's fluent API at ``tracking_uri`` for the block, then restore exactly what was there.

    Only model logging needs this: MLflow's ``Model.log`` resolves the store from the global URI. Restoring
    with ``set_tracking_uri(previous)`` would pin the previous (possibly defaulted) URI as a global and write it
    into ``MLFLOW_TRACKING_URI``, so a later stage run in the same process could land in the wrong store: the
    module globals and the environment variables are saved and put back as they were.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    saved_globals = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_globals
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

"""Log a model as an MLflow pyfunc into a given run: the extension point for the diagnosis and fraud wrappers.

A wrapper is a ``mlflow.pyfunc.PythonModel`` subclass (its ``load_context`` reads ``context.artifacts``); the
caller passes an instance, its artifact files, and an input example (the signature is inferred from it when
not given).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc.model import PythonModel

from pipelines.tracking.client import connect, tracking_uri_scope

log = logging.getLogger(__name__)

DEFAULT_REQUIREMENTS = ("mlflow", "numpy", "pandas")


@dataclass(frozen=True)
class LoggedModelRef:
    """Where a logged model lives: pass ``model_uri`` and ``run_id`` to :func:`registry.register_version`."""

    model_uri: str
    model_id: str
    run_id: str
    name: str


def pinned_requirements(names: Sequence[str] = DEFAULT_REQUIREMENTS) -> list[str]:
    """``name==installed version`` for each installed distribution (unknown ones are left out)."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name)}")
        except importlib_metadata.PackageNotFoundError:
            continue
    return pins


def log_pyfunc_model(
    python_model: PythonModel,
    *,
    tracking_uri: str,
    run_id: str,
    input_example: Any,
    name: str = "model",
    artifacts: Mapping[str, str | Path] | None = None,
    signature: ModelSignature | None = None,
    pip_requirements: Sequence[str] | None = None,
    code_paths: Sequence[str | Path] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> LoggedModelRef:
    """Log ``python_model`` as a pyfunc model of run ``run_id`` (in that run's experiment).

    Args:
        python_model: the wrapper instance (pickled with cloudpickle; keep weights in ``artifacts``).
        tracking_uri: the MLflow store.
        run_id: the run that produced the model (the stage run).
        input_example: a small example input (pandas DataFrame or dict of arrays) saved with the model.
        name: the model's name inside the run.
        artifacts: artifact name -> local file or folder, copied into the model (weights, thresholds, plans).
        signature: the input/output schema; None infers it by running the model on ``input_example``.
        pip_requirements: pinned requirements; None pins mlflow, numpy and pandas as installed. Given
            explicitly, MLflow does not spend seconds inferring them.
        code_paths: local code folders/files copied into the model for loading outside this project.
        metadata: free-form metadata stored in the MLmodel file.
    """
    client = connect(tracking_uri)
    run = client.get_run(run_id)
    # Create the LoggedModel ourselves, else MLflow files it under the fluent API's current experiment.
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params={k: str(v) for k, v in run.data.params.items()},
    )
    with tracking_uri_scope(tracking_uri):
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=logged.model_id,
            python_model=python_model,
            artifacts={k: str(v) for k, v in (artifacts or {}).items()} or None,
            signature=signature,
            input_example=input_example,
            pip_requirements=list(pip_requirements) if pip_requirements is not None else pinned_requirements(),
            code_paths=[str(p) for p in code_paths] if code_paths else None,
            metadata=dict(metadata) if metadata else None,
        )
    log.info("logged pyfunc model %s (%s) to run %s", name, info.model_id, run_id)
    return LoggedModelRef(model_uri=info.model_uri, model_id=info.model_id, run_id=run_id, name=name)

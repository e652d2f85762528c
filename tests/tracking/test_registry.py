"""Registry: a real pyfunc logged into a stage run, registered, aliased, loaded back."""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
import pytest

from pipelines.tracking.client import tracking_uri_scope
from pipelines.tracking.errors import ModelVersionNotFoundError
from pipelines.tracking.registry import (
    FRAUD_MODEL_NAME,
    alias_version,
    champion_version,
    diagnosis_model_name,
    get_version,
    register_version,
    resolve,
    set_alias,
    version_history,
)
from pipelines.tracking.runs import stage_run

from .helpers import DoublingModel


def _logged(tracking_uri: str, example: pd.DataFrame, stage: str = "train@diagnosis") -> Any:
    with stage_run(
        stage,
        tracking_uri=tracking_uri,
        experiment="shipa",
        params={"lr": 0.1},
        tags={"shipa.git_commit": "abc"},
        pipeline_run_id=None,
    ) as run:
        return run.log_pyfunc_model(DoublingModel(), input_example=example)


def test_new_versions_get_challenger_and_load_back(tracking_uri: str, input_example: pd.DataFrame) -> None:
    name = diagnosis_model_name("pneumonia")
    first = _logged(tracking_uri, input_example)
    v1 = register_version(first.model_uri, name, tracking_uri=tracking_uri, run_id=first.run_id, tags={"k": "v"})
    assert (v1, alias_version(name, "challenger", tracking_uri=tracking_uri)) == ("1", "1")
    assert champion_version(name, tracking_uri=tracking_uri) is None

    second = _logged(tracking_uri, input_example)
    v2 = register_version(second.model_uri, name, tracking_uri=tracking_uri, run_id=second.run_id)
    assert (v2, alias_version(name, "challenger", tracking_uri=tracking_uri)) == ("2", "2")

    info = get_version(name, v1, tracking_uri=tracking_uri)
    assert info.run_id == first.run_id and info.tags["k"] == "v" and info.aliases == ()
    with tracking_uri_scope(tracking_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@challenger")
    assert loaded.predict(pd.DataFrame({"x": [1.5]}))["x"].tolist() == [3.0]
    assert loaded.metadata.get_input_schema().input_names() == ["x"]


def test_aliases_history_and_uri_resolution(tracking_uri: str, input_example: pd.DataFrame) -> None:
    logged = _logged(tracking_uri, input_example, "train@fraud")
    for _ in range(2):
        register_version(logged.model_uri, FRAUD_MODEL_NAME, tracking_uri=tracking_uri, run_id=logged.run_id)
    set_alias(FRAUD_MODEL_NAME, "champion", "1", tracking_uri=tracking_uri)

    assert champion_version(FRAUD_MODEL_NAME, tracking_uri=tracking_uri) == "1"
    assert resolve("models:/shipa-fraud@champion", tracking_uri=tracking_uri).version == "1"
    assert resolve("models:/shipa-fraud/2", tracking_uri=tracking_uri).aliases == ("challenger",)
    history = version_history(FRAUD_MODEL_NAME, tracking_uri=tracking_uri)
    assert [(h["version"], h["aliases"]) for h in history] == [("1", ["champion"]), ("2", ["challenger"])]


def test_missing_models_versions_and_aliases_are_named_errors(tracking_uri: str) -> None:
    with pytest.raises(ModelVersionNotFoundError, match="models:/shipa-fraud/7 does not exist"):
        get_version("shipa-fraud", "7", tracking_uri=tracking_uri)
    with pytest.raises(ModelVersionNotFoundError, match="no alias champion"):
        resolve("models:/shipa-fraud@champion", tracking_uri=tracking_uri)
    with pytest.raises(ModelVersionNotFoundError, match="is not models:/"):
        resolve("runs:/abc/model", tracking_uri=tracking_uri)
    assert champion_version("shipa-fraud", tracking_uri=tracking_uri) is None
    with pytest.raises(ValueError, match="lower-case"):
        diagnosis_model_name("Pneumonia; drop")

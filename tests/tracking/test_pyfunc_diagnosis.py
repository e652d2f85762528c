"""The diagnosis pyfunc: raw inputs through the training preprocessing, a real model and the calibration.

A real (tiny, 2-epoch) fusion model is trained once on the synthetic study table; the scaler and calibration
files are written by hand, so the expected outputs can be computed by hand too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from scipy.special import expit, logit

from pipelines.errors import InputError
from pipelines.features.diagnosis import Scaler
from pipelines.modeling import engine
from pipelines.modeling.options import TrainOptions
from pipelines.modeling.synthetic import EHR_COLUMNS, make_study_table
from pipelines.tracking.client import tracking_uri_scope
from pipelines.tracking.pyfunc_diagnosis import (
    DiagnosisPredictor,
    DiagnosisPyfunc,
    artifact_files,
    input_example,
    load_predictor,
    signature,
)
from pipelines.tracking.runs import stage_run

TEMPERATURE, THRESHOLD = 1.7, 0.45
SCALER = Scaler(
    features=["temperature", "crp", "age"],
    median={"temperature": 37.2, "crp": 8.0, "age": 51.0},
    mean={"temperature": 37.4, "crp": 14.0, "age": 49.0},
    std={"temperature": 0.9, "crp": 20.0, "age": 18.0},
)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained fused model folder, its features.json and calibration.json, and the study table."""
    root = tmp_path_factory.mktemp("pyfunc-diagnosis")
    table = make_study_table(root, n=48, size=32, seed=0)
    options = TrainOptions(image_size=32, epochs=2, batch_size=8, num_threads=1, precision="fp32", augment=False)
    engine.train(options, table, ehr_columns=EHR_COLUMNS, out_dir=root / "fused", seed=0)
    features = root / "features.json"
    features.write_text(json.dumps({"task": "pneumonia", "raw_features": SCALER.features, "scaler": SCALER.to_dict()}))
    calibration = root / "calibration.json"
    calibration.write_text(json.dumps({"fused": {"temperature": TEMPERATURE, "threshold": THRESHOLD}}))
    return {"model_dir": root / "fused", "features": features, "calibration": calibration, "table": table}


@pytest.fixture(scope="module")
def predictor(model_files: dict[str, Any]) -> DiagnosisPredictor:
    """The loaded predictor (CPU)."""
    return load_predictor(model_files["model_dir"], model_files["features"], model_files["calibration"])


def _raw_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Raw EHR values for the studies (CRP missing on some), with their image paths."""
    rng = np.random.default_rng(5)
    n = len(table)
    crp = rng.uniform(0.0, 80.0, n).tolist()
    for i in range(0, n, 4):
        crp[i] = None
    return pd.DataFrame(
        {
            "image_path": table["image_path"],
            "temperature": rng.uniform(36.0, 40.0, n),
            "crp": crp,
            "age": rng.uniform(18.0, 90.0, n),
        }
    )


def _by_hand(model_files: dict[str, Any], raw: pd.DataFrame) -> np.ndarray:
    """The training chain written out: median fill, standardise, flag, run the model, temperature-scale."""
    ehr = {}
    for f in SCALER.features:
        values = raw[f].astype(float).to_numpy()
        missing = np.isnan(values)
        ehr[f"ehr_{f}"] = (np.where(missing, SCALER.median[f], values) - SCALER.mean[f]) / SCALER.std[f]
        ehr[f"miss_{f}"] = missing.astype(float)
    table = pd.DataFrame({"image_path": raw["image_path"], **{c: ehr[c] for c in EHR_COLUMNS}})
    model, meta = engine.load_model(model_files["model_dir"])
    probs = np.clip(engine.predict(model, meta, table), 1e-6, 1 - 1e-6)
    out: np.ndarray = expit(logit(probs) / TEMPERATURE)
    return out


def test_raw_inputs_get_the_training_preprocessing_and_calibration(
    model_files: dict[str, Any], predictor: DiagnosisPredictor
) -> None:
    raw = _raw_rows(model_files["table"])
    out = predictor.predict(raw)
    expected = _by_hand(model_files, raw)
    assert list(out.columns) == ["probability", "positive"]
    assert np.std(expected) > 1e-3
    np.testing.assert_allclose(out["probability"], expected, atol=1e-6)
    assert out["positive"].tolist() == (expected >= THRESHOLD).tolist()
    # Column order of the input does not matter; a missing value is a missing value whether None or NaN.
    shuffled = raw[["age", "crp", "image_path", "temperature"]].astype({"crp": float})
    np.testing.assert_allclose(predictor.predict(shuffled)["probability"], out["probability"], rtol=1e-5, atol=1e-6)


def test_images_as_arrays_nested_lists_or_paths_score_the_same(
    model_files: dict[str, Any], predictor: DiagnosisPredictor
) -> None:
    raw = _raw_rows(model_files["table"]).head(6)
    by_path = predictor.predict(raw)["probability"]
    arrays = raw.drop(columns="image_path").assign(image=[np.load(p) for p in raw["image_path"]])
    lists = raw.drop(columns="image_path").assign(image=[np.load(p).astype(float).tolist() for p in raw["image_path"]])
    np.testing.assert_allclose(predictor.predict(arrays)["probability"], by_path, atol=1e-6)
    np.testing.assert_allclose(predictor.predict(lists)["probability"], by_path, atol=1e-6)
    # Rows may mix both forms; where a row gives both, the image wins over the path.
    other = raw["image_path"].iloc[1]
    mixed = raw.assign(image=[np.load(other)] + [None] * 5)
    swapped = raw.assign(image_path=[other, *raw["image_path"].iloc[1:]])
    np.testing.assert_allclose(
        predictor.predict(mixed)["probability"], predictor.predict(swapped)["probability"], atol=1e-6
    )
    assert abs(predictor.predict(mixed)["probability"].iloc[0] - by_path.iloc[0]) > 1e-5


def test_unusable_rows_are_named_without_their_values(
    predictor: DiagnosisPredictor, model_files: dict[str, Any]
) -> None:
    raw = _raw_rows(model_files["table"]).head(3)
    with pytest.raises(InputError, match=r"row 1: needs 'image' \(2-D array\) or 'image_path'"):
        predictor.predict(raw.assign(image_path=[raw["image_path"].iloc[0], None, raw["image_path"].iloc[2]]))
    with pytest.raises(InputError, match="missing EHR column"):
        predictor.predict(raw.drop(columns="crp"))
    with pytest.raises(InputError, match=r"row 2: 'age' is not a number") as err:
        predictor.predict(raw.assign(age=[40.0, 41.0, "fifty-one"]))
    assert "fifty-one" not in str(err.value)
    with pytest.raises(InputError, match="row 0: unusable image"):
        predictor.predict(raw.drop(columns="image_path").assign(image=[np.zeros((2, 4, 4))] * 3))
    with pytest.raises(InputError, match="row 0: the image holds NaN"):
        predictor.predict(raw.drop(columns="image_path").assign(image=[np.full((8, 8), np.nan)] * 3))


def test_logged_pyfunc_loads_back_with_its_signature(
    model_files: dict[str, Any], predictor: DiagnosisPredictor, tracking_uri: str, tmp_path: Path
) -> None:
    example = input_example(SCALER)
    assert example.loc[0, "temperature"] == SCALER.median["temperature"]  # aggregates, never a patient's row
    assert np.isnan(example.loc[0, "age"])
    with stage_run(
        "register@diagnosis", tracking_uri=tracking_uri, experiment="shipa", params={}, tags={}, pipeline_run_id=None
    ) as run:
        artifacts = artifact_files(
            model_files["model_dir"], model_files["features"], model_files["calibration"], tmp_path
        )
        ref = run.log_pyfunc_model(
            DiagnosisPyfunc(), artifacts=artifacts, input_example=example, signature=signature(SCALER.features)
        )
    with tracking_uri_scope(tracking_uri):
        loaded = mlflow.pyfunc.load_model(ref.model_uri)
        local = Path(mlflow.artifacts.download_artifacts(ref.model_uri, dst_path=str(tmp_path / "dl")))
    assert sorted(p.name for p in (local / "artifacts" / "model").iterdir()) == ["model.json", "model.pt"]
    inputs = loaded.metadata.get_input_schema()
    assert inputs.input_names() == ["image", "image_path", "temperature", "crp", "age"]
    assert [c.name for c in inputs.inputs if c.required] == ["temperature", "crp", "age"]

    raw = _raw_rows(model_files["table"]).head(8)
    # The logged pyfunc (schema enforcement, its own load) against the predictor: float32 outputs of two code paths.
    expected = predictor.predict(raw)["probability"]
    np.testing.assert_allclose(loaded.predict(raw)["probability"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(MlflowException, match="crp"):
        loaded.predict(raw.drop(columns="crp"))
    unwrapped = loaded.unwrap_python_model().predictor  # the service's path, without schema enforcement
    np.testing.assert_allclose(unwrapped.predict(raw)["probability"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="not loaded"):
        _ = DiagnosisPyfunc().predictor


def test_an_ehr_only_model_needs_no_image(model_files: dict[str, Any], tmp_path: Path) -> None:
    options = TrainOptions(mode="ehr", epochs=1, batch_size=8, num_threads=1, precision="fp32")
    engine.train(options, model_files["table"], ehr_columns=EHR_COLUMNS, out_dir=tmp_path / "ehr", seed=0)
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"ehr": {"temperature": 1.0, "threshold": 0.5}}))
    ehr_only = load_predictor(tmp_path / "ehr", model_files["features"], calibration)
    raw = _raw_rows(model_files["table"]).drop(columns="image_path")
    out = ehr_only.predict(raw)
    assert len(out) == len(raw) and out["probability"].between(0, 1).all()
    with pytest.raises(InputError, match="no calibration for mode 'ehr'"):
        load_predictor(tmp_path / "ehr", model_files["features"], model_files["calibration"])


@pytest.mark.gpu
def test_gpu_scores_match_the_cpu(model_files: dict[str, Any], predictor: DiagnosisPredictor) -> None:
    on_gpu = load_predictor(
        model_files["model_dir"], model_files["features"], model_files["calibration"], device="cuda"
    )
    raw = _raw_rows(model_files["table"])
    np.testing.assert_allclose(on_gpu.predict(raw)["probability"], predictor.predict(raw)["probability"], atol=1e-3)

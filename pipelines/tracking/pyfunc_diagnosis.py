"""The diagnosis model as an MLflow pyfunc: a radiograph and raw EHR values in, a calibrated probability out.

Serving rebuilds the training preprocessing from the files saved at training time, so the two cannot drift
apart: the EHR vector comes from :func:`pipelines.features.diagnosis.ehr_matrix` with the scaler in
``features.json``, the image goes through :func:`pipelines.modeling.engine.predict_arrays` (the deterministic
chain of :func:`pipelines.modeling.data.preprocess_image`, at the model's image size), and the probability is
temperature-scaled with the evaluation stage's ``calibration.json``.

The model's intended input (:class:`~pipelines.imaging.domain.InputDomain`: SOP classes, modalities, body parts,
views, photometric interpretations, frames, size, pixel spacing and age the training images had) travels with it
as the artifact ``input_domain`` (``input_domain.json``) and in the MLmodel metadata (``input_domain``). The
pyfunc receives pixels, not DICOM headers, so it does not check them itself: the service checks every uploaded
header against :attr:`DiagnosisPredictor.input_domain` before any pixel is decoded.

When the header lies, the pixels are checked too: the image out-of-distribution score of the evaluation stage
(:class:`~pipelines.evaluation.ood.ImageOOD`, artifact ``image_ood``) is computed from the same forward pass,
and the output gets two more columns, ``ood_score`` and ``out_of_distribution`` (the score is above the
threshold chosen at evaluation). The service refuses such a study (422) without showing its probability; a batch
user of the pyfunc reads the column.

Input rows (a pandas DataFrame): ``image`` (a 2-D array or nested list, e.g. the de-identified normalised
pixel array) or ``image_path`` (an ingest ``.npy``), plus one column per raw EHR feature (``age``,
``sex_male`` and each observation name; None/NaN = missing). Output: ``probability`` and ``positive``
(probability at or above the evaluation's threshold), plus ``ood_score`` and ``out_of_distribution`` for a
model with an image OOD score.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel, PythonModelContext
from mlflow.types.schema import Array, ColSpec, Schema

from pipelines.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from pipelines.evaluation.ood import ImageOOD
    from pipelines.features.diagnosis import Scaler
    from pipelines.imaging.domain import InputDomain
    from pipelines.modeling.options import ModelMeta

log = logging.getLogger(__name__)

ARTIFACT_MODEL = "model"
ARTIFACT_FEATURES = "features"
ARTIFACT_CALIBRATION = "calibration"
ARTIFACT_INPUT_DOMAIN = "input_domain"
METADATA_INPUT_DOMAIN = "input_domain"
ARTIFACT_IMAGE_OOD = "image_ood"
METADATA_IMAGE_OOD = "image_ood"
OOD_SCORE = "ood_score"
OUT_OF_DISTRIBUTION = "out_of_distribution"
IMAGE = "image"
IMAGE_PATH = "image_path"
PROBABILITY = "probability"
POSITIVE = "positive"
EXAMPLE_IMAGE_SIZE = 32
REQUIREMENTS = ("mlflow", "numpy", "pandas", "scipy", "torch", "monai", "pydantic")


@dataclass(frozen=True)
class DiagnosisPredictor:
    """A loaded diagnosis model with its scaler and calibration; usable with or without MLflow.

    Attributes:
        model: the network, in eval mode.
        meta: its ``model.json``.
        scaler: the EHR scaler fitted on the training split.
        temperature: the evaluation stage's temperature for this model's mode.
        threshold: the decision threshold chosen on validation data.
        task: the task name (``pneumonia``).
        input_domain: the DICOM headers the model may be used on; None for a model registered without one
            (the service refuses to serve it).
        image_ood: the image out-of-distribution score; None for an EHR model or a version registered without
            one (the service refuses to serve an image model without it).
    """

    model: nn.Module
    meta: ModelMeta
    scaler: Scaler
    temperature: float
    threshold: float
    task: str
    input_domain: InputDomain | None = None
    image_ood: ImageOOD | None = None

    @property
    def raw_features(self) -> list[str]:
        """The raw EHR input columns, in vector order."""
        return list(self.scaler.features)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Calibrated probability and decision for every row, in row order.

        Raises:
            InputError: a row has no usable image, or an EHR column is absent or not numeric.
        """
        from pipelines.evaluation.calibration import LOGIT_EPS, apply_temperature
        from pipelines.evaluation.weighted import logit
        from pipelines.modeling.engine import predict_arrays

        frame = pd.DataFrame(frame).reset_index(drop=True)
        images = _images(frame) if self.meta.mode != "ehr" else None
        ehr = self._ehr(frame) if self.meta.ehr_columns else None
        scores: np.ndarray | None = None
        if self.image_ood is not None and images is not None:
            from pipelines.modeling.embedding import predict_with_embeddings

            probs, embeddings = predict_with_embeddings(self.model, self.meta, images, ehr)
            scores = self.image_ood.scores(embeddings)
        else:
            probs = predict_arrays(self.model, self.meta, images, ehr, n=len(frame))
        calibrated = apply_temperature(logit(probs, eps=LOGIT_EPS), self.temperature)
        out = pd.DataFrame({PROBABILITY: calibrated, POSITIVE: calibrated >= self.threshold})
        if self.image_ood is not None and scores is not None:
            out[OOD_SCORE] = scores
            out[OUT_OF_DISTRIBUTION] = scores > self.image_ood.threshold
        return out

    def _ehr(self, frame: pd.DataFrame) -> np.ndarray:
        from pipelines.features.diagnosis import ehr_columns, ehr_matrix

        missing = [f for f in self.scaler.features if f not in frame.columns]
        if missing:
            raise InputError(
                f"diagnosis input: missing EHR column(s) {', '.join(missing)} (None marks a missing value)"
            )
        raw = {f: _numbers(frame[f], f) for f in self.scaler.features}
        values, flags = ehr_matrix(raw, self.scaler)
        value_cols, flag_cols = ehr_columns(self.scaler.features)
        by_name = dict(zip([*value_cols, *flag_cols], np.concatenate([values, flags], axis=1).T, strict=True))
        unknown = [c for c in self.meta.ehr_columns if c not in by_name]
        if unknown:
            raise InputError(f"model expects EHR column(s) {', '.join(unknown)} that features.json does not define")
        return np.stack([by_name[c] for c in self.meta.ehr_columns], axis=1).astype(np.float32)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numbers(column: pd.Series, name: str) -> list[float | None]:
    out: list[float | None] = []
    for i, value in enumerate(column.tolist()):
        if _missing(value):
            out.append(None)
            continue
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            # The value itself stays out of the message: it is a patient's measurement.
            raise InputError(f"diagnosis input row {i}: '{name}' is not a number") from None
    return out


def _image_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype == object:
        # A column of nested lists can arrive as an object array of row arrays.
        value = np.stack([np.asarray(row, dtype=np.float32) for row in value])
    return np.asarray(value, dtype=np.float32)


def _images(frame: pd.DataFrame) -> list[np.ndarray]:
    from pipelines.modeling.data import load_image_array

    images = []
    for i in range(len(frame)):
        value = frame[IMAGE].iat[i] if IMAGE in frame.columns else None
        path = frame[IMAGE_PATH].iat[i] if IMAGE_PATH in frame.columns else None
        try:
            if value is not None and not _missing(value):
                image = load_image_array(_image_array(value))
            elif isinstance(path, str) and path:
                image = load_image_array(path)
            else:
                raise InputError(f"diagnosis input row {i}: needs '{IMAGE}' (2-D array) or '{IMAGE_PATH}' (.npy)")
        except (ValueError, OSError) as exc:
            raise InputError(f"diagnosis input row {i}: unusable image ({type(exc).__name__})") from None
        if not np.isfinite(image).all():
            raise InputError(f"diagnosis input row {i}: the image holds NaN or infinite pixels")
        images.append(image)
    return images


def load_predictor(
    model_dir: Path,
    features_path: Path,
    calibration_path: Path,
    *,
    device: str = "cpu",
    input_domain_path: Path | None = None,
    image_ood_path: Path | None = None,
) -> DiagnosisPredictor:
    """Load a trained mode folder (``model.pt``, ``model.json``) with its scaler and calibration.

    Args:
        model_dir: ``models/diagnosis/train/<mode>``.
        features_path: the ``features.json`` the model was trained with (task, raw features, scaler).
        calibration_path: the evaluation's ``calibration.json`` (``{mode: {temperature, threshold}}``).
        device: ``cpu`` (the default, as the evaluation ran), ``auto`` or ``cuda[:N]``.
        input_domain_path: the ``input_domain.json`` recorded with the model; None: the predictor has none.
        image_ood_path: the evaluation's ``image_ood_<mode>.npz``; None: the predictor has none.

    Raises:
        InputError: the calibration has no entry for the model's mode, or the image OOD file is unusable.
        InputDomainError: the input domain file is not a valid domain.
    """
    from pipelines.evaluation.ood import ImageOOD
    from pipelines.features.diagnosis import Scaler
    from pipelines.imaging.domain import InputDomain
    from pipelines.modeling.engine import load_model

    model, meta = load_model(Path(model_dir), device=device)
    features = json.loads(Path(features_path).read_text(encoding="utf-8"))
    calibration = json.loads(Path(calibration_path).read_text(encoding="utf-8"))
    entry = calibration.get(meta.mode)
    if not isinstance(entry, Mapping):
        raise InputError(f"{calibration_path}: no calibration for mode '{meta.mode}' (run `shipa evaluate` first)")
    return DiagnosisPredictor(
        model=model,
        meta=meta,
        scaler=Scaler.from_dict(features["scaler"]),
        temperature=float(entry["temperature"]),
        threshold=float(entry["threshold"]),
        task=str(features["task"]),
        input_domain=(
            InputDomain.from_json(Path(input_domain_path).read_bytes()) if input_domain_path is not None else None
        ),
        image_ood=ImageOOD.load(Path(image_ood_path)) if image_ood_path is not None else None,
    )


class DiagnosisPyfunc(PythonModel):
    """MLflow wrapper of :class:`DiagnosisPredictor`; artifacts: ``model`` (folder), ``features``, ``calibration``,
    ``input_domain`` and ``image_ood`` (each of the last two absent from versions registered before it was
    recorded; ``image_ood`` also from EHR-only models).

    ``model_config={"device": "auto"}`` at load time runs it on a GPU; the default is the CPU, where the
    evaluation's predictions were made.
    """

    def __init__(self) -> None:
        """An empty wrapper; :meth:`load_context` loads the artifacts."""
        self._predictor: DiagnosisPredictor | None = None

    @property
    def predictor(self) -> DiagnosisPredictor:
        """The loaded predictor (``loaded.unwrap_python_model().predictor``): the same model without MLflow's
        per-call schema enforcement, which costs about 20 ms per 128 x 128 image row.

        Raises:
            RuntimeError: the wrapper was not loaded by MLflow.
        """
        if self._predictor is None:
            raise RuntimeError("DiagnosisPyfunc is not loaded; load it with mlflow.pyfunc.load_model")
        return self._predictor

    def load_context(self, context: PythonModelContext) -> None:
        """Load the model, scaler and calibration from the logged artifacts."""
        self._predictor = self._load(context)

    @staticmethod
    def _load(context: PythonModelContext) -> DiagnosisPredictor:
        config = context.model_config or {}
        domain = context.artifacts.get(ARTIFACT_INPUT_DOMAIN)
        ood = context.artifacts.get(ARTIFACT_IMAGE_OOD)
        return load_predictor(
            Path(context.artifacts[ARTIFACT_MODEL]),
            Path(context.artifacts[ARTIFACT_FEATURES]),
            Path(context.artifacts[ARTIFACT_CALIBRATION]),
            device=str(config.get("device", "cpu")),
            input_domain_path=Path(domain) if domain else None,
            image_ood_path=Path(ood) if ood else None,
        )

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """``probability`` and ``positive`` for each input row (see the module docstring for the columns)."""
        if self._predictor is None:
            self._predictor = self._load(context)
        return self._predictor.predict(model_input)


def artifact_files(
    model_dir: Path,
    features_path: Path,
    calibration_path: Path,
    scratch: Path,
    input_domain_path: Path | None = None,
    image_ood_path: Path | None = None,
) -> dict[str, str]:
    """The wrapper's artifacts, copied into ``scratch``: the weights and ``model.json`` only, plus the features,
    the calibration and (when given) the input domain and the image OOD score.

    The training folder also holds validation predictions (study ids); they stay out of the registry.
    """
    from pipelines.modeling.engine import META_FILE, MODEL_FILE

    folder = scratch / ARTIFACT_MODEL
    folder.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, META_FILE):
        shutil.copy2(Path(model_dir) / name, folder / name)
    files = {
        ARTIFACT_MODEL: str(folder),
        ARTIFACT_FEATURES: str(Path(features_path)),
        ARTIFACT_CALIBRATION: str(Path(calibration_path)),
    }
    if input_domain_path is not None:
        files[ARTIFACT_INPUT_DOMAIN] = str(Path(input_domain_path))
    if image_ood_path is not None:
        files[ARTIFACT_IMAGE_OOD] = str(Path(image_ood_path))
    return files


def signature(raw_features: Sequence[str]) -> ModelSignature:
    """Inputs: optional ``image`` (2-D array of doubles) or ``image_path``, and one double per raw feature.

    MLflow's schema check refuses an int64 column as double unless it holds only 0 and 1, so clients send EHR
    values as floats (``40.0``, not ``40``); None marks a missing value.
    """
    inputs = [
        ColSpec(Array(Array("double")), IMAGE, required=False),
        ColSpec("string", IMAGE_PATH, required=False),
        *[ColSpec("double", f) for f in raw_features],
    ]
    return ModelSignature(
        inputs=Schema(inputs),  # type: ignore[arg-type]
        outputs=Schema(
            [
                ColSpec("double", PROBABILITY),
                ColSpec("boolean", POSITIVE),
                ColSpec("double", OOD_SCORE, required=False),
                ColSpec("boolean", OUT_OF_DISTRIBUTION, required=False),
            ]
        ),
    )


def input_example(scaler: Scaler, size: int = EXAMPLE_IMAGE_SIZE) -> pd.DataFrame:
    """One row in the input format built from aggregates, never from a patient's record.

    The EHR values are the training split's medians (from the scaler) with the last feature missing, to show
    how missing values are sent; the image is a smooth synthetic pattern of ``size`` x ``size`` pixels.
    """
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    image = 0.5 + 0.25 * np.sin(np.pi * xx) * np.cos(np.pi * yy)
    row: dict[str, Any] = {IMAGE: [np.round(image, 4).tolist()]}
    for i, feature in enumerate(scaler.features):
        last = i == len(scaler.features) - 1 and len(scaler.features) > 1
        row[feature] = [None if last else round(float(scaler.median[feature]), 3)]
    frame = pd.DataFrame(row)
    return frame.astype({f: "float64" for f in scaler.features})

"""Stage ``register@diagnosis``: register the diagnosis model ``evaluate`` reported, behind the promotion gate.

The model's input domain (``input_domain.json`` of ``shipa features diagnosis``, fitted on the train split's image
headers) is recorded with it three ways: the pyfunc artifact ``input_domain``, the MLmodel metadata
``input_domain`` (which the promotion gate checks) and the model card's "Intended input" section. An image model's
out-of-distribution score (``eval/image_ood_<mode>.npz`` of ``shipa evaluate diagnosis``) goes with it as the
artifact ``image_ood``, its summary (threshold, counts) as the metadata ``image_ood``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.config import DiagnosisRegisterParams
from pipelines.errors import InputError
from pipelines.evaluation.ood import ImageOOD, ood_file
from pipelines.features.diagnosis import Scaler
from pipelines.imaging.domain import INPUT_DOMAIN_FILE, InputDomain, InputDomainError
from pipelines.stages.register import Candidate, estimate, read_json, register_candidate
from pipelines.tracking import pyfunc_diagnosis as wrapper
from pipelines.tracking.card_text import diagnosis_card_text
from pipelines.tracking.registry import diagnosis_model_name

log = logging.getLogger(__name__)


def ingest_image_size(dataset: Path) -> int | None:
    """The side of the ingest arrays the model was trained on (what serving resamples a new DICOM to first).

    Read from the first study's ``.npy`` header in ``dataset.parquet``; None when it cannot be read or the
    array is not square.
    """
    try:
        first = pl.read_parquet(dataset, columns=["image_path"], n_rows=1)["image_path"].to_list()
        shape: tuple[int, ...] = np.load(first[0], mmap_mode="r", allow_pickle=False).shape if first else ()
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        log.warning(
            "%s: ingest image size unknown (%s); the model's metadata leaves it out", dataset, type(exc).__name__
        )
        return None
    return int(shape[0]) if len(shape) == 2 and shape[0] == shape[1] else None


def read_input_domain(processed: Path) -> InputDomain:
    """The input domain ``shipa features diagnosis`` fitted on the training images.

    Raises:
        InputError: the file is missing or not a valid input domain.
    """
    path = processed / INPUT_DOMAIN_FILE
    if not path.exists():
        raise InputError(f"{path}: not found (run `shipa features diagnosis` first)")
    try:
        return InputDomain.from_json(path.read_bytes())
    except InputDomainError as exc:
        raise InputError(f"{path}: {exc}") from None


def ood_metadata(ood: ImageOOD) -> dict[str, Any]:
    """The MLmodel metadata of an image OOD score: its threshold and counts (the names of the calibration images
    stay in the artifact's summary)."""
    summary = dict(ood.summary)
    summary["calibration"] = {k: v for k, v in summary.get("calibration", {}).items() if k != "images"}
    return summary


def ood_card_line(ood: ImageOOD) -> dict[str, str]:
    """The model card's line on the image OOD score (what the service refuses when the pixels are not alike)."""
    s = ood.summary
    val, test, cal = s.get("val", {}), s.get("test", {}), s.get("calibration", {})
    return {
        "Image appearance": (
            f"the image's embedding within the training radiographs' range (Mahalanobis score <= "
            f"{ood.threshold:.1f}); refuses {test.get('refused', '?')} of {test.get('n', '?')} test and "
            f"{val.get('refused', '?')} of {val.get('n', '?')} validation images, and {cal.get('caught', '?')} of "
            f"{cal.get('n', '?')} calibration images of other modalities"
        )
    }


def read_image_ood(eval_dir: Path, mode: str) -> tuple[Path, ImageOOD] | None:
    """The image OOD score ``evaluate`` fitted for ``mode`` (None for the EHR-only model, which reads no image).

    Raises:
        InputError: an image model's file is missing or unusable.
    """
    if mode == "ehr":
        return None
    path = eval_dir / ood_file(mode)
    if not path.exists():
        raise InputError(f"{path}: not found (run `shipa evaluate diagnosis` first)")
    return path, ImageOOD.load(path)


def run(
    params: DiagnosisRegisterParams, processed: Path, model_root: Path, *, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Register the diagnosis model that ``evaluate`` reported in ``metrics.json`` (the fused one by default).

    Args:
        params: the ``register.diagnosis`` section.
        processed: ``data/processed/diagnosis`` (its ``summary.json`` describes the training data, its
            ``input_domain.json`` the images the model may be used on).
        model_root: ``models/diagnosis`` (``train/``, ``eval/``, ``metrics.json``; outputs go here too).
        tracking_uri: the MLflow store; None: ``MLFLOW_TRACKING_URI``, else ``<cwd>/mlflow.db``.
    """
    train_dir = model_root / "train"
    metrics = read_json(model_root / "metrics.json", "shipa evaluate diagnosis")
    features_path, calibration_path = train_dir / "features.json", model_root / "eval" / "calibration.json"
    features = read_json(features_path, "shipa train diagnosis")
    summary = read_json(processed / "summary.json", "shipa features diagnosis")
    read_json(calibration_path, "shipa evaluate diagnosis")
    mode = str(metrics.get("model", "fused"))
    meta = read_json(train_dir / mode / "model.json", "shipa train diagnosis")
    task = str(features["task"])
    scaler = Scaler.from_dict(features["scaler"])
    name = diagnosis_model_name(task)
    ingest_size = ingest_image_size(processed / "dataset.parquet") if mode != "ehr" else None
    domain = read_input_domain(processed)
    ood = read_image_ood(model_root / "eval", mode)

    def build(scratch: Path) -> Candidate:
        return Candidate(
            name=name,
            python_model=wrapper.DiagnosisPyfunc(),
            artifacts=wrapper.artifact_files(
                train_dir / mode,
                features_path,
                calibration_path,
                scratch,
                processed / INPUT_DOMAIN_FILE,
                ood[0] if ood else None,
            ),
            input_example=wrapper.input_example(scaler),
            signature=wrapper.signature(scaler.features),
            requirements=wrapper.REQUIREMENTS,
            metadata={
                "task": task,
                "mode": mode,
                "network": meta.get("network"),
                "image_size": meta.get("image_size"),
                **({"ingest_image_size": ingest_size} if ingest_size else {}),
                wrapper.METADATA_INPUT_DOMAIN: domain.to_dict(),
                **({wrapper.METADATA_IMAGE_OOD: ood_metadata(ood[1])} if ood else {}),
            },
            metrics=metrics,
            text=diagnosis_card_text(task, {**domain.describe(), **(ood_card_line(ood[1]) if ood else {})}),
            summary=summary,
            description=(
                f"{name}: {mode} model ({meta.get('network', '?')}, {meta.get('image_size', '?')} px); "
                f"{estimate(metrics, 'auroc', 'test AUROC')} on test data {metrics.get('test_data_md5', '?')}"
            ),
        )

    return register_candidate("register@diagnosis", params, params.gate, build, model_root, tracking_uri=tracking_uri)

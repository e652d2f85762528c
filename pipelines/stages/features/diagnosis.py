"""Stage ``features@diagnosis``: one row per imaging study under ``data/processed/diagnosis/``.

``shipa features diagnosis`` writes ``dataset.parquet`` (one row per imaging study: label, image path, EHR values
and flags, split), ``features.json`` (task, EHR columns, fitted scaler), ``splits.csv``, ``summary.json`` and
``input_domain.json`` (the DICOM headers the model may be used on, fitted on the train split's image headers: see
:mod:`pipelines.imaging.domain`; the register stage records it with the model, the service enforces it).
A ``split_file`` naming patients by their source ``Patient.id`` or IIN (``split_ids``) is pseudonymised with the
ingest key, which comes from the environment like ingest's (the demo key when unset).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import polars as pl
from pydicom.dataset import Dataset

from pipelines.config import DEMO_PSEUDONYM_KEY, DiagnosisFeaturesParams
from pipelines.errors import InputError
from pipelines.features import diagnosis as dx
from pipelines.features.splits import grouped_split, split_from_file
from pipelines.imaging.domain import INPUT_DOMAIN_FILE, InputDomain
from pipelines.io import atomic_dir, write_json

log = logging.getLogger(__name__)

# The diagnosis model card puts patients under 1 year out of scope (card_text.diagnosis_card_text): the input
# domain's age range starts there even when the training data holds younger patients.
INTENDED_MIN_AGE_YEARS = 1.0


def fit_input_domain(df: pl.DataFrame, tables: Path) -> InputDomain:
    """The input domain of the train split's images, from the de-identified headers ingest kept beside them.

    Ingest writes ``<sop>.json`` (the header without pixels) beside ``<sop>.npy``; ``images.parquet`` names both.
    Modalities are the observed ones (the dataset keeps only ``features.diagnosis.modalities``); the age range
    starts at :data:`INTENDED_MIN_AGE_YEARS`.

    Raises:
        InputError: a training image has no header file.
    """
    manifest = pl.read_parquet(tables / "images.parquet", columns=["image_path", "header_path"])
    header_of = dict(zip(manifest["image_path"].to_list(), manifest["header_path"].to_list(), strict=True))
    headers = []
    for image in df.filter(pl.col("split") == "train")["image_path"].to_list():
        path = Path(image)
        header = path.parent / header_of.get(path.name, path.with_suffix(".json").name)
        if not header.exists():
            raise InputError(f"{header}: the image header is missing (run `shipa ingest` again)")
        headers.append(Dataset.from_json(orjson.loads(header.read_bytes())))
    fitted = InputDomain.fit(headers)
    if fitted.age_years is None:
        return fitted
    low, high = fitted.age_years
    age = (max(low, INTENDED_MIN_AGE_YEARS), max(high, INTENDED_MIN_AGE_YEARS))
    return InputDomain.from_dict({**fitted.to_dict(), "age_years": age})


def task_of(params: DiagnosisFeaturesParams) -> dx.DiagnosisTask:
    """The library's task description from the params section."""
    return dx.DiagnosisTask(
        name=params.task,
        icd10_prefixes=params.icd10_prefixes,
        label_source=params.label_source,
        modalities=params.modalities,
        observations=dict(params.observations),
        lookback_hours=params.lookback_hours,
    )


def _summary(df: pl.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"studies": df.height, "patients": df["patient_id"].n_unique()}
    for split in ("train", "val", "test"):
        part = df.filter(pl.col("split") == split)
        positives = int(part["label"].sum())  # labels are 0/1, never null
        out[split] = {
            "studies": part.height,
            "patients": part["patient_id"].n_unique(),
            "positives": positives,
            "prevalence": positives / part.height if part.height else None,
        }
    started = df["started"].drop_nulls()
    out["date_range"] = [str(started.min())[:10], str(started.max())[:10]] if started.len() else None
    out["regions"] = sorted(r for r in df["region"].unique().to_list() if r)
    return out


def _split_of(params: DiagnosisFeaturesParams, df: pl.DataFrame, tables: Path, key: str | None) -> dict[str, str]:
    """Patient id -> split: from ``split_file`` when given, else a grouped, stratified, seeded split."""
    if params.split_file:
        patients = pl.read_parquet(tables / "patients.parquet", columns=["patient_id", "patient_pseudo_id"])
        key = DEMO_PSEUDONYM_KEY if key is None else key
        return split_from_file(Path(params.split_file), params.split_ids, key=key, patients=patients)
    return grouped_split(df["patient_id"], df["label"], val=params.val_share, test=params.test_share, seed=params.seed)


def run(params: DiagnosisFeaturesParams, interim: Path, out_dir: Path, *, key: str | None = None) -> dict[str, Any]:
    """Build the diagnosis dataset from ingest output.

    Args:
        params: the ``features.diagnosis`` section.
        interim: ingest output folder (``tables/`` and ``images/``).
        out_dir: ``data/processed/diagnosis``.
        key: the pseudonymisation key ingest used (SHIPA_PSEUDONYM_KEY), needed only for a ``split_file`` of
            source ids or IINs; None means the demo key.

    Returns:
        The summary written to ``summary.json``.
    """
    task = task_of(params)
    df = dx.build_dataset(interim / "tables", interim / "images", task)
    split_of = _split_of(params, df, interim / "tables", key)
    # Studies of patients under the intended minimum age are outside the model's intended use (the model card):
    # left out of training and evaluation alike, after the split, so every other study keeps its split.
    too_young = pl.col("age_years").is_not_null() & (pl.col("age_years") < INTENDED_MIN_AGE_YEARS)
    outside = df.filter(too_young).height
    df, scaler = dx.finalize(df.filter(~too_young), split_of, task)
    value_cols, flag_cols = dx.ehr_columns(task.raw_features)
    summary = {**_summary(df), "studies_outside_intended_use": outside}
    domain = fit_input_domain(df, interim / "tables")
    with atomic_dir(out_dir) as tmp:
        df.write_parquet(tmp / "dataset.parquet")
        (df.select("patient_id", "split").unique().sort("patient_id").write_csv(tmp / "splits.csv"))
        write_json(
            tmp / "features.json",
            {
                "task": task.name,
                "icd10_prefixes": list(task.icd10_prefixes),
                "label_source": task.label_source,
                "observations": dict(task.observations),
                "lookback_hours": task.lookback_hours,
                "raw_features": task.raw_features,
                "ehr_columns": value_cols + flag_cols,
                "scaler": scaler.to_dict(),
            },
        )
        write_json(tmp / "summary.json", summary)
        (tmp / INPUT_DOMAIN_FILE).write_text(domain.to_json(), encoding="utf-8")
    log.info(
        "diagnosis features: %d studies of %d patients; test prevalence %.3f",
        summary["studies"],
        summary["patients"],
        summary["test"]["prevalence"] or 0.0,
    )
    return summary

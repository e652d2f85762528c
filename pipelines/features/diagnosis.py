"""The diagnosis dataset: one row per imaging study with its label, image path, EHR features and split.

Everything here is driven by a :class:`DiagnosisTask` (built from params), so a second task on the same data needs
only a params change. The EHR vector is computed by :func:`ehr_matrix` from raw values and a fitted
:class:`Scaler`; the inference service calls the same function, so training and serving cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from pipelines.errors import InputError

log = logging.getLogger(__name__)

LabelSource = Literal["condition", "report", "either"]
AGE_EDGES = (18, 40, 60, 75)


@dataclass(frozen=True)
class DiagnosisTask:
    """What to predict and from what.

    Attributes:
        name: task name (part of the registered model name, e.g. ``pneumonia``).
        icd10_prefixes: a study is positive when a matching code is on a Condition of the imaging encounter
            (``label_source=condition``), on the study's DiagnosticReport conclusionCode (``report``) or either.
        label_source: where the label comes from.
        modalities: DICOM modalities of the studies to use.
        observations: EHR feature name -> LOINC code; the value nearest before the study within the lookback.
        lookback_hours: how far before the study an observation may be.
    """

    name: str
    icd10_prefixes: tuple[str, ...]
    label_source: LabelSource
    modalities: tuple[str, ...]
    observations: Mapping[str, str]
    lookback_hours: float

    @property
    def raw_features(self) -> list[str]:
        """Raw feature names, in vector order: age, sex, then each observation."""
        return ["age", "sex_male", *self.observations]


@dataclass
class Scaler:
    """Missing-value fill and standardisation fitted on the training split only (saved in features.json)."""

    features: list[str]
    median: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scaler:
        """Inverse of :meth:`to_dict`."""
        return cls(
            features=list(data["features"]),
            median=dict(data["median"]),
            mean=dict(data["mean"]),
            std=dict(data["std"]),
        )


def ehr_columns(features: Sequence[str]) -> tuple[list[str], list[str]]:
    """Names of the scaled value columns and the missingness-flag columns for raw feature names."""
    return [f"ehr_{f}" for f in features], [f"miss_{f}" for f in features]


def _number(value: object) -> float:
    """A polars aggregate of a Float64 column (typed as any Python literal) as a float; 0.0 when null."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def fit_scaler(train: pl.DataFrame, features: Sequence[str]) -> Scaler:
    """Fit median fill and mean/std scaling on training rows (columns ``raw_<feature>``)."""
    scaler = Scaler(features=list(features))
    for f in features:
        col = train[f"raw_{f}"].drop_nulls().cast(pl.Float64)
        median = _number(col.median()) if col.len() else 0.0
        filled = train[f"raw_{f}"].cast(pl.Float64).fill_null(median)
        std = _number(filled.std()) if filled.len() > 1 else 0.0
        scaler.median[f] = median
        scaler.mean[f] = _number(filled.mean()) if filled.len() else 0.0
        scaler.std[f] = std if std > 1e-9 else 1.0
    return scaler


def ehr_matrix(raw: Mapping[str, Sequence[float | None]], scaler: Scaler) -> tuple[np.ndarray, np.ndarray]:
    """Scaled EHR values and missingness flags, shape ``(n, n_features)`` each, float32.

    Args:
        raw: feature name -> raw values (None or NaN = missing).
        scaler: the fitted scaler.
    """
    values, flags = [], []
    for f in scaler.features:
        v = np.asarray([np.nan if x is None else x for x in raw[f]], dtype=np.float64)
        miss = np.isnan(v)
        v = np.where(miss, scaler.median[f], v)
        values.append((v - scaler.mean[f]) / scaler.std[f])
        flags.append(miss.astype(np.float64))
    return np.stack(values, 1).astype(np.float32), np.stack(flags, 1).astype(np.float32)


def age_band(age: pl.Expr) -> pl.Expr:
    """Age band label (0-17, 18-39, 40-59, 60-74, 75+) for subgroup reporting."""
    labels = ["0-17", "18-39", "40-59", "60-74", "75+"]
    return age.cut(list(AGE_EDGES), labels=labels, left_closed=True).cast(pl.String).fill_null("unknown")


def _read(tables: Path, name: str) -> pl.DataFrame:
    path = tables / f"{name}.parquet"
    if not path.exists():
        raise InputError(f"{path}: ingest table not found (run `shipa ingest` first)")
    return pl.read_parquet(path)


def _has_prefix(col: pl.Expr, prefixes: Sequence[str]) -> pl.Expr:
    expr = pl.lit(False)
    for p in prefixes:
        expr = expr | col.str.starts_with(p)
    return expr.fill_null(False)


def _labels(studies: pl.DataFrame, tables: Path, task: DiagnosisTask) -> pl.DataFrame:
    """Add ``label`` (0/1) to studies from conditions of their encounter and/or their report conclusions."""
    by_condition = pl.DataFrame({"imaging_study_id": []}, schema={"imaging_study_id": pl.String})
    by_report = by_condition
    if task.label_source in ("condition", "either"):
        cond = _read(tables, "conditions").filter(_has_prefix(pl.col("icd10_code"), task.icd10_prefixes))
        by_condition = studies.join(cond.select("encounter_id").unique(), on="encounter_id").select("imaging_study_id")
    if task.label_source in ("report", "either"):
        rep = _read(tables, "diagnostic_reports").explode("conclusion_codes")
        rep = rep.filter(_has_prefix(pl.col("conclusion_codes"), task.icd10_prefixes))
        by_report = rep.select("imaging_study_id").drop_nulls()
    positive = pl.concat([by_condition, by_report]).unique()
    return studies.with_columns(
        pl.col("imaging_study_id").is_in(positive["imaging_study_id"].implode()).cast(pl.Int8).alias("label")
    )


def nearest_before(studies: pl.DataFrame, obs: pl.DataFrame, name: str, loinc: str, hours: float) -> pl.DataFrame:
    """Join the value of one LOINC code nearest before each study (within ``hours``) as ``raw_<name>``."""
    o = (
        obs.filter(pl.col("loinc_code") == loinc)
        .select("patient_id", pl.col("effective").alias("obs_time"), pl.col("value").alias(f"raw_{name}"))
        .sort("obs_time")
    )
    return (
        studies.sort("started")
        .join_asof(
            o,
            left_on="started",
            right_on="obs_time",
            by="patient_id",
            strategy="backward",
            check_sortedness=False,  # sorted by time within each patient; polars cannot verify that per group
            tolerance=dt.timedelta(hours=hours),
        )
        .drop("obs_time")
    )


def build_dataset(tables: Path, images_root: Path, task: DiagnosisTask) -> pl.DataFrame:
    """Build the unsplit, unscaled dataset: one row per imaging study that has an ingested image.

    Args:
        tables: folder of ingest tables (``imaging_studies.parquet``, ``images.parquet``, ...).
        images_root: folder the image manifest's ``image_path`` is relative to.
        task: the diagnosis task.

    Returns:
        Columns ``study_id, patient_id, image_path, label, started, sex, age_years, age_band, region,
        facility_id`` and ``raw_<feature>`` for each raw feature, sorted by ``study_id``.
    """
    studies = _read(tables, "imaging_studies").filter(pl.col("modality").is_in(list(task.modalities)))
    images = (
        _read(tables, "images")
        .filter(pl.col("study_uid").is_not_null())
        .sort("image_path")
        .group_by("study_uid", maintain_order=True)
        .first()
        .select("study_uid", "image_path")
    )
    linked = studies.join(images, on="study_uid", how="inner")
    unlinked = studies.height - linked.height
    if unlinked:
        log.warning("%d of %d imaging studies have no ingested image and are left out", unlinked, studies.height)
    if linked.height == 0:
        raise InputError(f"{tables}: no imaging study of modality {list(task.modalities)} has an ingested image")
    linked = linked.with_columns((pl.lit(str(images_root)) + "/" + pl.col("image_path")).alias("image_path"))
    linked = _labels(linked, tables, task)

    patients = _read(tables, "patients").select("patient_id", "sex", "region")
    encounters = _read(tables, "encounters").select("encounter_id", pl.col("organization_id").alias("facility_id"))
    df = linked.join(patients, on="patient_id", how="left").join(encounters, on="encounter_id", how="left")
    df = df.with_columns(
        pl.col("age_at_event").cast(pl.Float64).alias("age_years"),
        pl.col("age_at_event").cast(pl.Float64).alias("raw_age"),
        pl.when(pl.col("sex") == "male")
        .then(1.0)
        .when(pl.col("sex") == "female")
        .then(0.0)
        .otherwise(None)
        .alias("raw_sex_male"),
    ).with_columns(age_band(pl.col("age_years")).alias("age_band"))

    obs = _read(tables, "observations").filter(pl.col("value").is_not_null())
    for name, loinc in task.observations.items():
        df = nearest_before(df, obs, name, loinc, task.lookback_hours)

    keep = [
        "study_id",
        "patient_id",
        "image_path",
        "label",
        "started",
        "sex",
        "age_years",
        "age_band",
        "region",
        "facility_id",
        *[f"raw_{f}" for f in task.raw_features],
    ]
    return df.rename({"imaging_study_id": "study_id"}).select(keep).sort("study_id")


def finalize(df: pl.DataFrame, split_of: Mapping[str, str], task: DiagnosisTask) -> tuple[pl.DataFrame, Scaler]:
    """Attach splits, fit the scaler on train and add ``ehr_*``/``miss_*`` columns.

    Raises:
        InputError: a patient has no split, or the training split has no positive or no negative study.
    """
    missing = df.filter(~pl.col("patient_id").is_in(list(split_of)))
    if missing.height:
        raise InputError(f"patient {missing['patient_id'][0]} has no split in the split file")
    df = df.with_columns(pl.col("patient_id").replace_strict(split_of).alias("split"))
    train = df.filter(pl.col("split") == "train")
    if train["label"].n_unique() < 2:
        raise InputError(f"task '{task.name}': the training split needs positive and negative studies")
    scaler = fit_scaler(train, task.raw_features)
    values, flags = ehr_matrix({f: df[f"raw_{f}"].to_list() for f in task.raw_features}, scaler)
    value_cols, flag_cols = ehr_columns(task.raw_features)
    df = df.with_columns(
        *[pl.Series(c, values[:, i]) for i, c in enumerate(value_cols)],
        *[pl.Series(c, flags[:, i]) for i, c in enumerate(flag_cols)],
    )
    return df, scaler

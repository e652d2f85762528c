from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.config import DiagnosisFeaturesParams
from pipelines.errors import InputError
from pipelines.features.diagnosis import Scaler, ehr_matrix
from pipelines.features.splits import grouped_split
from pipelines.stages.features.diagnosis import INTENDED_MIN_AGE_YEARS
from pipelines.stages.features.diagnosis import run as run_diagnosis


def _dataset(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "dataset.parquet")


def test_dataset_rows_labels_and_no_patient_in_two_splits(tiny_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "diagnosis"
    summary = run_diagnosis(DiagnosisFeaturesParams(), tiny_cohort / "data" / "interim", out)
    df = _dataset(out)
    studies = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "imaging_studies.parquet")
    # Every study, but those of patients under the intended minimum age (left out after the split, counted).
    young = studies.filter(pl.col("age_at_event") < INTENDED_MIN_AGE_YEARS)
    assert summary["studies_outside_intended_use"] == young.height
    assert df.height == studies.height - young.height == summary["studies"]
    studies = studies.filter(~pl.col("imaging_study_id").is_in(young["imaging_study_id"].to_list()))
    # The label is the pneumonia Condition on the imaging encounter.
    cond = pl.read_parquet(tiny_cohort / "data" / "interim" / "tables" / "conditions.parquet")
    pneumonia_encounters = set(cond.filter(pl.col("icd10_code").str.starts_with("J1"))["encounter_id"])
    expected = {r["imaging_study_id"]: int(r["encounter_id"] in pneumonia_encounters) for r in studies.to_dicts()}
    assert dict(zip(df["study_id"], df["label"], strict=True)) == expected
    splits_per_patient = df.group_by("patient_id").agg(pl.col("split").n_unique())
    assert splits_per_patient["split"].max() == 1
    assert set(df["split"]) == {"train", "val", "test"}
    # EHR features: scaled on train only (train mean ~0), missingness flagged, image paths exist.
    train = df.filter(pl.col("split") == "train")
    assert abs(float(train["ehr_temperature"].mean())) < 1e-5
    assert set(df["miss_hba1c"].unique()) <= {0.0, 1.0}
    assert all(Path(p).exists() for p in df["image_path"])
    features = json.loads((out / "features.json").read_text())
    assert features["ehr_columns"][:2] == ["ehr_age", "ehr_sex_male"]
    assert features["ehr_columns"][-1] == "miss_hba1c"


def test_same_seed_same_split_and_split_file_is_honoured(tiny_cohort: Path, tmp_path: Path) -> None:
    interim = tiny_cohort / "data" / "interim"
    run_diagnosis(DiagnosisFeaturesParams(seed=3), interim, tmp_path / "a")
    run_diagnosis(DiagnosisFeaturesParams(seed=3), interim, tmp_path / "b")
    assert (tmp_path / "a" / "splits.csv").read_bytes() == (tmp_path / "b" / "splits.csv").read_bytes()
    patients = _dataset(tmp_path / "a")["patient_id"].unique().sort().to_list()
    # A hospital's own split: every third patient to test, the next to val, the rest to train.
    mapping = {p: ("test", "val", "train")[i % 3] for i, p in enumerate(patients)}
    split_file = tmp_path / "split.csv"
    pl.DataFrame({"patient_id": list(mapping), "split": list(mapping.values())}).write_csv(split_file)
    run_diagnosis(DiagnosisFeaturesParams(split_file=str(split_file)), interim, tmp_path / "c")
    df = _dataset(tmp_path / "c")
    assert dict(zip(df["patient_id"], df["split"], strict=True)) == {p: mapping[p] for p in df["patient_id"]}


def test_split_file_with_bad_split_name_is_refused(tiny_cohort: Path, tmp_path: Path) -> None:
    split_file = tmp_path / "split.csv"
    split_file.write_text("patient_id,split\nabc,holdout\n")
    with pytest.raises(InputError, match=r"split.csv: patient abc: split 'holdout' is not one of"):
        run_diagnosis(DiagnosisFeaturesParams(split_file=str(split_file)), tiny_cohort / "data" / "interim", tmp_path)


def test_another_task_is_a_params_change(tiny_cohort: Path, tmp_path: Path) -> None:
    params = DiagnosisFeaturesParams(task="bronchitis", icd10_prefixes=("J20",), observations={"crp": "1988-5"})
    run_diagnosis(params, tiny_cohort / "data" / "interim", tmp_path / "bronchitis")
    df = _dataset(tmp_path / "bronchitis")
    assert 0 < int(df["label"].sum()) < df.height
    assert [c for c in df.columns if c.startswith("ehr_")] == ["ehr_age", "ehr_sex_male", "ehr_crp"]


def test_grouped_split_is_stratified() -> None:
    ids = pl.Series([f"p{i}" for i in range(1000)])
    labels = pl.Series([int(i % 4 == 0) for i in range(1000)])
    split = grouped_split(ids, labels, val=0.15, test=0.2, seed=1)
    test_ids = [i for i, s in split.items() if s == "test"]
    assert len(test_ids) == 200
    assert sum(int(i[1:]) % 4 == 0 for i in test_ids) == 50  # prevalence preserved exactly


def test_ehr_matrix_fills_scales_and_flags() -> None:
    scaler = Scaler(features=["a"], median={"a": 2.0}, mean={"a": 1.0}, std={"a": 2.0})
    values, flags = ehr_matrix({"a": [3.0, None, float("nan")]}, scaler)
    np.testing.assert_allclose(values[:, 0], [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(flags[:, 0], [0.0, 1.0, 1.0])

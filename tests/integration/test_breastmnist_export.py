"""A hospital's own export through ingest and diagnosis features with params only (issue 14).

../shared/data/breastmnist-export is BreastMNIST (780 real breast ultrasound studies, 28 px) written as a hospital
would: its IINs under its own identifier system (``http://hl7.org/fhir/sid/kz-iin``), Modality US, and its own
``splits.csv`` (the official MedMNIST split) naming patients by FHIR ``Patient.id`` and IIN. Nothing is copied or
edited: ingest learns the IIN system from ``ingest.iin_systems`` and features maps the split with ``split_ids``.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from pipelines.config import DiagnosisFeaturesParams, IngestParams
from pipelines.errors import InputError
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.stages import ingest
from pipelines.stages.features import diagnosis

pytestmark = pytest.mark.slow

EXPORT = Path(__file__).resolve().parents[3] / "shared" / "data" / "breastmnist-export"
IIN_SYSTEM = "http://hl7.org/fhir/sid/kz-iin"
KEY = "breastmnist-test-key-0123456789"
# The export's README: MedMNIST label 0 = malignant, 210 images, each with an ICD-10 C50.9 Condition.
MALIGNANT = 210


def _export() -> Path:
    if not EXPORT.is_dir():
        pytest.skip(f"BreastMNIST hospital export not found at {EXPORT}")
    return EXPORT


def _official_split(export: Path) -> list[dict[str, str]]:
    with (export / "splits.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _params(export: Path, split_ids: str) -> DiagnosisFeaturesParams:
    return DiagnosisFeaturesParams.model_validate(
        {
            "task": "breast-malignancy",
            "icd10_prefixes": ["C50"],
            "modalities": ["US"],
            "split_file": str(export / "splits.csv"),
            "split_ids": split_ids,
        }
    )


@pytest.fixture(scope="module")
def interim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The export ingested once with its IIN system named (and nothing else changed)."""
    out = tmp_path_factory.mktemp("breastmnist") / "interim"
    report = ingest.run(IngestParams(iin_systems=(IIN_SYSTEM,), workers=1), _export(), out, key=KEY, progress=False)
    assert report["quarantined_total"] == 0
    return out


def test_every_patient_gets_the_iin_pseudonym_of_its_dicom_images(interim: Path) -> None:
    tables = interim / "tables"
    patients = pl.read_parquet(tables / "patients.parquet")
    assert patients.height == 780
    assert patients["patient_pseudo_id"].null_count() == 0
    studies = pl.read_parquet(tables / "imaging_studies.parquet").select("imaging_study_id", "patient_id")
    images = pl.read_parquet(tables / "images.parquet").select("imaging_study_id", "patient_pseudo_id")
    assert images.height == 780
    assert images["imaging_study_id"].null_count() == images["patient_pseudo_id"].null_count() == 0
    joined = images.join(studies, on="imaging_study_id").join(
        patients.select("patient_id", pl.col("patient_pseudo_id").alias("fhir_pseudo_id")), on="patient_id"
    )
    assert joined.height == images.height
    assert (joined["patient_pseudo_id"] == joined["fhir_pseudo_id"]).all()
    # And that pseudonym is the ingest key's pseudonym of the export's IIN.
    p = Pseudonymizer(KEY)
    official = {p.id("Patient", r["patient_id"]): p.id("iin", r["patient_iin"]) for r in _official_split(_export())}
    assert dict(zip(patients["patient_id"], patients["patient_pseudo_id"], strict=True)) == official


def test_official_split_honoured_by_source_id_and_by_iin(interim: Path, tmp_path: Path) -> None:
    export = _export()
    official = _official_split(export)
    p = Pseudonymizer(KEY)
    expected = {p.id("Patient", r["patient_id"]): r["split"] for r in official}
    counts = Counter(r["split"] for r in official)
    assert counts == {"train": 546, "val": 78, "test": 156}  # the README's official split

    datasets = {}
    for split_ids in ("source_id", "iin"):
        out = tmp_path / split_ids
        summary = diagnosis.run(_params(export, split_ids), interim, out, key=KEY)
        assert {s: summary[s]["studies"] for s in ("train", "val", "test")} == counts
        assert sum(summary[s]["positives"] for s in ("train", "val", "test")) == MALIGNANT
        df = pl.read_parquet(out / "dataset.parquet")
        assert df.height == 780
        assert dict(zip(df["patient_id"], df["split"], strict=True)) == expected
        datasets[split_ids] = df.select("study_id", "patient_id", "split", "label")
    assert datasets["source_id"].equals(datasets["iin"])
    assert (tmp_path / "source_id" / "splits.csv").read_bytes() == (tmp_path / "iin" / "splits.csv").read_bytes()


def test_a_wrong_key_is_refused_without_naming_a_patient(interim: Path, tmp_path: Path) -> None:
    export = _export()
    with pytest.raises(InputError) as err:
        diagnosis.run(_params(export, "iin"), interim, tmp_path / "out", key="not-the-ingest-key-0123")
    text = str(err.value)
    assert text == (
        f"none of the 780 patients of {export / 'splits.csv'} is in the ingested tables: "
        "is SHIPA_PSEUDONYM_KEY the key ingest used?"
    )
    assert not (tmp_path / "out").exists()


def test_without_iin_systems_the_patients_have_no_iin_pseudonym(tmp_path: Path) -> None:
    """The issue's failure: with Shipa's own IIN system only, the export's IINs are not recognised as IINs."""
    export = _export()
    out = tmp_path / "interim"
    ingest.run(IngestParams(workers=1), export, out, key=KEY, progress=False)
    patients = pl.read_parquet(out / "tables" / "patients.parquet")
    assert patients.height == 780
    assert patients["patient_pseudo_id"].null_count() == patients.height
    with pytest.raises(InputError, match=r"no ingested patient has an IIN pseudonym: does ingest\.iin_systems"):
        diagnosis.run(_params(export, "iin"), out, tmp_path / "out", key=KEY)

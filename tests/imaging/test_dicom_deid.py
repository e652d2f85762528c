"""DICOM header de-identification: nothing identifying survives, pseudonyms match the FHIR side."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import orjson
import pydicom
import pytest
from pydicom.dataset import Dataset

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.imaging.deid import age_at_study, deidentify_dataset, header_json
from pipelines.synth.dicom import RadiographSpec, write_radiograph

IIN = "850315300012"
KEY = "test-key-0123456789abcdef"
SECRETS = (IIN, "Abenov", "Nurlan", "19850315", "Astana City Hospital", "ACC777", "House", "Abai Ave", "+77011234567")


def _original(tmp_path: Path) -> Dataset:
    path = tmp_path / "cxr.dcm"
    write_radiograph(
        path,
        RadiographSpec(
            size=32,
            pneumonia=True,
            severity=0.4,
            iin=IIN,
            patient_name="Nurlan Abenov",
            birth_date=dt.date(1985, 3, 15),
            sex="male",
            study_uid="1.2.826.0.1.3680043.10.3",
            series_uid="1.2.826.0.1.3680043.10.3.1",
            sop_uid="1.2.826.0.1.3680043.10.3.1.1",
            study_date=dt.date(2024, 5, 2),
            accession="ACC777",
            institution="Astana City Hospital 1",
        ),
        rng=np.random.default_rng(9),
    )
    ds = pydicom.dcmread(path)
    # What real archives add on top.
    ds.ReferringPhysicianName = "House^Gregory"
    ds.OtherPatientIDs = IIN
    ds.PatientAddress = "Abai Ave 1, Astana"
    ds.PatientTelephoneNumbers = "+77011234567"
    ds.InstitutionAddress = "Abai Ave 2, Astana"
    ds.StudyDescription = "Chest for Nurlan Abenov"
    ds.ImageComments = f"patient {IIN}"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.10.3.9"
    del ds.PatientAge
    ds.private_block(0x0011, "ACME", create=True).add_new(0x01, "LO", IIN)
    return ds


def test_nothing_identifying_survives(tmp_path: Path) -> None:
    original = _original(tmp_path)
    clean = deidentify_dataset(original, Pseudonymizer(KEY))
    text = orjson.dumps(clean.to_json_dict()).decode() + str(clean) + str(clean.file_meta)
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} survived de-identification"
    for uid in ("1.2.826.0.1.3680043.10.3", "1.2.826.0.1.3680043.10.3.1.1", "1.2.826.0.1.3680043.10.3.9"):
        assert uid not in text
    assert not any(elem.tag.is_private for elem in clean)
    assert clean.PatientIdentityRemoved == "YES"
    assert clean.PatientName == "" and clean.PatientBirthDate == "" and clean.AccessionNumber == ""
    assert "InstitutionName" not in clean and "OtherPatientIDs" not in clean and "PatientAddress" not in clean


def test_pseudonyms_and_kept_facts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _original(tmp_path)
    pseudonymizer = Pseudonymizer(KEY)
    clean = deidentify_dataset(original, pseudonymizer)
    # The result is a valid DICOM file: it saves and reads back under strict VR validation.
    clean.save_as(tmp_path / "clean.dcm", enforce_file_format=True)
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    reread = pydicom.dcmread(tmp_path / "clean.dcm")
    assert [e.value for e in reread.iterall()]
    assert reread.PatientID == pseudonymizer.id("iin", IIN)
    assert clean.PatientID == pseudonymizer.id("iin", IIN)
    assert clean.StudyInstanceUID == pseudonymizer.uid("1.2.826.0.1.3680043.10.3")
    assert clean.SeriesInstanceUID == pseudonymizer.uid("1.2.826.0.1.3680043.10.3.1")
    assert clean.SOPInstanceUID == pseudonymizer.uid("1.2.826.0.1.3680043.10.3.1.1")
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID
    assert clean.FrameOfReferenceUID == pseudonymizer.uid("1.2.826.0.1.3680043.10.3.9")
    assert clean.PatientAge == "039Y"  # derived before the birth date was dropped
    assert clean.PatientSex == "M" and clean.StudyDate == "20240502" and clean.BodyPartExamined == "CHEST"
    # Pixels stay usable: the same array as the original.
    np.testing.assert_array_equal(clean.pixel_array, original.pixel_array)
    # The input is not changed.
    assert original.PatientID == IIN and original.InstitutionName == "Astana City Hospital 1"
    # Another key gives other pseudonyms.
    assert deidentify_dataset(original, Pseudonymizer("another-key-0123456789")).PatientID != clean.PatientID


def test_header_json_has_no_pixels(tmp_path: Path) -> None:
    clean = deidentify_dataset(_original(tmp_path), Pseudonymizer(KEY), keep_pixels=False)
    assert "PixelData" not in clean
    header = header_json(deidentify_dataset(_original(tmp_path), Pseudonymizer(KEY)))
    assert "7FE00010" not in header
    assert header["00100020"]["Value"] == [Pseudonymizer(KEY).id("iin", IIN)]


def test_age_at_study() -> None:
    ds = Dataset()
    ds.StudyDate = "20240314"
    ds.PatientBirthDate = "19850315"
    assert age_at_study(ds) == 38
    ds.StudyDate = "20240315"
    assert age_at_study(ds) == 39
    del ds.PatientBirthDate
    ds.PatientAge = "018M"
    assert age_at_study(ds) == 1
    ds.PatientAge = ""
    assert age_at_study(ds) is None

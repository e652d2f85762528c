"""Synthetic radiographs: real DICOM with the right tags, deterministic bytes, defects, and a pneumonia signal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from pipelines.imaging.dicom import normalize_pixels, read_dicom
from pipelines.synth.dicom import RadiographSpec, write_defective_dicom, write_radiograph

IIN = "850315300012"


def _args(i: int = 0, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "size": 64,
        "pneumonia": False,
        "severity": 0.0,
        "iin": IIN,
        "patient_name": "Nurlan Serikuly Abenov",
        "birth_date": dt.date(1985, 3, 15),
        "sex": "male",
        "study_uid": f"1.2.826.0.1.3680043.10.1.{i}",
        "series_uid": f"1.2.826.0.1.3680043.10.1.{i}.1",
        "sop_uid": f"1.2.826.0.1.3680043.10.1.{i}.1.1",
        "study_date": dt.date(2024, 5, 2),
        "accession": f"ACC{i:06d}",
        "institution": "Astana City Hospital 1",
    }
    args.update(overrides)
    return args


def test_radiograph_has_the_tags_and_16_bit_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.dcm"
    write_radiograph(path, RadiographSpec(**_args(size=96, pneumonia=True, severity=0.7)), rng=np.random.default_rng(1))
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.RAISE)
    ds = pydicom.dcmread(path)
    assert [elem.value for elem in ds.iterall()]  # every value converts under strict VR validation

    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID in (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation)
    assert ds.Modality == ("CR" if ds.SOPClassUID == ComputedRadiographyImageStorage else "DX")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == "1.2.826.0.1.3680043.10.1.0.1.1"
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.10.1.0"
    assert ds.SeriesInstanceUID == "1.2.826.0.1.3680043.10.1.0.1"
    assert ds.PatientID == IIN
    assert str(ds.PatientName) == "Abenov^Nurlan^Serikuly"
    assert ds.PatientBirthDate == "19850315"
    assert ds.PatientSex == "M"
    assert ds.StudyDate == "20240502"
    assert ds.AccessionNumber == "ACC000000"
    assert ds.InstitutionName == "Astana City Hospital 1"
    assert ds.BodyPartExamined == "CHEST"
    assert ds.ViewPosition in ("PA", "AP")
    assert ds.PhotometricInterpretation in ("MONOCHROME1", "MONOCHROME2")
    assert ds.BitsAllocated == 16
    assert 12 <= ds.BitsStored <= 16
    assert ds.HighBit == ds.BitsStored - 1
    assert ds.PixelRepresentation == 0
    assert len(ds.PixelSpacing) == 2 and 0.5 < float(ds.PixelSpacing[0]) < 10
    assert float(ds.WindowWidth) > 1
    pixels = ds.pixel_array
    assert pixels.dtype == np.uint16
    assert pixels.shape == (96, 96)
    assert int(pixels.max()) < 2**ds.BitsStored
    assert len(np.unique(pixels)) > 200  # a real picture, not a flat field


def test_same_rng_state_gives_identical_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.dcm", tmp_path / "b.dcm", tmp_path / "c.dcm"
    write_radiograph(a, RadiographSpec(**_args(pneumonia=True, severity=0.5)), rng=np.random.default_rng(42))
    write_radiograph(b, RadiographSpec(**_args(pneumonia=True, severity=0.5)), rng=np.random.default_rng(42))
    write_radiograph(c, RadiographSpec(**_args(pneumonia=True, severity=0.5)), rng=np.random.default_rng(43))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_encodings_vary_like_a_real_archive(tmp_path: Path) -> None:
    seen: dict[str, set[object]] = {"modality": set(), "photometric": set(), "bits": set(), "rescale": set()}
    for seed in range(40):
        path = tmp_path / f"{seed}.dcm"
        write_radiograph(path, RadiographSpec(**_args(seed, size=32)), rng=np.random.default_rng(seed))
        ds = pydicom.dcmread(path)
        seen["modality"].add(ds.Modality)
        seen["photometric"].add(ds.PhotometricInterpretation)
        seen["bits"].add(int(ds.BitsStored))
        seen["rescale"].add((float(ds.RescaleSlope), float(ds.RescaleIntercept)) != (1.0, 0.0))
    assert seen["modality"] == {"CR", "DX"}
    assert seen["photometric"] == {"MONOCHROME1", "MONOCHROME2"}
    assert len(seen["bits"]) >= 2
    assert seen["rescale"] == {True, False}


def test_monochrome1_files_read_back_with_dark_lungs(tmp_path: Path) -> None:
    kinds = set()
    for seed in range(30):
        path = tmp_path / f"{seed}.dcm"
        write_radiograph(path, RadiographSpec(**_args(seed, size=64)), rng=np.random.default_rng(seed))
        ds = read_dicom(path)
        kinds.add(ds.PhotometricInterpretation)
        image = normalize_pixels(ds)
        lung = image[16:35, 10:24].mean()
        spine = image[13:32, 30:34].mean()
        assert lung < spine - 0.1, f"seed {seed} ({ds.PhotometricInterpretation}): lungs not darker than the spine"
    assert "MONOCHROME1" in kinds


def test_defective_files(tmp_path: Path) -> None:
    whole = tmp_path / "whole.dcm"
    write_radiograph(whole, RadiographSpec(**_args()), rng=np.random.default_rng(5))
    paths = {}
    for defect in ("dicom_unreadable", "dicom_not_dicom", "dicom_no_pixels"):
        paths[defect] = tmp_path / f"{defect}.dcm"
        write_defective_dicom(paths[defect], defect, RadiographSpec(**_args()), rng=np.random.default_rng(5))

    truncated = paths["dicom_unreadable"].read_bytes()
    assert len(truncated) < len(whole.read_bytes())
    assert truncated[128:132] == b"DICM"
    assert whole.read_bytes().startswith(truncated)  # a real file, cut

    assert paths["dicom_not_dicom"].read_bytes()[128:132] != b"DICM"
    with pytest.raises(pydicom.errors.InvalidDicomError):
        pydicom.dcmread(paths["dicom_not_dicom"])

    no_pixels = pydicom.dcmread(paths["dicom_no_pixels"])
    assert "PixelData" not in no_pixels
    assert no_pixels.PatientID == IIN and no_pixels.Rows == 64


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sex"):
        write_radiograph(tmp_path / "a.dcm", RadiographSpec(**_args(sex="unknown")), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity"):
        write_radiograph(tmp_path / "a.dcm", RadiographSpec(**_args(severity=1.5)), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="defect"):
        write_defective_dicom(tmp_path / "a.dcm", "dicom_bad", RadiographSpec(**_args()), rng=np.random.default_rng(0))


def test_pneumonia_shows_in_the_lung_fields_but_not_trivially(tmp_path: Path) -> None:
    """Lung-field intensity statistics separate pneumonia from normal somewhat: signal, but far from perfect."""
    rng = np.random.default_rng(2025)
    features, labels = [], []
    for i in range(240):
        pneumonia = bool(i % 2)
        path = tmp_path / f"{i}.dcm"
        write_radiograph(
            path,
            RadiographSpec(
                **_args(
                    i,
                    pneumonia=pneumonia,
                    severity=float(rng.uniform()) if pneumonia else 0.0,
                    sex=("male", "female")[i % 4 // 2],
                )
            ),
            rng=rng,
        )
        image = normalize_pixels(read_dicom(path))
        image = (image - image.mean()) / image.std()  # exposure differs between films
        right, left = image[13:42, 8:27], image[13:42, 37:56]
        features.append([right.mean(), left.mean(), right.std(), left.std()])
        labels.append(pneumonia)
    scores = cross_val_predict(LogisticRegression(), np.array(features), np.array(labels), cv=5, method="predict_proba")
    auroc = roc_auc_score(labels, scores[:, 1])
    assert 0.6 <= auroc <= 0.97, auroc

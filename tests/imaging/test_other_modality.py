"""Images of other modalities for the image OOD score: decoding any kind of DICOM to greyscale, telling one image
in two encodings apart from two images, and writing foreign pixels under a chest-radiograph header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.imaging.dicom import normalize_pixels, read_dicom, resample
from pipelines.imaging.other_modality import (
    ContentIndex,
    as_chest_radiograph,
    calibration_images,
    grey_image,
    pydicom_test_files,
    read_folder,
    same_content,
    thumbnail,
)


def _pydicom_data() -> Path:
    data_store = pytest.importorskip("data_store", reason="the pydicom-data package (a dev dependency) is absent")
    return Path(data_store.__file__).parent / "data"


def _read(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path)


def test_grey_image_reads_every_kind_of_pixel_data() -> None:
    folder = pydicom_test_files()
    mr = grey_image(_read(folder / "MR_small.dcm"))
    assert mr.shape == (64, 64) and mr.dtype == np.float32 and (mr.min(), mr.max()) == (0.0, 1.0)
    palette = grey_image(_read(folder / "examples_palette.dcm"))  # PALETTE COLOR ultrasound
    assert palette.shape == (350, 800) and palette.std() > 0.05
    rgb = _read(folder / "SC_rgb.dcm") if (folder / "SC_rgb.dcm").exists() else _read(folder / "SC_rgb_rle.dcm")
    grey = grey_image(rgb)
    expected = rgb.pixel_array.astype(np.float64).mean(axis=2)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(grey, expected, atol=1e-6)
    cine = _read(folder / "examples_ybr_color.dcm")  # 30 frames of YBR_FULL_422
    assert not np.array_equal(grey_image(cine, 0), grey_image(cine, 29))
    with pytest.raises(ValueError, match="not a usable 2-D frame"):
        grey_image(_read(folder / "SC_rgb_small_odd.dcm"))  # 3 x 3


def test_monochrome1_is_inverted_like_ingest_does(tmp_path: Path) -> None:
    ds = _read(pydicom_test_files() / "CT_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    np.testing.assert_allclose(grey_image(_read(path)), normalize_pixels(read_dicom(path)), atol=1e-6)


def test_one_slice_in_two_encodings_is_one_image_and_two_slices_are_two() -> None:
    data = _pydicom_data()
    lossy = thumbnail(grey_image(_read(pydicom_test_files() / "693_J2KI.dcm")))  # JPEG 2000 lossy
    lossless = thumbnail(grey_image(_read(data / "693_UNCI.dcm")))  # the same CT slice, uncompressed
    assert same_content(lossy, lossless)
    mr = thumbnail(grey_image(_read(pydicom_test_files() / "MR_small.dcm")))
    assert not same_content(lossless, mr)
    emri = _read(data / "emri_small.dcm")  # neighbouring MR slices are different images
    assert not same_content(thumbnail(grey_image(emri, 0)), thumbnail(grey_image(emri, 5)))


def test_the_report_set_leaves_out_every_calibration_image() -> None:
    calibration = calibration_images()
    assert len(calibration) >= 20
    assert {"CT", "MR", "NM", "US", "SEG"} <= {c.modality for c in calibration}
    seen = ContentIndex()
    for image in calibration:
        assert seen.add_if_new(image.pixels)  # the calibration set itself holds each content once
    report = list(read_folder(_pydicom_data(), seen=seen))
    names = {r.name for r in report}
    assert "693_UNCI.dcm" not in names and "693_J2KR.dcm" not in names  # the calibration CT slice, re-encoded
    assert "MR_small.dcm" not in names
    assert {"emri_small.dcm#0", "emri_small.dcm#9", "eCT_Supplemental.dcm#0"} <= names
    for image in report:
        thumb = thumbnail(image.pixels)
        assert not any(same_content(thumb, thumbnail(c.pixels)) for c in calibration), image.name
    only_us = list(read_folder(_pydicom_data(), keep=lambda ds: ds.get("Modality") == "US"))
    assert only_us and {i.modality for i in only_us} == {"US"}


def test_foreign_pixels_under_a_radiograph_header(tiny_cohort: Path) -> None:
    template_path = next(
        p for p in sorted((tiny_cohort / "data" / "raw" / "dicom").rglob("*.dcm")) if "PixelData" in _read(p)
    )
    template = read_dicom(template_path)
    ct = grey_image(_read(pydicom_test_files() / "CT_small.dcm"))
    data = as_chest_radiograph(template, ct)
    disguised = read_dicom(data)
    for keyword in ("SOPClassUID", "Modality", "BodyPartExamined", "ViewPosition", "PatientAge", "Rows", "Columns"):
        assert disguised.get(keyword) == template.get(keyword), keyword
    pixels = normalize_pixels(disguised)
    assert pixels.shape == (int(template.Rows), int(template.Columns))
    rows, columns = pixels.shape
    side = max(rows, columns)
    top, left = (side - rows) // 2, (side - columns) // 2
    expected = resample(ct, side)[top : top + rows, left : left + columns]
    assert np.corrcoef(pixels.ravel(), expected.ravel())[0, 1] > 0.99

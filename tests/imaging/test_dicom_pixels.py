"""Reading DICOM and normalising pixels: LUTs, MONOCHROME1, multi-frame, resampling and error reasons."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from pipelines.imaging.dicom import load_image, normalize_pixels, read_dicom, resample
from pipelines.imaging.errors import DicomError
from pipelines.synth.dicom import RadiographSpec, write_radiograph

Builder = Callable[..., Dataset]
KNOWN = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)


def _linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR window mapped to [0, 1]."""
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_monochrome2_without_window_uses_min_max(make_dataset: Builder) -> None:
    out = normalize_pixels(make_dataset(KNOWN))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)


def test_monochrome1_is_inverted(make_dataset: Builder) -> None:
    out = normalize_pixels(make_dataset(KNOWN, photometric="MONOCHROME1"))
    np.testing.assert_allclose(out, [[1.0, 0.75], [0.5, 0.0]], atol=1e-6)


def test_monochrome1_is_inverted_after_windowing(make_dataset: Builder) -> None:
    plain = normalize_pixels(make_dataset(KNOWN, window=("1500", "2001")))
    inverted = normalize_pixels(make_dataset(KNOWN, photometric="MONOCHROME1", window=("1500", "2001")))
    expected = _linear_window(KNOWN.astype(float), 1500, 2001)
    np.testing.assert_allclose(plain, expected, atol=1e-6)
    np.testing.assert_allclose(inverted, 1.0 - expected, atol=1e-6)


def test_rescale_slope_and_intercept_are_applied_before_the_window(make_dataset: Builder) -> None:
    stored = np.array([[0, 100], [200, 300]], dtype=np.uint16)
    ds = make_dataset(stored, rescale=("2", "-100"), window=("200", "601"))
    modality = stored * 2.0 - 100.0  # -100, 100, 300, 500
    expected = _linear_window(modality, 200, 601)
    np.testing.assert_allclose(normalize_pixels(ds), expected, atol=1e-6)
    # The same window on the stored values would give a different picture.
    assert not np.allclose(_linear_window(stored.astype(float), 200, 601), expected, atol=0.05)


def test_multi_frame_takes_the_requested_frame(make_dataset: Builder, to_bytes: Callable[[Dataset], bytes]) -> None:
    frames = [np.full((4, 5), value, dtype=np.uint16) for value in (0, 1000, 3000)]
    ds = read_dicom(to_bytes(make_dataset(frames, window=("2048", "4096"))))
    for index, value in enumerate((0, 1000, 3000)):
        out = normalize_pixels(ds, frame=index)
        assert out.shape == (4, 5)
        np.testing.assert_allclose(out, _linear_window(np.full((4, 5), float(value)), 2048, 4096), atol=1e-6)
    np.testing.assert_array_equal(normalize_pixels(ds), normalize_pixels(ds, frame=0))
    with pytest.raises(DicomError) as err:
        normalize_pixels(ds, frame=3)
    assert err.value.reason == "dicom_unsupported"


def test_colour_and_unknown_transfer_syntax_are_unsupported(make_dataset: Builder) -> None:
    colour = make_dataset(KNOWN)
    colour.PhotometricInterpretation = "RGB"
    with pytest.raises(DicomError) as err:
        normalize_pixels(colour)
    assert err.value.reason == "dicom_unsupported"

    odd = make_dataset(KNOWN)
    odd.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.10.99"
    with pytest.raises(DicomError) as err:
        normalize_pixels(odd)
    assert err.value.reason == "dicom_unsupported"


def test_no_pixel_data(make_dataset: Builder) -> None:
    ds = make_dataset(KNOWN)
    del ds.PixelData
    with pytest.raises(DicomError) as err:
        normalize_pixels(ds)
    assert err.value.reason == "dicom_no_pixels"


def _reason(data: bytes) -> str:
    with pytest.raises(DicomError) as err:
        read_dicom(data)
    assert "850315300012" not in str(err.value)
    return err.value.reason


def test_read_classifies_broken_files(make_dataset: Builder, to_bytes: Callable[[Dataset], bytes]) -> None:
    data = to_bytes(make_dataset(np.arange(64, dtype=np.uint16).reshape(8, 8)))
    patient_id_tag = data.index(b"\x10\x00\x20\x00LO")
    assert _reason(data[: patient_id_tag + 3]) == "dicom_unreadable"  # cut inside an element header
    assert _reason(data[: patient_id_tag + 10]) == "dicom_unreadable"  # cut inside a header value
    assert _reason(data[:-7]) == "dicom_unreadable"  # cut inside the pixel data
    assert _reason(data[:100]) == "dicom_not_dicom"  # too short to hold the preamble
    assert _reason(b"") == "dicom_unreadable"
    assert _reason(b"Study export failed.\n" * 20) == "dicom_not_dicom"
    assert _reason(b"\x89PNG\r\n\x1a\n" + bytes(300)) == "dicom_not_dicom"


def test_read_accepts_paths_bytes_and_preambleless_datasets(
    tmp_path: Path, make_dataset: Builder, to_bytes: Callable[[Dataset], bytes]
) -> None:
    ds = make_dataset(KNOWN)
    path = tmp_path / "x.dcm"
    path.write_bytes(to_bytes(ds))
    np.testing.assert_array_equal(normalize_pixels(read_dicom(path)), normalize_pixels(read_dicom(path.read_bytes())))

    raw = DicomBytesIO()
    raw.is_little_endian, raw.is_implicit_VR = True, True
    write_dataset(raw, ds)
    bare = read_dicom(raw.getvalue())
    assert bare.SOPInstanceUID == ds.SOPInstanceUID
    np.testing.assert_allclose(normalize_pixels(bare), [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)


def test_resample_pads_to_keep_the_aspect_ratio() -> None:
    wide = np.ones((60, 100), dtype=np.float32)
    out = resample(wide, 50)
    assert out.shape == (50, 50) and out.dtype == np.float32
    np.testing.assert_allclose(out[25, :], 1.0, atol=1e-6)  # the middle row crosses the image
    np.testing.assert_allclose(out[0, :], 0.0, atol=1e-6)  # padding above
    np.testing.assert_allclose(out[-1, :], 0.0, atol=1e-6)  # and below
    np.testing.assert_allclose(out[:, 25], out[:, 10], atol=1e-6)


def test_resample_antialiases_when_shrinking_and_keeps_range_when_growing() -> None:
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float32)
    np.testing.assert_allclose(resample(checker, 32)[1:-1, 1:-1], 0.5, atol=1e-5)  # edges: truncated kernel
    small = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    grown = resample(small, 8)
    assert grown.shape == (8, 8)
    assert grown.min() >= 0.0 and grown.max() <= 1.0
    np.testing.assert_allclose(grown, grown.T, atol=1e-6)
    np.testing.assert_array_equal(resample(small, 2), small)
    with pytest.raises(ValueError):
        resample(np.zeros((2, 2, 2), dtype=np.float32), 4)


def test_load_image_of_a_synthetic_radiograph(tmp_path: Path) -> None:
    path = tmp_path / "cxr.dcm"
    write_radiograph(
        path,
        RadiographSpec(
            size=96,
            pneumonia=False,
            severity=0.0,
            iin="850315300012",
            patient_name="Nurlan Abenov",
            birth_date=dt.date(1985, 3, 15),
            sex="male",
            study_uid="1.2.3",
            series_uid="1.2.3.1",
            sop_uid="1.2.3.1.1",
            study_date=dt.date(2024, 5, 2),
            accession="A1",
            institution="Clinic",
        ),
        rng=np.random.default_rng(3),
    )
    image = load_image(path, 32)
    assert image.shape == (32, 32) and image.dtype == np.float32
    assert 0.0 <= image.min() < 0.3 and 0.5 < image.max() <= 1.0


def test_empty_window_falls_back_to_min_max_and_bad_window_is_unsupported(make_dataset: Builder) -> None:
    ds = make_dataset(KNOWN)
    ds.WindowCenter, ds.WindowWidth = "", ""
    np.testing.assert_allclose(normalize_pixels(ds), [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)
    with pytest.raises(DicomError) as err:
        normalize_pixels(make_dataset(KNOWN, window=("100", "0.5")))  # LINEAR needs a width of at least 1
    assert err.value.reason == "dicom_unsupported"

"""Bounded decoding: deflate bombs, frames that lie about their size and enormous headers are refused before they
are decoded, with a reason and a detail naming the attribute and the limit; honest files still decode."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.imaging.dicom import (
    MAX_INFLATED_BYTES,
    DecodeLimits,
    check_decode_limits,
    normalize_pixels,
    read_dicom,
)
from pipelines.imaging.errors import DicomError
from pipelines.imaging.ingest import ingest_dicom

from . import hostile

MiB = 2**20


def _refusal(data: bytes, **limits: int) -> DicomError:
    with pytest.raises(DicomError) as err:
        normalize_pixels(read_dicom(data), limits=DecodeLimits(**limits))
    return err.value


def _vm_hwm_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


# --- deflate ----------------------------------------------------------------------------------------------------


def test_a_small_deflate_bomb_is_a_real_deflated_file() -> None:
    """The bomb builder writes a valid deflated dataset: at 1 MiB it is read whole, its private OB element
    inflated to exactly 1 MiB, and its pixels decode."""
    data = hostile.deflate_bomb(inflated=MiB)
    ds = read_dicom(data)
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert len(ds[0x00091000].value) == MiB and not any(ds[0x00091000].value)
    assert normalize_pixels(ds).shape == (64, 64)
    with pytest.raises(DicomError) as err:
        read_dicom(data, max_inflated_bytes=512 * 1024)
    assert err.value.reason == "dicom_too_large"
    assert err.value.detail.startswith("the deflated dataset inflates to more than 512 KiB")


def test_a_deflate_bomb_of_400_mib_is_refused_before_parsing_and_costs_about_the_limit() -> None:
    data = hostile.deflate_bomb(inflated=400 * MiB)  # 419 MB inflated
    assert len(data) < 1 * MiB
    before, start = _vm_hwm_mb(), time.perf_counter()
    with pytest.raises(DicomError) as err:
        read_dicom(data)
    elapsed, rise = time.perf_counter() - start, _vm_hwm_mb() - before
    assert err.value.reason == "dicom_too_large"
    assert err.value.detail == (
        "the deflated dataset inflates to more than 64 MiB, the inflated size limit (MAX_INFLATED_BYTES); "
        "refused before parsing"
    )
    assert rise < MAX_INFLATED_BYTES / 1e6 + 50, rise
    assert elapsed < 5, elapsed


def test_deflated_file_reads_as_its_plain_twin() -> None:
    plain = hostile.radiograph(48, 40)
    deflated = hostile.radiograph(48, 40)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    a, b = read_dicom(hostile.to_bytes(plain)), read_dicom(hostile.to_bytes(deflated))
    assert b.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert [(e.tag, e.VR, e.value) for e in a] == [(e.tag, e.VR, e.value) for e in b]
    np.testing.assert_array_equal(normalize_pixels(a), normalize_pixels(b))


def test_truncated_or_corrupt_deflate_stream_is_unreadable() -> None:
    ds = hostile.radiograph()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    data = hostile.to_bytes(ds)
    half = len(data) // 2  # past the ~200-byte file meta: inside the deflate stream
    with pytest.raises(DicomError) as err:
        read_dicom(data[:-200])
    assert (err.value.reason, err.value.detail) == (
        "dicom_unreadable",
        "the deflated dataset ends early (truncated file)",
    )
    corrupt = bytearray(data)
    corrupt[half:] = b"\xff" * (len(data) - half)
    with pytest.raises(DicomError) as err:
        read_dicom(bytes(corrupt))
    assert err.value.reason == "dicom_unreadable" and "deflated dataset" in err.value.detail


# --- declared size ----------------------------------------------------------------------------------------------


def test_an_enormous_declared_image_is_refused_before_decoding() -> None:
    error = _refusal(hostile.enormous_header())
    assert error.reason == "dicom_too_large"
    assert error.detail == (
        "declared 65535 x 65535 x 1 frames x 1 samples x 16 bits (Rows x Columns x NumberOfFrames x "
        "SamplesPerPixel x BitsAllocated) = 8.0 GiB exceeds the 256 MiB decode budget (MAX_DECODED_BYTES)"
    )


def test_frame_count_and_frame_size_limits_name_their_attribute() -> None:
    ds = hostile.radiograph(8, 8)
    ds.NumberOfFrames = 300
    ds.PixelData = bytes(8 * 8 * 2 * 300)
    with pytest.raises(DicomError) as err:
        check_decode_limits(ds)
    assert err.value.detail == "declared NumberOfFrames 300 exceeds the limit of 256 (MAX_FRAMES)"

    wide = hostile.radiograph(64, 64, bits=8)
    wide.Rows, wide.Columns = 6000, 6000  # 34 MiB at 8 bits: within the budget, but not one radiograph
    with pytest.raises(DicomError) as err:
        check_decode_limits(wide)
    assert err.value.reason == "dicom_too_large"
    assert err.value.detail == (
        "declared Rows x Columns 6000 x 6000 = 36000000 pixels per frame exceeds the limit of 26214400 "
        "(MAX_FRAME_PIXELS)"
    )
    error = _refusal(hostile.to_bytes(hostile.radiograph(64, 64)), max_decoded_bytes=4096)
    assert error.reason == "dicom_too_large" and "= 8 KiB exceeds the 4 KiB decode budget" in error.detail


def test_native_pixel_data_of_another_length_than_declared_is_refused() -> None:
    ds = hostile.radiograph(64, 64)
    ds.PixelData = ds.PixelData[: 32 * 32 * 2]
    error = _refusal(hostile.to_bytes(ds))
    assert error.reason == "dicom_unreadable"
    assert error.detail == (
        "native PixelData holds 2048 bytes but Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated "
        "declare 8192"
    )
    odd = hostile.radiograph(3, 3, bits=8)  # 9 bytes, written with one pad byte
    assert normalize_pixels(read_dicom(hostile.to_bytes(odd))).shape == (3, 3)


def test_missing_or_zero_size_is_unreadable() -> None:
    ds = hostile.radiograph()
    del ds.Rows
    assert _refusal(hostile.to_bytes(ds)).detail == "Rows is missing or not a number"
    ds = hostile.radiograph()
    ds.Columns = 0
    assert _refusal(hostile.to_bytes(ds)).detail == "Rows, Columns or SamplesPerPixel is zero"


# --- frames that lie --------------------------------------------------------------------------------------------


def test_honest_rle_decodes_like_its_native_twin() -> None:
    native = hostile.radiograph(40, 56)
    rle = hostile.radiograph(40, 56)
    rle.compress(RLELossless, encoding_plugin="pydicom")
    np.testing.assert_array_equal(
        normalize_pixels(read_dicom(hostile.to_bytes(rle))), normalize_pixels(read_dicom(hostile.to_bytes(native)))
    )


def test_rle_frame_larger_than_its_header_is_refused_before_decoding() -> None:
    error = _refusal(hostile.rle_lying(declared=(64, 64), encoded=(256, 256)))
    assert error.reason == "dicom_unreadable"
    assert error.detail == (
        "RLE segment 0 expands to more than 4160 bytes but Rows x Columns declare 64 x 64 = 4096; "
        "refused before decoding"
    )


def test_rle_frame_smaller_than_its_header_is_refused_before_decoding() -> None:
    error = _refusal(hostile.rle_lying(declared=(512, 256), encoded=(256, 256)))
    assert error.reason == "dicom_unreadable"
    assert error.detail.startswith("RLE segment 0 expands to 65536 bytes but Rows x Columns declare 512 x 256")


def test_an_rle_bomb_is_refused_without_expanding_it() -> None:
    """8 MiB of RLE runs that pydicom would expand to 2 x 256 MiB segments behind a 64 x 64 header."""
    data = hostile.rle_bomb(declared=(64, 64), encoded=(16384, 16384))
    before, start = _vm_hwm_mb(), time.perf_counter()
    error = _refusal(data)
    elapsed, rise = time.perf_counter() - start, _vm_hwm_mb() - before
    assert error.reason == "dicom_unreadable" and error.detail.startswith("RLE segment 0 expands to more than")
    assert rise < 50 and elapsed < 2, (rise, elapsed)


def test_jpeg_frame_of_another_size_than_its_header_is_refused_before_decoding() -> None:
    error = _refusal(hostile.jpeg_lying(declared=(64, 64), encoded=(4096, 4096)))
    assert error.reason == "dicom_unreadable"
    assert error.detail == (
        "the JPEG frame header (SOF) states 4096 x 4096 x 1 samples but Rows x Columns x SamplesPerPixel declare "
        "64 x 64 x 1; refused before decoding"
    )
    honest = read_dicom(hostile.jpeg_lying(declared=(64, 48), encoded=(64, 48)))
    assert normalize_pixels(honest).shape == (64, 48)


def test_jpeg_without_a_frame_header_is_unreadable() -> None:
    ds = read_dicom(hostile.jpeg_lying(declared=(64, 64), encoded=(64, 64)))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xda\x00\x02" + bytes(32)])
    with pytest.raises(DicomError) as err:
        normalize_pixels(ds)
    assert err.value.detail == "the JPEG frame header (SOF) cannot be found in frame 0"


@pytest.mark.skipif(not features.check("jpg_2000"), reason="Pillow was built without OpenJPEG")
def test_jpeg_2000_frame_of_another_size_than_its_header_is_refused() -> None:
    def j2k(rows: int, columns: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("L", (columns, rows), 0).save(buffer, format="JPEG2000", irreversible=False, no_jp2=True)
        return buffer.getvalue()

    ds = hostile.radiograph(64, 64, bits=8, pixels=False)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([j2k(64, 64)])
    ds["PixelData"].VR = "OB"
    assert normalize_pixels(read_dicom(hostile.to_bytes(ds))).shape == (64, 64)
    ds.PixelData = encapsulate([j2k(2048, 1024)])
    error = _refusal(hostile.to_bytes(ds))
    assert error.reason == "dicom_unreadable"
    assert error.detail.startswith("the JPEG 2000 image header (SIZ) states 2048 x 1024 x 1 samples")


# --- ingest -----------------------------------------------------------------------------------------------------


def test_ingest_quarantines_hostile_files_with_their_reason(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    files = {
        "bomb.dcm": hostile.deflate_bomb(inflated=80 * MiB),
        "rle.dcm": hostile.rle_lying(),
        "jpeg.dcm": hostile.jpeg_lying(),
        "huge.dcm": hostile.enormous_header(),
    }
    paths = []
    for name, data in files.items():
        path = root / "dicom" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
    result = ingest_dicom(
        paths,
        root=root,
        out_images=tmp_path / "images",
        pseudonymizer=Pseudonymizer("test-key-0123456789abcdef"),
        size=32,
        workers=1,
        progress=False,
    )
    assert not result.records
    assert {q.source: q.reason for q in result.quarantine} == {
        "dicom/bomb.dcm": "dicom_too_large",
        "dicom/rle.dcm": "dicom_unreadable",
        "dicom/jpeg.dcm": "dicom_unreadable",
        "dicom/huge.dcm": "dicom_too_large",
    }


# --- real files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["image_dfl.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "rtdose_rle.dcm", "MR_small.dcm", "CT_small.dcm"]
)
def test_real_deflated_rle_and_jpeg_2000_files_decode_as_pydicom_decodes_them(name: str) -> None:
    """pydicom's own test files (installed with pydicom, MIT licence) pass every check and decode to the same
    first frame as pydicom's ``pixel_array``."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, read=False)
    if path is None:
        pytest.skip(f"{name} is not installed with this pydicom")
    ds = read_dicom(Path(str(path)))
    reference = pydicom.dcmread(str(path))
    assert ds.file_meta.TransferSyntaxUID == reference.file_meta.TransferSyntaxUID
    expected = reference.pixel_array
    expected = expected[0] if int(reference.get("NumberOfFrames", 1) or 1) > 1 else expected
    rows, columns = check_decode_limits(ds)
    assert (rows, columns) == expected.shape
    out = normalize_pixels(ds)
    assert out.shape == expected.shape
    # Same pixels: the normalised image is a monotonic map of pydicom's values.
    order = np.argsort(expected, axis=None, kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(np.float64)) >= -1e-6)


def test_native_pixel_data_with_excess_padding_is_refused() -> None:
    """pydicom's MR_small_padded.dcm carries 128 bytes after its 64 x 64 x 16-bit pixels: not what the header
    declares, so refused (pydicom itself decodes it with a warning)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small_padded.dcm", read=False)
    if path is None:
        pytest.skip("MR_small_padded.dcm is not installed with this pydicom")
    error = _refusal(Path(str(path)).read_bytes())
    assert error.reason == "dicom_unreadable"
    assert error.detail.startswith("native PixelData holds 8320 bytes")

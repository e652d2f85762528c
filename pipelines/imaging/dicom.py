"""Read DICOM files and turn their pixels into normalised arrays.

Training, ingest and the inference service all use these functions, so an image is preprocessed the same way
everywhere:

1. :func:`read_dicom` parses a file (or bytes) and classifies failures with a quarantine reason
   (:class:`~pipelines.imaging.errors.DicomError`).
2. :func:`normalize_pixels` decodes one frame (the first by default: a chest radiograph has one, and the other frames
   of a multi-frame object are repeats or tomosynthesis slices that the models do not use), applies the modality
   LUT (rescale slope/intercept) and the VOI LUT or window, inverts MONOCHROME1 so that bright always means dense,
   and returns float32 in [0, 1].
3. :func:`resample` pads the image to a square (centred, with 0 = black, the colour of air) so the anatomy keeps its
   aspect ratio, then resizes it with an antialiased bilinear filter.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipelines.imaging.errors import DicomError, DicomReason

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_UNDEFINED_LENGTH = 0xFFFFFFFF


def read_dicom(source: Path | bytes) -> Dataset:
    """Parse a DICOM file completely and check that it is whole.

    Args:
        source: a file path or the file's bytes (e.g. an upload to the service).

    Returns:
        The dataset, with ``file_meta`` carrying a transfer syntax.

    Raises:
        DicomError: ``dicom_not_dicom`` when the content is not DICOM, ``dicom_unreadable`` when it is DICOM but
            truncated or corrupt.
    """
    data = source.read_bytes() if isinstance(source, Path) else bytes(source)
    if not data:
        raise DicomError("dicom_unreadable", "the file is empty")
    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    try:
        # pydicom warns with header values in the text; those must not reach logs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), force=not has_preamble)
    except Exception as exc:  # parsing arbitrary bytes can fail in many ways; all mean the same here
        if has_preamble:
            raise DicomError("dicom_unreadable", f"the DICOM file cannot be parsed ({type(exc).__name__})") from None
        raise DicomError("dicom_not_dicom", "no DICOM preamble and the content does not parse as DICOM") from None
    if not has_preamble and not _looks_like_dataset(ds):
        raise DicomError("dicom_not_dicom", "no DICOM preamble and no SOP Class UID: not a DICOM file")
    problem = _truncation(ds, len(data))
    if problem:
        raise DicomError("dicom_unreadable", problem)
    if "TransferSyntaxUID" not in ds.file_meta:
        # Preamble-less files without file meta: pydicom has already guessed the encoding while parsing.
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if ds.original_encoding[0] else _explicit(ds)
    return ds


def _explicit(ds: Dataset) -> UID:
    return ExplicitVRLittleEndian if ds.original_encoding[1] else ExplicitVRBigEndian


def _looks_like_dataset(ds: Dataset) -> bool:
    try:
        sop_class = str(ds.get("SOPClassUID", "") or "")
    except Exception:  # garbage bytes decoded as a UID
        return False
    return sop_class.startswith("1.2.840.10008.")


def _truncation(ds: Dataset, size: int) -> str | None:
    """Why the top-level dataset is incomplete, or None.

    pydicom stops quietly at the end of a file, so a file cut inside an element header loses its tail without an
    error, and one cut inside a value keeps a short value; both show in the raw elements before conversion.
    """
    last_tell, last_end = -1, None
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts every element; keys() does not
        elem = ds.get_item(tag)
        if not isinstance(elem, RawDataElement):
            continue
        if elem.length != _UNDEFINED_LENGTH and elem.value is not None and len(elem.value) < elem.length:
            return "the file ends inside a data element value (truncated file)"
        if elem.value_tell > last_tell:
            last_tell = elem.value_tell
            last_end = None if elem.length == _UNDEFINED_LENGTH else elem.value_tell + elem.length
    if last_end is not None and 0 < size - last_end < 8:
        return "the file ends inside a data element header (truncated file)"
    return None


def normalize_pixels(ds: Dataset, frame: int = 0) -> np.ndarray:
    """Pixels of one frame as a float32 image in [0, 1] where bright means dense (MONOCHROME2 sense).

    Order: modality LUT (RescaleSlope/RescaleIntercept or a Modality LUT Sequence), then the first VOI LUT or
    window (WindowCenter/WindowWidth) scaled by its output range; without any VOI the image's own min..max is
    used. MONOCHROME1 is inverted last.

    Args:
        ds: a dataset from :func:`read_dicom` (or any with pixel data and a transfer syntax).
        frame: which frame of a multi-frame object (0-based; single-frame objects only have frame 0).

    Raises:
        DicomError: ``dicom_no_pixels``, ``dicom_unsupported`` (colour, unknown photometric, compressed without a
            decoder, frame out of range) or ``dicom_unreadable`` (pixel data that does not match the header).
    """
    if "PixelData" not in ds:
        kind = "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else "no pixel data"
        reason: DicomReason = "dicom_unsupported" if kind == "float pixel data" else "dicom_no_pixels"
        raise DicomError(reason, f"the dataset has {kind}")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _MONOCHROME:
        raise DicomError("dicom_unsupported", f"photometric interpretation '{photometric}' is not greyscale")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomError("dicom_unsupported", "more than one sample per pixel")
    frames = number_of_frames(ds)
    if not 0 <= frame < frames:
        raise DicomError("dicom_unsupported", f"frame {frame} requested but the object has {frames}")

    arr = _decode_frame(ds, frame)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = apply_modality_lut(arr, ds)
            low, high = _voi_output_range(ds)
            if low is not None:
                values = apply_voi_lut(values, ds, index=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError) as exc:
        raise DicomError(
            "dicom_unsupported", f"the modality or VOI LUT cannot be applied ({type(exc).__name__})"
        ) from None
    values = np.asarray(values, dtype=np.float64)
    if low is None or high is None:
        low, high = float(values.min()), float(values.max())
    span = high - low
    if span <= 0:
        out = np.zeros(values.shape, dtype=np.float32)
    else:
        out = ((values - low) / span).astype(np.float32)
        np.clip(out, 0.0, 1.0, out=out)
    if photometric == "MONOCHROME1":
        out = np.float32(1.0) - out
    return out


def number_of_frames(ds: Dataset) -> int:
    """NumberOfFrames, or 1 when absent or empty."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _decode_frame(ds: Dataset, frame: int) -> np.ndarray:
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is None:
        raise DicomError("dicom_unsupported", "no transfer syntax in the file meta information")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DicomError("dicom_unsupported", f"no pixel decoder for transfer syntax {tsyntax}") from None
    if not decoder.is_available:
        raise DicomError("dicom_unsupported", f"no installed pixel decoder for transfer syntax {tsyntax}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr, _ = decoder.as_array(ds, index=frame)
    except (NotImplementedError, RuntimeError) as exc:
        raise DicomError("dicom_unsupported", f"pixel data cannot be decoded ({type(exc).__name__})") from None
    except Exception as exc:  # inconsistent headers surface as ValueError, KeyError, AttributeError...
        raise DicomError(
            "dicom_unreadable", f"pixel data does not match the image header ({type(exc).__name__})"
        ) from None
    return arr


def _voi_output_range(ds: Dataset) -> tuple[float | None, float | None]:
    """The output range of the VOI transform pydicom will apply, or (None, None) when there is none.

    Mirrors pydicom's rules: a VOI LUT maps to 0..2**bits-1; a window maps to the stored range after rescale.
    """
    lut = ds.get("VOILUTSequence")
    if lut:
        bits = int(lut[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if not (_has_value(ds, "WindowCenter") and _has_value(ds, "WindowWidth")):
        return None, None
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    modality_lut = ds.get("ModalityLUTSequence")
    if modality_lut:
        low, high = 0.0, float(2 ** int(modality_lut[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits_stored - 1)
    else:
        low, high = float(-(2 ** (bits_stored - 1))), float(2 ** (bits_stored - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _has_value(ds: Dataset, keyword: str) -> bool:
    value = ds.get(keyword)
    if value is None or value == "":
        return False
    return not (isinstance(value, MultiValue) and len(value) == 0)


def resample(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad a 2-D image to a centred square with zeros, then resize it to ``size x size``.

    The filter is bilinear, widened by the scale factor when shrinking (like PIL's antialiased resize), written as
    two small matrix products so that it needs nothing but numpy.

    Args:
        arr: a 2-D image, typically from :func:`normalize_pixels`.
        size: side of the output.

    Returns:
        float32 array of shape (size, size).
    """
    if arr.ndim != 2:
        raise ValueError(f"resample expects a 2-D image, got shape {arr.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    rows, cols = arr.shape
    side = max(rows, cols)
    square = np.zeros((side, side), dtype=np.float32)
    top, left = (side - rows) // 2, (side - cols) // 2
    square[top : top + rows, left : left + cols] = arr
    if side == size:
        return square
    weights = _resize_weights(side, size)
    out: np.ndarray = (weights @ square @ weights.T).astype(np.float32)
    return out


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5
    distance = np.abs(centres[:, None] - np.arange(n_in, dtype=np.float64)[None, :]) / support
    weights = np.maximum(0.0, 1.0 - distance)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def load_image(source: Path | bytes, size: int, frame: int = 0) -> np.ndarray:
    """Read a DICOM file and return its normalised, resampled image (float32, ``size x size``, [0, 1]).

    Raises:
        DicomError: as :func:`read_dicom` and :func:`normalize_pixels`.
    """
    return resample(normalize_pixels(read_dicom(source), frame), size)


def parse_da(value: Any) -> dt.date | None:
    """A DICOM DA value (``YYYYMMDD``) as a date, or None when empty or invalid."""
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None

"""Images of other modalities, seen as a chest-radiograph model would see them, to set and test the image OOD score.

The image out-of-distribution score (:mod:`pipelines.evaluation.ood`) must refuse a study whose pixels are not
a chest radiograph even when its header says they are. Its threshold is chosen with images of other modalities,
and its catches are reported on *other* such images. Both sets are real DICOM files from public packages:

- **calibration** (threshold): the test files bundled inside the ``pydicom`` package itself
  (``pydicom/data/test_files``: CT, MR, NM, ultrasound, secondary captures), installed wherever Shipa is;
- **report** (catches): any other folder of DICOM files, e.g. the ``pydicom-data`` package's files or a hospital's
  own non-chest studies; images whose content equals a calibration image (the same slice in another transfer
  syntax) are left out (:class:`ContentIndex`), so a catch is never counted on an image that set the threshold.

:func:`grey_image` turns any decodable DICOM (colour, palette, YBR, multi-frame) into the greyscale [0, 1] image the
ingest chain makes of a radiograph, and :func:`as_chest_radiograph` writes it under a real chest-radiograph header,
which is how a lying header reaches the service.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pipelines.imaging.dicom import resample

# Frames smaller than this are test fixtures of codecs (3 x 3, 45 x 10), not images of anything.
MIN_SIDE = 16
# Thumbnails compared by same_content: 32 px, equal when their correlation is over 0.99. Measured on pydicom's
# files: lossy and lossless copies of one CT slice 0.9997, neighbouring cine frames 0.995; neighbouring MR slices
# 0.94 and different images under 0.2 (correlation, unlike a difference, ignores a lossy copy's shifted range).
_THUMB_SIDE = 32
_SAME_CONTENT = 0.99
# Frames read from one multi-frame file: enough to see a cine loop's variety, not 120 near-copies.
MAX_FRAMES = 16


@dataclass(frozen=True)
class OtherImage:
    """One greyscale image of another modality: its file name, modality and the [0, 1] pixels."""

    name: str
    modality: str
    pixels: np.ndarray


def grey_image(ds: Dataset, frame: int = 0) -> np.ndarray:
    """One frame of any decodable DICOM as a greyscale float32 image in [0, 1] (bright = high values).

    Colour (RGB, YBR, palette) is averaged over its RGB channels; MONOCHROME1 is inverted; the image is scaled by
    its own min and max. Meant for trusted reference files: it does not apply the service's decoding limits.

    Raises:
        ValueError: the frame is not 2-D after conversion, or smaller than :data:`MIN_SIDE`.
        Exception: whatever pydicom raises for pixel data it cannot decode.
    """
    from pydicom.pixels.processing import apply_color_lut
    from pydicom.pixels.utils import pixel_array

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pydicom 3 returns YBR_FULL(_422) and JPEG 2000's YBR_ICT/RCT already converted to RGB (as_rgb).
        array = pixel_array(ds, index=frame) if frame_count(ds) > 1 else ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "")).strip()
        if photometric == "PALETTE COLOR":
            array = apply_color_lut(array, ds)
    values = np.asarray(array, dtype=np.float64)
    if values.ndim == 3:
        values = values.mean(axis=2)
    if values.ndim != 2 or min(values.shape) < MIN_SIDE:
        raise ValueError(f"not a usable 2-D frame: shape {values.shape}")
    if photometric == "MONOCHROME1":
        values = values.max() - values
    low, high = float(values.min()), float(values.max())
    out = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return out.astype(np.float32)


def frame_count(ds: Dataset) -> int:
    """NumberOfFrames, 1 when absent or unreadable."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        return 1


def thumbnail(image: np.ndarray) -> np.ndarray:
    """A small, centred, unit-norm copy of an image's content, compared by :func:`same_content`."""
    thumb = resample(np.asarray(image, dtype=np.float64), _THUMB_SIDE).ravel().astype(np.float64)
    thumb -= thumb.mean()
    norm = float(np.linalg.norm(thumb))
    return thumb / norm if norm > 0 else thumb


def same_content(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two thumbnails show the same picture (one slice in two encodings, or a near-still cine frame)."""
    return float(a @ b) > _SAME_CONTENT


class ContentIndex:
    """Thumbnails of the images seen so far, to leave out an image whose content was already used."""

    def __init__(self) -> None:
        self._thumbs: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._thumbs)

    def add_if_new(self, image: np.ndarray) -> bool:
        """Remember ``image`` and return True, or return False when an equal one is already known."""
        thumb = thumbnail(image)
        if any(same_content(thumb, t) for t in self._thumbs):
            return False
        self._thumbs.append(thumb)
        return True


def read_folder(
    folder: Path,
    *,
    seen: ContentIndex | None = None,
    keep: Callable[[Dataset], bool] | None = None,
    max_frames: int = MAX_FRAMES,
) -> Iterator[OtherImage]:
    """Every decodable DICOM image under ``folder`` (``*.dcm``, recursively, sorted by path), each content once.

    Args:
        folder: where to look.
        seen: content already used (e.g. the calibration images); images equal to one of them are left out, and
            the images yielded are added to it. None: a new index.
        keep: a header filter (e.g. "not a chest radiograph"); None keeps every file.
        max_frames: frames read per multi-frame file (evenly spaced).
    """
    index = seen if seen is not None else ContentIndex()
    for path in sorted(Path(folder).rglob("*.dcm")):
        yield from _file_images(path, index, keep, max_frames)


@contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Reference folders hold codec fixtures on purpose: pydicom warns on each invalid value and logs an ERROR with
    a traceback for each frame a decoder refuses. Those files are skipped; their noise stays out of the log."""
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_log.setLevel(level)


def _file_images(
    path: Path, index: ContentIndex, keep: Callable[[Dataset], bool] | None, max_frames: int
) -> list[OtherImage]:
    """The new images of one file (all its frames decoded before the caller sees any)."""
    out: list[OtherImage] = []
    with _quiet_pydicom():
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # reference folders hold deliberately broken files
            return out
        if "PixelData" not in ds or (keep is not None and not keep(ds)):
            return out
        count = frame_count(ds)
        for frame in sorted({int(f) for f in np.linspace(0, count - 1, min(count, max_frames))}):
            try:
                pixels = grey_image(ds, frame)
            except Exception:  # codec fixtures pydicom cannot always decode
                return out
            if index.add_if_new(pixels):
                name = path.name if count == 1 else f"{path.name}#{frame}"
                out.append(OtherImage(name, str(ds.get("Modality", "") or "OT"), pixels))
    return out


def pydicom_test_files() -> Path:
    """The folder of test files shipped inside the installed ``pydicom`` package."""
    return Path(pydicom.__file__).parent / "data" / "test_files"


def calibration_images() -> list[OtherImage]:
    """The other-modality images the OOD threshold is chosen with: pydicom's own test files, one per content."""
    return list(read_folder(pydicom_test_files()))


def ingest_view(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` as ingest stores a radiograph: resampled to ``size`` and rounded through float16."""
    return resample(np.asarray(image, dtype=np.float32), size).astype(np.float16).astype(np.float32)


def as_chest_radiograph(template: Dataset, image: np.ndarray) -> bytes:
    """DICOM bytes of ``image`` under ``template``'s header: a chest radiograph's header with foreign pixels.

    The image is resampled to the template's Rows x Columns and written as 16-bit MONOCHROME2 without a VOI
    window, so the header gate sees exactly the template's attributes and only the pixels differ.
    """
    ds = copy.deepcopy(template)
    rows, columns = int(ds.Rows), int(ds.Columns)
    side = max(rows, columns)
    square = resample(np.asarray(image, dtype=np.float32), side)
    top, left = (side - rows) // 2, (side - columns) // 2
    pixels = np.round(square[top : top + rows, left : left + columns] * 4095).astype(np.uint16)
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTSequence", "ModalityLUTSequence"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = pixels.tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

"""Small DICOM builders shared by the imaging tests, handed out as fixtures."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ComputedRadiographyImageStorage

from . import hostile


def _make_dataset(
    frames: list[np.ndarray] | np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    rescale: tuple[str, str] | None = None,
    window: tuple[str, str] | None = None,
) -> Dataset:
    """A minimal CR dataset holding known 16-bit pixel values (one frame, or several when given a list)."""
    stack = np.stack(frames) if isinstance(frames, list) else np.asarray(frames)[None]
    ds = Dataset()
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.2.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.2.0"
    ds.Modality = "CR"
    ds.PatientID = "850315300012"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stack.shape[1]), int(stack.shape[2])
    if isinstance(frames, list):
        ds.NumberOfFrames = len(frames)
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stack.astype("<u2").tobytes()
    return hostile.with_file_meta(ds)


@pytest.fixture
def make_dataset() -> Callable[..., Dataset]:
    """Builder of minimal CR datasets with known pixel values (see ``_make_dataset``)."""
    return _make_dataset


@pytest.fixture
def to_bytes() -> Callable[[Dataset], bytes]:
    """Serialiser of a dataset to DICOM file bytes."""
    return hostile.to_bytes

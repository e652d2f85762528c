"""Named exceptions of the imaging subpackage."""

from __future__ import annotations

from typing import Literal

DicomReason = Literal["dicom_unreadable", "dicom_not_dicom", "dicom_no_pixels", "dicom_unsupported", "dicom_too_large"]

DICOM_REASONS: tuple[DicomReason, ...] = (
    "dicom_unreadable",
    "dicom_not_dicom",
    "dicom_no_pixels",
    "dicom_unsupported",
    "dicom_too_large",
)


class DicomError(ValueError):
    """A DICOM file or dataset that cannot become an image.

    Attributes:
        reason: a quarantine reason code from docs/raw-data.md (``dicom_unreadable``, ``dicom_not_dicom``,
            ``dicom_no_pixels``), ``dicom_unsupported`` (a transfer syntax, photometric interpretation or pixel
            layout that is not handled) or ``dicom_too_large`` (a declared image or an inflated dataset over the
            decoding limits of :mod:`pipelines.imaging.dicom`, refused before it is decoded).
        detail: what is wrong, in plain words. It never repeats identifying header values (sizes and limits only),
            so it is safe to log and store.
    """

    def __init__(self, reason: DicomReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DicomReason = reason
        self.detail = detail

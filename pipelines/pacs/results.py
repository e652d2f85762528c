"""A model's answer as DICOM objects filed into the source study: a Basic Text Structured Report and a Secondary
Capture image of the saliency overlay.

Both carry the source instance's patient and study attributes (so the PACS files them into the same chart and
study) under a new series and SOP instance; the report references the source instance in its
CurrentRequestedProcedureEvidenceSequence and the capture in its SourceImageSequence. The report says what a
clinician must know: the model and its version, the task, the calibrated probability, the decision threshold,
the result, and that it is preliminary and for clinician review (``PreliminaryFlag`` PRELIMINARY,
``VerificationFlag`` UNVERIFIED).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

MANUFACTURER = "Shipa"
# Results go into series numbers a modality does not use, so a viewer lists them after the images.
SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
PRELIMINARY_TEXT = "preliminary, for clinician review: a model output, not a diagnosis"
# A private coding scheme (DICOM PS3.16: designators beginning with 99 are local) for the items DCM and LOINC
# have no code for.
LOCAL_SCHEME = "99SHIPA"
# Patient and General Study module attributes copied from the source instance; the type 2 ones are written empty
# when the source lacks them.
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
_TYPE2 = frozenset(
    {"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID"}
    | {"AccessionNumber", "ReferringPhysicianName"}
)


@dataclass(frozen=True)
class Finding:
    """What the model answered on the source instance.

    Attributes:
        model_name: the registered model's name.
        model_version: its registry version.
        task: the task (e.g. ``pneumonia``).
        probability: the calibrated probability of the finding.
        threshold: the decision threshold.
        positive: probability at or above the threshold.
    """

    model_name: str
    model_version: str
    task: str
    probability: float
    threshold: float
    positive: bool

    @property
    def result(self) -> str:
        """``positive`` or ``negative``."""
        return "positive" if self.positive else "negative"

    def sentence(self) -> str:
        """The report's one-line finding (the probability with four decimals)."""
        return (
            f"{self.task}: {self.result} (calibrated probability {self.probability:.4f}, threshold "
            f"{self.threshold:.4f}) by model {self.model_name} version {self.model_version}; {PRELIMINARY_TEXT}"
        )


@dataclass(frozen=True)
class StoredResult:
    """One object made for the PACS: its series and SOP instance UIDs and its SOP class."""

    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _text_item(code: Dataset, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = DicomSequence([code])
    item.TextValue = text
    return item


def _base(source: Dataset, sop_class: str, modality: str, series_number: int, created: dt.datetime) -> FileDataset:
    """The Patient, General Study, series, equipment and SOP Common attributes of a new object in the study."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    # A FileDataset with a preamble: STOW-RS clients write it as it is, and a PACS stores what it was sent, so
    # only this makes the stored object a DICOM file (128-byte preamble, "DICM", file meta).
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Kazakh and Russian names as the source holds them
    for keyword in _PATIENT_STUDY:
        if keyword in source:
            ds[keyword] = source[keyword]
        elif keyword in _TYPE2:
            setattr(ds, keyword, "")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = created.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = created.strftime("%H%M%S")
    ds.Manufacturer = MANUFACTURER
    return ds


def _source_reference(source: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return item


def structured_report(
    source: Dataset, finding: Finding, *, created: dt.datetime | None = None, software_version: str = ""
) -> Dataset:
    """A Basic Text SR of ``finding`` on ``source`` (the instance the model read), filed into its study.

    Args:
        source: the source instance's header (patient, study, SOP class and instance UIDs).
        finding: the model's answer.
        created: the content date and time (default: now, local time of this machine).
        software_version: written as SoftwareVersions when given.
    """
    created = created or dt.datetime.now()
    ds = _base(source, BasicTextSRStorage, "SR", SR_SERIES_NUMBER, created)
    if software_version:
        ds.SoftwareVersions = software_version
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"  # no clinician has signed it
    ds.PreliminaryFlag = "PRELIMINARY"
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ReferencedSOPSequence = DicomSequence([_source_reference(source)])
    evidence = Dataset()
    evidence.StudyInstanceUID = source.StudyInstanceUID
    evidence.ReferencedSeriesSequence = DicomSequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([evidence])
    # SR Document Content: the root container and its items.
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = DicomSequence([_code("18748-4", "LN", "Diagnostic imaging report")])
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(
        [
            _text_item(_code("121071", "DCM", "Finding"), finding.sentence()),
            _text_item(_code("model", LOCAL_SCHEME, "Model"), f"{finding.model_name} version {finding.model_version}"),
            _text_item(_code("task", LOCAL_SCHEME, "Task"), finding.task),
            _text_item(_code("probability", LOCAL_SCHEME, "Calibrated probability"), f"{finding.probability:.4f}"),
            _text_item(_code("threshold", LOCAL_SCHEME, "Decision threshold"), f"{finding.threshold:.4f}"),
            _text_item(_code("result", LOCAL_SCHEME, "Result"), finding.result),
            _text_item(_code("status", LOCAL_SCHEME, "Status"), PRELIMINARY_TEXT),
        ]
    )
    return ds


def rgb_pixels(png: bytes) -> np.ndarray:
    """The PNG's pixels as (rows, columns, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def saliency_capture(
    source: Dataset,
    png: bytes,
    finding: Finding,
    *,
    created: dt.datetime | None = None,
) -> Dataset:
    """A Secondary Capture (RGB) of the saliency overlay PNG, filed into the source's study.

    Args:
        source: the source instance's header.
        png: the overlay (:func:`pipelines.service.gradcam.overlay_png`).
        finding: the model's answer (named in the series and derivation descriptions).
        created: the content date and time (default: now).
    """
    created = created or dt.datetime.now()
    pixels = rgb_pixels(png)
    ds = _base(source, SecondaryCaptureImageStorage, "OT", SC_SERIES_NUMBER, created)
    ds.SeriesDescription = f"Saliency map ({finding.task}), preliminary"
    ds.ConversionType = "WSD"  # workstation: made by software, not scanned
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = ""
    ds.DerivationDescription = (
        f"Grad-CAM saliency of {finding.model_name} version {finding.model_version} for {finding.task}; "
        f"{PRELIMINARY_TEXT}"
    )[:1024]
    ds.SourceImageSequence = DicomSequence([_source_reference(source)])
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def described(datasets: Sequence[Dataset]) -> list[StoredResult]:
    """The series and SOP instance UIDs of the objects made here."""
    return [
        StoredResult(str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.Modality))
        for ds in datasets
    ]

"""DICOM header de-identification (PS3.15 Annex E Basic Application Level Confidentiality Profile).

Built as an allow-list: a new dataset receives only the attributes listed in :data:`KEPT_KEYWORDS` (image geometry
and pixel encoding, acquisition facts, study date, patient sex and age) and everything else is left behind, including
names, addresses, telephone numbers, other IDs, institution, accession number, referring physician, free-text
descriptions, times, private tags and sequences other than the LUTs. On top of that:

- PatientID becomes ``pseudonymizer.id("iin", PatientID)``, the same pseudonym the FHIR side gives the Patient's
  IIN identifier; PatientName, PatientBirthDate, AccessionNumber, ReferringPhysicianName and StudyID are kept as
  empty (type 2) attributes.
- Study, Series, SOP Instance and Frame of Reference UIDs are remapped with ``pseudonymizer.uid``.
- PatientAge is derived from PatientBirthDate and StudyDate when the file has none (Retain Patient Characteristics
  Option), and dates are kept whole (Retain Longitudinal Temporal Information with Full Dates Option): temporal
  splits and the FHIR record need them, and the FHIR tables keep event dates too.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.imaging.dicom import parse_da

KEPT_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "StudyDate",
    "SeriesDate",
    "ContentDate",
    "AcquisitionDate",
    "Modality",
    "Manufacturer",
    "PatientSex",
    "PatientAge",
    "BodyPartExamined",
    "KVP",
    "ExposureTime",
    "XRayTubeCurrent",
    "Exposure",
    "ViewPosition",
    "SeriesNumber",
    "InstanceNumber",
    "PatientOrientation",
    "Laterality",
    "ImageLaterality",
    "BurnedInAnnotation",
    "PresentationIntentType",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PixelAspectRatio",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
    "VOILUTFunction",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "PixelData",
)

REMAPPED_UIDS: tuple[str, ...] = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")

# Type 2 attributes kept present but empty (PS3.15 action Z).
EMPTIED: tuple[str, ...] = ("PatientName", "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID")

# Only LUT sequences are copied; inside them only these (no free text such as LUTExplanation).
_LUT_ITEM_KEYWORDS = ("LUTDescriptor", "LUTData", "ModalityLUTType")

_KEPT_TAGS = frozenset(tag_for_keyword(k) for k in KEPT_KEYWORDS)

# PS3.16 CID 7050 codes naming the profile and the options applied.
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)


def deidentify_dataset(ds: Dataset, pseudonymizer: Pseudonymizer, *, keep_pixels: bool = True) -> Dataset:
    """A de-identified copy of a DICOM dataset (the input is not changed).

    Args:
        ds: the original dataset.
        pseudonymizer: the keyed pseudonymiser shared with the FHIR side.
        keep_pixels: copy PixelData too (False for a header-only copy).

    Returns:
        A new dataset holding only allow-listed attributes, the pseudonymous PatientID and remapped UIDs, with
        PatientIdentityRemoved = YES and the de-identification method recorded; ``file_meta`` is rebuilt with the
        remapped SOP Instance UID.
    """
    out = Dataset()
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts every element; keys() does not
        if tag not in _KEPT_TAGS or (not keep_pixels and tag == 0x7FE00010):
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            out.add(DataElement(tag, "SQ", Sequence([_lut_item(item) for item in elem.value])))
        else:
            out.add(DataElement(tag, elem.VR, elem.value))

    patient_id = str(ds.get("PatientID", "") or "").strip()
    out.PatientID = pseudonymizer.id("iin", patient_id) if patient_id else ""
    for keyword in EMPTIED:
        setattr(out, keyword, "")
    for keyword in REMAPPED_UIDS:
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            setattr(out, keyword, pseudonymizer.uid(value))
    if "PatientAge" not in out:
        age = age_at_study(ds)
        if age is not None:
            out.PatientAge = f"{min(age, 999):03d}Y"

    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "UNMODIFIED"
    out.DeidentificationMethod = "PS3.15 Basic Profile; Retain Full Dates; Retain Patient Chars"
    codes = []
    for value, meaning in _METHOD_CODES:
        code = Dataset()
        code.CodeValue = value
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = meaning
        codes.append(code)
    out.DeidentificationMethodCodeSequence = Sequence(codes)

    meta = FileMetaDataset()
    if "SOPClassUID" in out:
        meta.MediaStorageSOPClassUID = out.SOPClassUID
    if "SOPInstanceUID" in out:
        meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    original_meta = getattr(ds, "file_meta", None)
    if original_meta is not None and "TransferSyntaxUID" in original_meta:
        meta.TransferSyntaxUID = original_meta.TransferSyntaxUID
    out.file_meta = meta
    return out


def age_at_study(ds: Dataset) -> int | None:
    """Age in whole years on the study date, from PatientBirthDate (or PatientAge when there is no birth date)."""
    on = parse_da(ds.get("StudyDate")) or parse_da(ds.get("SeriesDate")) or parse_da(ds.get("ContentDate"))
    born = parse_da(ds.get("PatientBirthDate"))
    if on is not None and born is not None:
        if born > on:
            return None
        return on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return _parse_as(str(ds.get("PatientAge", "") or ""))


def _parse_as(text: str) -> int | None:
    """A DICOM AS value (``045Y``, ``006M``...) in whole years."""
    text = text.strip().upper()
    if len(text) != 4 or not text[:3].isdigit() or text[3] not in "DWMY":
        return None
    days_per_unit = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}[text[3]]
    return int(int(text[:3]) * days_per_unit // 365.25)


def header_json(ds: Dataset) -> dict[str, object]:
    """The DICOM JSON model (PS3.18 F.2) of a dataset without its pixel data or LUT data."""
    header = Dataset()
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset converts every element; keys() does not
        if tag == 0x7FE00010:
            continue
        elem = ds[tag]
        if elem.VR == "SQ" and elem.keyword in ("ModalityLUTSequence", "VOILUTSequence"):
            continue
        header.add(elem)
    return header.to_json_dict()


def _lut_item(item: Dataset) -> Dataset:
    kept = Dataset()
    for keyword in _LUT_ITEM_KEYWORDS:
        if keyword in item:
            kept.add(item[keyword])
    return kept

"""One diagnosis request as model inputs: a DICOM file and an optional FHIR Bundle, de-identified.

The image goes through ingest's chain (:func:`~pipelines.imaging.dicom.read_dicom`, burned-in annotation
refusal, :func:`~pipelines.imaging.dicom.normalize_pixels`, :func:`~pipelines.imaging.dicom.resample` to the
ingest size, stored precision float16) and then the model's own preprocessing inside the registered pyfunc.
The EHR values are the training features (:mod:`pipelines.features.diagnosis`): age at the study and sex from
the Bundle's Patient, and for each observation feature the value nearest before the study within the model's
lookback, matched by LOINC, from the Bundle's Observations after ingest's de-identification and flattening.
Without a Bundle, age and sex come from the DICOM header and every observation is missing (flagged as in
training).

The study time is the Bundle's ImagingStudy ``started`` (matched by StudyInstanceUID) as in training; without
one, the DICOM StudyDate and StudyTime read in local time (``+05:00`` by default).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir import dates
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.iin import iin_shaped
from pipelines.imaging.deid import age_at_study
from pipelines.imaging.dicom import normalize_pixels, parse_da, read_dicom, resample
from pipelines.imaging.domain import InputDomain
from pipelines.imaging.errors import DicomError
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_in import (
    Submitted,
    deidentify_and_flatten,
    keep_valid_resources,
    parse_json,
    submitted_resources,
    table_frames,
)
from pipelines.service.fhir_out import PatientRef
from pipelines.service.input_domain import require_in_domain

DEFAULT_TIMEZONE = dt.timezone(dt.timedelta(hours=5))  # Kazakhstan
_DICOM_SEX = {"M": 1.0, "F": 0.0}
_FHIR_SEX = {"male": 1.0, "female": 0.0}
# HTTP status and FHIR issue type per DICOM reason code. A file over the decoding limits
# (pipelines.imaging.dicom: inflated size, decode budget, frame size and count) is refused before it is decoded as
# content too large to process.
DICOM_STATUS: dict[str, tuple[int, str]] = {
    "dicom_not_dicom": (400, "structure"),
    "dicom_unreadable": (400, "structure"),
    "dicom_no_pixels": (422, "required"),
    "dicom_unsupported": (422, "not-supported"),
    "dicom_too_large": (413, "too-costly"),
}


@dataclass(frozen=True)
class AnswerRefs:
    """The references of the clinician's answer, in the request's own terms, so it files into the right chart.

    Attributes:
        subject: a Reference to the Bundle's Patient as the request referred to it (its fullUrl or
            ``Patient/<id>``); None without one (the answer then names the patient by pseudonym).
        study: a Reference to the study: the DICOM StudyInstanceUID as sent, and the Bundle's ImagingStudy of
            that UID as the request referred to it, when there is one.
        observations: the request's references of the Observations whose values were used.
    """

    subject: dict[str, Any] | None = None
    study: dict[str, Any] | None = None
    observations: tuple[str, ...] = ()


@dataclass
class DiagnosisCase:
    """The model inputs of one request and the pseudonymous facts the answer needs.

    Attributes:
        image: the ingest-size image (float32 in [0, 1]), None for an EHR-only model.
        raw: raw EHR feature values by name (None = missing), the pyfunc's input columns.
        patient: the pseudonymous patient.
        study_uid: the pseudonymous StudyInstanceUID.
        study_time: the study time in UTC (None when unknown).
        observations: pseudonymous ids of the Observations whose values were used.
        answer: how the answer names the patient, the study and the Observations used: as the request did.
        warnings: (FHIRPath, text) of what the answer must tell the caller: resources left out, references
            replaced by pseudonyms.
    """

    image: np.ndarray | None
    raw: dict[str, float | None]
    patient: PatientRef
    study_uid: str | None = None
    study_time: dt.datetime | None = None
    observations: list[str] = field(default_factory=list)
    answer: AnswerRefs = field(default_factory=AnswerRefs)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """EHR features without a value."""
        return [name for name, value in self.raw.items() if value is None]


def dicom_error(exc: DicomError) -> FhirHTTPError:
    """The OperationOutcome error of a DICOM failure: reason code and plain-words detail (no header value)."""
    status, code = DICOM_STATUS.get(exc.reason, (422, "invalid"))
    return FhirHTTPError(status, code, f"{exc.reason}: {exc.detail}", ["file"])


def _study_time(ds: Any, timezone: dt.tzinfo) -> dt.datetime | None:
    day = parse_da(ds.get("StudyDate"))
    if day is None:
        return None
    text = str(ds.get("StudyTime", "") or "").strip().split(".")[0]
    hour, minute, second = 0, 0, 0
    if text.isdigit() and len(text) >= 2:
        padded = text.ljust(6, "0")
        hour, minute, second = int(padded[0:2]), int(padded[2:4]), int(padded[4:6])
    try:
        local = dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=timezone)
    except ValueError:
        local = dt.datetime(day.year, day.month, day.day, tzinfo=timezone)
    return local.astimezone(dt.UTC)


def _ymd(day: dt.date | None) -> int:
    return day.year * 10000 + day.month * 100 + day.day if day else 0


def read_image(data: bytes, size: int | None, domain: InputDomain | None = None) -> tuple[Any, np.ndarray | None]:
    """(dataset, ingest image or None) of an uploaded DICOM file, checked as ingest checks it.

    Args:
        data: the uploaded bytes.
        size: the ingest image side; None skips the pixels (an EHR-only model).
        domain: the served model's intended input: a header outside it is refused before any pixel is decoded.

    The decoding limits of :mod:`pipelines.imaging.dicom` bound the memory one request can make the service use:
    a deflated dataset is inflated to at most 64 MiB, and one frame of at most 5120 x 5120 pixels (within a
    256 MiB declared total) is decoded, only after the header and the frame's own header agree on its size.

    Raises:
        FhirHTTPError: the DICOM reason code of the failure (400, 413 over a decoding limit, or 422).
    """
    try:
        ds = read_dicom(data)
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise DicomError("dicom_unsupported", "burned-in annotation: the pixels may show identifying text")
        if domain is not None:
            require_in_domain(ds, domain)  # a FhirHTTPError (422 not-supported), not caught below
        if size is None:
            return ds, None
        image = resample(normalize_pixels(ds), size)
    except DicomError as exc:
        raise dicom_error(exc) from None
    # Ingest stores images as float16; training saw that precision, so serving rounds the same way.
    return ds, image.astype(np.float16).astype(np.float32)


def _nearest_values(
    patient_id: str,
    started: dt.datetime,
    observations: Any,
    wanted: dict[str, str],
    lookback_hours: float,
) -> tuple[dict[str, float | None], list[str]]:
    """Training's nearest-before value per feature (:mod:`pipelines.features.diagnosis`) and the ids used."""
    import polars as pl

    from pipelines.features.diagnosis import nearest_before

    values: dict[str, float | None] = dict.fromkeys(wanted)
    if observations is None or observations.height == 0:
        return values, []
    obs = observations.filter(pl.col("value").is_not_null())
    study = pl.DataFrame({"patient_id": [patient_id], "started": [started]}).with_columns(
        pl.col("started").cast(obs.schema["effective"])
    )
    used: list[str] = []
    for name, loinc in wanted.items():
        joined = nearest_before(study, obs, name, loinc, lookback_hours)
        value = joined[f"raw_{name}"][0]
        values[name] = None if value is None else float(value)
        if value is not None:
            low = started - dt.timedelta(hours=lookback_hours)
            hits = obs.filter(
                (pl.col("patient_id") == patient_id)
                & (pl.col("loinc_code") == loinc)
                & (pl.col("value") == value)
                & (pl.col("effective") <= started)
                & (pl.col("effective") >= low)
            )
            used.extend(str(x) for x in hits["observation_id"].unique().sort())
    return values, sorted(set(used))


def build_case(
    dicom: bytes,
    bundle: bytes | None,
    *,
    pseudonymizer: Pseudonymizer,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
    observations: dict[str, str],
    lookback_hours: float,
    ingest_image_size: int | None,
    timezone: dt.tzinfo = DEFAULT_TIMEZONE,
    input_domain: InputDomain | None = None,
) -> DiagnosisCase:
    """The de-identified model inputs of one diagnosis request.

    Args:
        dicom: the uploaded DICOM file.
        bundle: the uploaded FHIR Bundle (JSON bytes) or None.
        pseudonymizer: the service's keyed pseudonymizer (the ingest key).
        iin_systems: identifier systems whose values are IINs (ingest's ``iin_systems``): a Bundle Patient's IIN
            under any of them is the DICOM PatientID's person.
        observations: the model's EHR features (name -> LOINC).
        lookback_hours: the model's lookback.
        ingest_image_size: the ingest image side (None for an EHR-only model).
        timezone: the local time zone of DICOM StudyTime.
        input_domain: the served model's intended input (checked on the header before any pixel is decoded).

    Raises:
        FhirHTTPError: a bad DICOM file (its reason code), a file outside the model's intended use (422
            ``not-supported`` naming the attribute), an invalid Bundle (the field), or a Bundle whose Patient is not
            the DICOM file's patient.
    """
    ds, image = read_image(dicom, ingest_image_size, input_domain)
    patient_id_raw = str(ds.get("PatientID", "") or "").strip()
    iin_pseudonym = pseudonymizer.id("iin", patient_id_raw) if patient_id_raw else None
    study_uid_raw = str(ds.get("StudyInstanceUID", "") or "").strip()
    study_uid = pseudonymizer.uid(study_uid_raw) if study_uid_raw else None
    dicom_time = _study_time(ds, timezone)
    raw: dict[str, float | None] = {
        "age": None,
        "sex_male": None,
        **dict.fromkeys(observations),
    }
    warnings: list[tuple[str, str]] = []
    study_ref = _dicom_study_reference(study_uid_raw, study_uid, warnings)
    if bundle is None:
        age = age_at_study(ds)
        raw["age"] = float(age) if age is not None else None
        raw["sex_male"] = _DICOM_SEX.get(str(ds.get("PatientSex", "") or "").strip().upper())
        answer = AnswerRefs(study=study_ref)
        return DiagnosisCase(image, raw, PatientRef(iin_pseudonym), study_uid, dicom_time, [], answer, warnings)

    submitted = submitted_resources(parse_json(bundle, "the bundle part"), allowed=("Bundle",))
    submitted, left_out = keep_valid_resources(submitted, iin_systems=iin_systems)
    warnings += left_out
    flat = deidentify_and_flatten(submitted, Pseudonyms(pseudonymizer, iin_systems=iin_systems))
    refs = _Refs(submitted, flat.pseudonyms, warnings)
    patients = flat.rows.get("patients", [])
    patient = _the_patient(patients, iin_pseudonym)
    if patient is None:
        answer = AnswerRefs(study=study_ref)
        return DiagnosisCase(image, raw, PatientRef(iin_pseudonym), study_uid, dicom_time, [], answer, warnings)
    patient_resource = refs.resource("Patient", patient["patient_id"]) or {}
    birth = dates.ymd_bounds(patient_resource.get("birthDate"))

    started, event = dicom_time, _ymd(parse_da(ds.get("StudyDate")))
    for row in flat.rows.get("imaging_studies", []):
        if not study_uid or row.get("study_uid") != study_uid:
            continue
        if study_ref is not None:  # the Bundle's ImagingStudy of the file's study, as the request referred to it
            study_ref = {**study_ref, "reference": refs.of("ImagingStudy", row["imaging_study_id"])}
        if row.get("started") is not None:
            started = row["started"]
            resource = refs.resource("ImagingStudy", row["imaging_study_id"])
            bounds = dates.ymd_bounds(resource.get("started")) if resource else None
            event = bounds[0] if bounds else event
            break
    if birth and event and event >= birth[0]:
        raw["age"] = float((event - birth[0]) // 10000)
    raw["sex_male"] = _FHIR_SEX.get(str(patient.get("sex") or ""))
    used: list[str] = []
    if started is not None and observations:
        frames = table_frames({"observations": flat.rows.get("observations", [])})
        values, used = _nearest_values(
            patient["patient_id"], started, frames.get("observations"), observations, lookback_hours
        )
        raw.update(values)
    answer = AnswerRefs(
        subject={"reference": refs.of("Patient", patient["patient_id"]), "type": "Patient"},
        study=study_ref,
        observations=tuple(refs.of("Observation", oid) for oid in used),
    )
    return DiagnosisCase(
        image,
        raw,
        PatientRef(iin_pseudonym or patient.get("patient_pseudo_id"), patient["patient_id"]),
        study_uid,
        started,
        used,
        answer,
        warnings,
    )


# DICOM UIDs as FHIR identifiers (R4: Identifier.system urn:dicom:uid, value urn:oid:<uid>).
DICOM_UID_SYSTEM = "urn:dicom:uid"


def _dicom_study_reference(
    uid: str, pseudonymous_uid: str | None, warnings: list[tuple[str, str]]
) -> dict[str, Any] | None:
    """The study as the caller's PACS knows it: its StudyInstanceUID as sent (its pseudonym if it holds a number
    shaped like an IIN, with a warning)."""
    if not uid:
        return None
    value = uid
    if iin_shaped(uid):
        value = pseudonymous_uid or ""
        warnings.append(
            ("StudyInstanceUID", "the StudyInstanceUID holds a number shaped like an IIN: answered with its pseudonym")
        )
    return {"type": "ImagingStudy", "identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{value}"}}


class _Refs:
    """The request's resources by (type, pseudonymous id): the raw resource, and how the request referred to it
    (its fullUrl or ``Type/id``); a reference that holds a number shaped like an IIN is answered as
    ``Type/<pseudonym>`` with a warning."""

    def __init__(self, submitted: Submitted, pseudonyms: list[str], warnings: list[tuple[str, str]]) -> None:
        self._by_id: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
        for (where, resource), pid, ref in zip(submitted.resources, pseudonyms, submitted.references, strict=True):
            self._by_id.setdefault((str(resource.get("resourceType")), pid), (where, ref, resource))
        self._warnings = warnings
        self._warned: set[str] = set()

    def resource(self, rtype: str, pid: str) -> dict[str, Any] | None:
        """The submitted (raw) resource of type ``rtype`` whose pseudonymous id is ``pid``."""
        found = self._by_id.get((rtype, pid))
        return found[2] if found else None

    def of(self, rtype: str, pid: str) -> str:
        where, ref, _ = self._by_id.get((rtype, pid), ("", f"{rtype}/{pid}", {}))
        if not iin_shaped(ref):
            return ref
        if where not in self._warned:
            self._warned.add(where)
            text = f"the {rtype}'s id or fullUrl holds a number shaped like an IIN: answered as {rtype}/<pseudonym>"
            self._warnings.append((where, text))
        return f"{rtype}/{pid}"


def _the_patient(patients: list[dict[str, Any]], iin_pseudonym: str | None) -> dict[str, Any] | None:
    """The Bundle's Patient of the DICOM file's patient (by IIN pseudonym).

    Raises:
        FhirHTTPError: 422 when the Bundle's Patients are other people than the DICOM file's patient.
    """
    if not patients:
        return None
    if iin_pseudonym is not None:
        for row in patients:
            if row.get("patient_pseudo_id") == iin_pseudonym:
                return row
    if len(patients) == 1 and (patients[0].get("patient_pseudo_id") is None or iin_pseudonym is None):
        return patients[0]
    raise FhirHTTPError(
        422,
        "business-rule",
        "the bundle's Patient is not the patient of the DICOM file (their IINs differ)",
        ["Bundle.entry.resource.identifier"],
    )

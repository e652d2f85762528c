"""One patient's record under construction: FHIR R4 resources as plain dicts, built fast and in a fixed order.

References are ``Type/id`` (NDJSON) or ``urn:uuid:id`` (bundle format); organizations and practitioners arrive
with their reference text already formatted by the directory. Nothing here validates: tests do that with
``fhir.resources.R4B`` so that the generator's hot path stays cheap.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipelines import codes
from pipelines.synth.clinical import VITAL_CODES
from pipelines.synth.draws import Draws
from pipelines.synth.ids import IdFactory
from pipelines.synth.people import PersonName
from pipelines.synth.providers import Org, Practitioner

TZ = "+05:00"
_OBS_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
_CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_CONDITION_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
_CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
_ADJUDICATION = "http://terminology.hl7.org/CodeSystem/adjudication"
_PAYMENT_TYPE = "http://terminology.hl7.org/CodeSystem/ex-paymenttype"
_PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
_V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_DISCHARGE = "http://terminology.hl7.org/CodeSystem/discharge-disposition"
_COVERAGE_TYPE = "https://shipa.kz/fhir/CodeSystem/coverage-type"

ENCOUNTER_CLASSES = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter"}
MEDICATIONS = {
    "J01CA04": "amoxicillin",
    "J01DD04": "ceftriaxone",
    "J01FA10": "azithromycin",
    "C08CA01": "amlodipine",
    "C09AA02": "enalapril",
    "A10BA02": "metformin",
    "R03AC02": "salbutamol",
    "N02BE01": "paracetamol",
}

# Shared, never-mutated pieces of JSON (dirty copies are deep-copied before they are changed).
_OBS_CODE = {
    c: {"coding": [{"system": codes.LOINC, "code": c, "display": o.display}], "text": o.display}
    for c, o in codes.LOINC_CODES.items()
}
_OBS_CAT = {
    cat: [{"coding": [{"system": _OBS_CATEGORY_SYSTEM, "code": cat, "display": disp}]}]
    for cat, disp in (("vital-signs", "Vital Signs"), ("laboratory", "Laboratory"), ("imaging", "Imaging"))
}
_ICD = {
    c: {"coding": [{"system": codes.ICD10, "code": c, "display": t}], "text": t} for c, t in codes.ICD10_CODES.items()
}
_TARIFF = {
    c: {"coding": [{"system": codes.TARIFF, "code": c, "display": t.name}], "text": t.name}
    for c, t in codes.TARIFFS.items()
}
_ATC = {c: {"coding": [{"system": codes.ATC, "code": c, "display": n}], "text": n} for c, n in MEDICATIONS.items()}
_CLASS = {k: {"system": codes.ENCOUNTER_CLASS, "code": k, "display": v} for k, v in ENCOUNTER_CLASSES.items()}
_ACTIVE = {"coding": [{"system": _CONDITION_CLINICAL, "code": "active"}]}
_RESOLVED = {"coding": [{"system": _CONDITION_CLINICAL, "code": "resolved"}]}
_CONFIRMED = {"coding": [{"system": _CONDITION_VERIFICATION, "code": "confirmed"}]}
_ENC_DX = [{"coding": [{"system": _CONDITION_CATEGORY, "code": "encounter-diagnosis"}]}]
_PRIORITY_NORMAL = {"coding": [{"system": _PRIORITY, "code": "normal"}]}
_RAD = [{"coding": [{"system": _V2_0074, "code": "RAD", "display": "Radiology"}]}]
_CHEST = {"system": codes.SNOMED, "code": "51185008", "display": "Thoracic structure"}


@functools.lru_cache(maxsize=8192)
def day_text(day: int) -> str:
    """ISO date of a day ordinal."""
    return dt.date.fromordinal(day).isoformat()


def stamp(day: int, minute: int) -> str:
    """FHIR dateTime (Kazakhstan time) of a day ordinal and a minute of that day."""
    minute = min(max(minute, 0), 1439)
    return f"{day_text(day)}T{minute // 60:02d}:{minute % 60:02d}:00{TZ}"


@dataclass(slots=True)
class Person:
    """A patient's demographics and chronic conditions (day values are date ordinals)."""

    index: int
    id: str
    sex: str
    birth: int
    iin: str
    region: str
    name: PersonName
    phone: str
    death: int | None
    home: Org
    htn: bool
    dm: bool
    copd: bool

    def age_on(self, day: int) -> float:
        """Age in years on a day."""
        return (day - self.birth) / 365.25

    @property
    def male(self) -> bool:
        """Whether the administrative sex is male."""
        return self.sex == "male"


@dataclass(slots=True)
class Rec:
    """One output record: a resource (``body``) or, for an invalid_json defect, its broken text (``raw``)."""

    rtype: str
    rid: str
    body: dict[str, Any] | None
    raw: str | None = None
    defect: str | None = None
    field: str = ""


@dataclass(slots=True)
class Visit:
    """An encounter being documented."""

    id: str
    ref: str
    klass: str
    org: Org
    prac: Practitioner
    day: int
    minute: int
    end_day: int
    end_minute: int
    rec: Rec
    based_on: str | None = None
    diagnoses: list[str] = field(default_factory=list)

    @property
    def start(self) -> str:
        """Start dateTime."""
        return stamp(self.day, self.minute)

    def at(self, minutes_later: int) -> str:
        """A dateTime some minutes after the start (same day)."""
        return stamp(self.day, self.minute + minutes_later)


class Line(NamedTuple):
    """One billed service: tariff code, quantity and day; ``last`` ends a multi-day service (bed-days)."""

    code: str
    qty: int
    day: int
    last: int | None = None

    def shifted(self, days: int) -> Line:
        """The same service some days later."""
        return Line(self.code, self.qty, self.day + days, None if self.last is None else self.last + days)


@dataclass(slots=True)
class ClaimInfo:
    """What the writer, fraud truth and statistics need to know about one Claim."""

    id: str
    org: int
    pattern: str | None
    created_day: int
    amount: int
    lines: list[Line]
    resource: dict[str, Any]
    labelled: bool = False
    finding_day: int | None = None  # when an audit found it (labelled fraud only)


class Chart:
    """Builds one patient's resources in order.

    Args:
        person: the patient.
        ids: the patient's id factory.
        d: the patient's draws.
        bundle: reference style (``urn:uuid:`` when True).
        fsms_ref: reference to the Fund's Organization.
    """

    def __init__(self, person: Person, ids: IdFactory, d: Draws, *, bundle: bool, fsms_ref: str) -> None:
        self.person = person
        self.ids = ids
        self.d = d
        self.bundle = bundle
        self.fsms_ref = fsms_ref
        self.recs: list[Rec] = []
        self.claims: list[ClaimInfo] = []
        self.values: list[tuple[str, float, str]] = []  # (LOINC, value, stratum) for the datasheet
        self.images: list[str] = []  # radiographs written (relative paths)
        self.dicom_defects: list[tuple[str, str, str, str]] = []  # (defect, SOP UID, relative path, field)
        self.patient_ref = self.ref("Patient", person.id)
        self.coverage_ref = ""

    def ref(self, rtype: str, rid: str) -> str:
        """Reference text to a resource of this patient."""
        return f"urn:uuid:{rid}" if self.bundle else f"{rtype}/{rid}"

    def _add(self, body: dict[str, Any]) -> str:
        self.recs.append(Rec(body["resourceType"], body["id"], body))
        return self.ref(body["resourceType"], body["id"])

    # --- demographics -----------------------------------------------------------------------------------------

    def patient(self, address: dict[str, Any]) -> None:
        """The Patient resource (IIN, names in Cyrillic and Latin, phone, address, death)."""
        p = self.person
        body: dict[str, Any] = {
            "resourceType": "Patient",
            "id": p.id,
            "identifier": [{"use": "official", "system": codes.IIN_SYSTEM, "value": p.iin}],
            "active": True,
            "name": p.name.fhir(),
            "telecom": [{"system": "phone", "value": p.phone, "use": "mobile"}],
            "gender": p.sex,
            "birthDate": day_text(p.birth),
        }
        if p.death is not None:
            body["deceasedDateTime"] = stamp(p.death, 240 + self.d.below(1000))
        body["address"] = [address]
        body["communication"] = [
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": p.name.lang}]}, "preferred": True}
        ]
        body["managingOrganization"] = {"reference": p.home.ref}
        self._add(body)

    def coverage(self, start_day: int) -> None:
        """Compulsory insurance (OSMS) paid by the Fund."""
        cid = self.ids.next()
        self.coverage_ref = self._add(
            {
                "resourceType": "Coverage",
                "id": cid,
                "status": "active",
                "type": {"coding": [{"system": _COVERAGE_TYPE, "code": "OSMS", "display": "Compulsory insurance"}]},
                "beneficiary": {"reference": self.patient_ref},
                "relationship": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/subscriber-relationship", "code": "self"}
                    ]
                },
                "period": {"start": day_text(start_day)},
                "payor": [{"reference": self.fsms_ref}],
            }
        )

    # --- clinical ---------------------------------------------------------------------------------------------

    def visit(
        self,
        klass: str,
        org: Org,
        prac: Practitioner,
        day: int,
        minute: int,
        *,
        end_day: int | None = None,
        length: int = 20,
        based_on: str | None = None,
    ) -> Visit:
        """Open an encounter; its resource is written in place by :meth:`close`."""
        vid = self.ids.next()
        rec = Rec("Encounter", vid, None)
        self.recs.append(rec)
        end_day = day if end_day is None else end_day
        end_minute = minute + length if end_day == day else 600 + self.d.below(240)
        return Visit(vid, self.ref("Encounter", vid), klass, org, prac, day, minute, end_day, end_minute, rec, based_on)

    def close(self, v: Visit) -> None:
        """Fill in the encounter resource with its diagnoses."""
        body: dict[str, Any] = {
            "resourceType": "Encounter",
            "id": v.id,
            "status": "finished",
            "class": _CLASS[v.klass],
            "subject": {"reference": self.patient_ref},
        }
        if v.based_on:
            body["basedOn"] = [{"reference": v.based_on}]
        body["participant"] = [{"individual": {"reference": v.prac.ref}}]
        body["period"] = {"start": v.start, "end": stamp(v.end_day, v.end_minute)}
        if v.diagnoses:
            body["diagnosis"] = [{"condition": {"reference": r}, "rank": i} for i, r in enumerate(v.diagnoses, 1)]
        if v.klass == "IMP":
            body["hospitalization"] = {"dischargeDisposition": {"coding": [{"system": _DISCHARGE, "code": "home"}]}}
        body["serviceProvider"] = {"reference": v.org.ref}
        v.rec.body = body

    def condition(self, v: Visit, icd: str, *, chronic: bool = False) -> str:
        """An encounter diagnosis (ICD-10); acute ones are resolved a few weeks later."""
        body: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self.ids.next(),
            "clinicalStatus": _ACTIVE if chronic else _RESOLVED,
            "verificationStatus": _CONFIRMED,
            "category": _ENC_DX,
            "code": _ICD[icd],
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": v.ref},
            "onsetDateTime": v.start,
        }
        if not chronic:
            body["abatementDateTime"] = day_text(v.end_day + 7 + self.d.below(21))
        body["recordedDate"] = v.start
        ref = self._add(body)
        v.diagnoses.append(ref)
        return ref

    def observe(self, v: Visit, values: dict[str, float], stratum: str) -> list[str]:
        """One Observation per value (vital signs or laboratory), each with its UCUM unit."""
        refs = []
        for offset, (code, value) in enumerate(values.items()):
            unit = codes.LOINC_CODES[code].unit
            lab = code not in VITAL_CODES
            refs.append(
                self._add(
                    {
                        "resourceType": "Observation",
                        "id": self.ids.next(),
                        "status": "final",
                        "category": _OBS_CAT["laboratory" if lab else "vital-signs"],
                        "code": _OBS_CODE[code],
                        "subject": {"reference": self.patient_ref},
                        "encounter": {"reference": v.ref},
                        "effectiveDateTime": v.at(30 + offset if lab else 2 + offset),
                        "valueQuantity": {"value": value, "unit": unit, "system": codes.UCUM, "code": unit},
                    }
                )
            )
            self.values.append((code, value, stratum))
        return refs

    def procedure(self, v: Visit, tariff: str, reason: str | None, *, prac: Practitioner | None = None) -> str:
        """A performed procedure coded with the tariff list."""
        body: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": self.ids.next(),
            "status": "completed",
            "code": _TARIFF[tariff],
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": v.ref},
            "performedDateTime": v.at(15),
            "performer": [{"actor": {"reference": (prac or v.prac).ref}}],
        }
        if reason:
            body["reasonReference"] = [{"reference": reason}]
        return self._add(body)

    def prescribe(self, v: Visit, atc: str, reason: str | None, text: str) -> str:
        """A medication order (ATC)."""
        body: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": self.ids.next(),
            "status": "completed" if atc.startswith(("J01", "N02")) else "active",
            "intent": "order",
            "medicationCodeableConcept": _ATC[atc],
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": v.ref},
            "authoredOn": v.at(25),
            "requester": {"reference": v.prac.ref},
        }
        if reason:
            body["reasonReference"] = [{"reference": reason}]
        body["dosageInstruction"] = [{"text": text}]
        return self._add(body)

    def refer(self, v: Visit, to: Org, tariff: str, reason: str | None) -> str:
        """A referral (ServiceRequest) from this encounter's practitioner to another organization."""
        body: dict[str, Any] = {
            "resourceType": "ServiceRequest",
            "id": self.ids.next(),
            "status": "completed",
            "intent": "order",
            "category": [{"coding": [{"system": codes.SNOMED, "code": "3457005", "display": "Patient referral"}]}],
            "code": _TARIFF[tariff],
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": v.ref},
            "authoredOn": v.at(20),
            "requester": {"reference": v.prac.ref},
            "performer": [{"reference": to.ref}],
        }
        if reason:
            body["reasonReference"] = [{"reference": reason}]
        return self._add(body)

    def imaging_study(
        self, v: Visit, *, study_uid: str, series_uid: str, sop_uid: str, sop_class: str, modality: str, accession: str
    ) -> str:
        """The chest radiograph's ImagingStudy; UIDs match the DICOM file written for it."""
        coding = {"system": codes.DICOM_DCM, "code": modality}
        started = v.at(40)
        return self._add(
            {
                "resourceType": "ImagingStudy",
                "id": self.ids.next(),
                "identifier": [
                    {"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"},
                    {"type": {"coding": [{"system": _V2_0203, "code": "ACSN"}]}, "value": accession},
                ],
                "status": "available",
                "modality": [coding],
                "subject": {"reference": self.patient_ref},
                "encounter": {"reference": v.ref},
                "started": started,
                "referrer": {"reference": v.prac.ref},
                "numberOfSeries": 1,
                "numberOfInstances": 1,
                "procedureCode": [_TARIFF["I01"]],
                "series": [
                    {
                        "uid": series_uid,
                        "number": 1,
                        "modality": coding,
                        "description": "XR CHEST",
                        "numberOfInstances": 1,
                        "bodySite": _CHEST,
                        "started": started,
                        "performer": [{"actor": {"reference": v.org.radiologist.ref}}],
                        "instance": [
                            {
                                "uid": sop_uid,
                                "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{sop_class}"},
                                "number": 1,
                                "title": "XR CHEST",
                            }
                        ],
                    }
                ],
            }
        )

    def radiology_report(self, v: Visit, study_ref: str, *, positive: bool, conclusion: str) -> str:
        """The radiologist's report (LOINC 36643-5); a positive read carries conclusionCode J18.9."""
        body: dict[str, Any] = {
            "resourceType": "DiagnosticReport",
            "id": self.ids.next(),
            "status": "final",
            "category": _RAD,
            "code": _OBS_CODE[codes.RADIOLOGY_REPORT_LOINC],
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": v.ref},
            "effectiveDateTime": v.at(40),
            "issued": v.at(70),
            "performer": [{"reference": v.org.radiologist.ref}],
            "imagingStudy": [{"reference": study_ref}],
            "conclusion": conclusion,
        }
        if positive:
            body["conclusionCode"] = [_ICD["J18.9"]]
        return self._add(body)

    # --- billing ----------------------------------------------------------------------------------------------

    def bill(
        self,
        *,
        org: Org,
        prac: Practitioner,
        lines: Sequence[Line | tuple[str, int, int]],
        encounter: str | None,
        diagnoses: list[str],
        diagnosis_codes: tuple[str, ...] = (),
        referral: str | None = None,
        institutional: bool = False,
        pattern: str | None = None,
        not_before: int | None = None,
    ) -> ClaimInfo:
        """A Claim to the Fund and its ClaimResponse.

        Args:
            org: the billing provider.
            prac: the responsible practitioner (careTeam).
            lines: one :class:`Line` (or a (tariff, quantity, day) tuple) per item; a Line with ``last`` is billed
                with servicedPeriod, others with servicedDate.
            encounter: reference of the encounter behind every item, or None (no clinical trace).
            diagnoses: Condition references; ``diagnosis_codes`` are used instead when there is none.
            diagnosis_codes: ICD-10 codes used as diagnosisCodeableConcept.
            referral: ServiceRequest reference when the service was referred.
            institutional: inpatient claim type instead of professional.
            pattern: the fraud pattern this claim carries, or None.
            not_before: the earliest day the claim may be created (a resubmission comes after the bill it copies).
        """
        cid = self.ids.next()
        norm = [x if isinstance(x, Line) else Line(*x) for x in lines]
        first = min(x.day for x in norm)
        last = max(x.day if x.last is None else x.last for x in norm)
        created = last + 1 + self.d.below(10)
        if not_before is not None:
            # Clamped, not redrawn: the random stream, and so every other record of the cohort, stays the same.
            created = max(created, not_before)
        dx: list[dict[str, Any]] = [
            {"sequence": i, "diagnosisReference": {"reference": r}} for i, r in enumerate(diagnoses, 1)
        ] or [{"sequence": i, "diagnosisCodeableConcept": _ICD[c]} for i, c in enumerate(diagnosis_codes, 1)]
        items = []
        total = 0
        for seq, (code, qty, day, until) in enumerate(norm, 1):
            price = codes.TARIFFS[code].price_kzt
            total += price * qty
            item: dict[str, Any] = {
                "sequence": seq,
                "careTeamSequence": [1],
                "diagnosisSequence": [1],
                "productOrService": _TARIFF[code],
            }
            if until is None:
                item["servicedDate"] = day_text(day)
            else:
                item["servicedPeriod"] = {"start": day_text(day), "end": day_text(until)}
            item |= {
                "quantity": {"value": qty},
                "unitPrice": {"value": price, "currency": "KZT"},
                "net": {"value": price * qty, "currency": "KZT"},
            }
            if encounter:
                item["encounter"] = [{"reference": encounter}]
            items.append(item)
        kind = "institutional" if institutional else "professional"
        body: dict[str, Any] = {
            "resourceType": "Claim",
            "id": cid,
            "identifier": [{"system": codes.CLAIM_ID_SYSTEM, "value": cid}],
            "status": "active",
            "type": {"coding": [{"system": _CLAIM_TYPE, "code": kind}]},
            "use": "claim",
            "patient": {"reference": self.patient_ref},
            "billablePeriod": {"start": day_text(first), "end": day_text(last)},
            "created": day_text(created),
            "insurer": {"reference": self.fsms_ref},
            "provider": {"reference": org.ref},
            "priority": _PRIORITY_NORMAL,
        }
        if referral:
            body["referral"] = {"reference": referral}
        body["careTeam"] = [{"sequence": 1, "provider": {"reference": prac.ref}, "responsible": True}]
        body["diagnosis"] = dx
        body["insurance"] = [{"sequence": 1, "focal": True, "coverage": {"reference": self.coverage_ref}}]
        body["item"] = items
        body["total"] = {"value": total, "currency": "KZT"}
        self._add(body)
        self._respond(body, org, created, total)
        info = ClaimInfo(cid, org.index, pattern, created, total, norm, body)
        self.claims.append(info)
        return info

    def rebill(self, original: ClaimInfo, *, org: Org, prac: Practitioner, shift: int, pattern: str) -> ClaimInfo:
        """Bill an earlier claim's services again (a duplicate), ``shift`` days later, possibly by another provider.

        The copy is created at least a day after the original bill: a duplicate is a resubmission, so the Fund
        received the original first (before, about four in ten copies drew an earlier created day than their
        original, which made the clean original look like the copy).
        """
        src = original.resource
        dx = [dict(x) for x in src["diagnosis"]]
        encounter = src["item"][0].get("encounter", [{}])[0].get("reference")
        info = self.bill(
            org=org,
            prac=prac,
            lines=[x.shifted(shift) for x in original.lines],
            encounter=encounter,
            diagnoses=[x["diagnosisReference"]["reference"] for x in dx if "diagnosisReference" in x],
            diagnosis_codes=tuple(
                x["diagnosisCodeableConcept"]["coding"][0]["code"] for x in dx if "diagnosisCodeableConcept" in x
            ),
            referral=src.get("referral", {}).get("reference"),
            institutional=src["type"]["coding"][0]["code"] == "institutional",
            pattern=pattern,
            not_before=original.created_day + 1,
        )
        return info

    def _respond(self, claim: dict[str, Any], org: Org, created: int, total: int) -> None:
        paid_day = created + 5 + self.d.below(25)
        money = {"value": total, "currency": "KZT"}
        self._add(
            {
                "resourceType": "ClaimResponse",
                "id": self.ids.next(),
                "status": "active",
                "type": claim["type"],
                "use": "claim",
                "patient": {"reference": self.patient_ref},
                "created": day_text(paid_day),
                "insurer": {"reference": self.fsms_ref},
                "requestor": {"reference": org.ref},
                "request": {"reference": self.ref("Claim", claim["id"])},
                "outcome": "complete",
                "disposition": "Claim settled",
                "item": [
                    {
                        "itemSequence": it["sequence"],
                        "adjudication": [
                            {
                                "category": {"coding": [{"system": _ADJUDICATION, "code": "submitted"}]},
                                "amount": it["net"],
                            },
                            {
                                "category": {"coding": [{"system": _ADJUDICATION, "code": "benefit"}]},
                                "amount": it["net"],
                            },
                        ],
                    }
                    for it in claim["item"]
                ],
                "total": [
                    {"category": {"coding": [{"system": _ADJUDICATION, "code": "submitted"}]}, "amount": money},
                    {"category": {"coding": [{"system": _ADJUDICATION, "code": "benefit"}]}, "amount": money},
                ],
                "payment": {
                    "type": {"coding": [{"system": _PAYMENT_TYPE, "code": "complete"}]},
                    "date": day_text(paid_day),
                    "amount": money,
                },
            }
        )

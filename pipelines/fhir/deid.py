"""De-identification of FHIR resources by allow-list (in the manner of cumulus-etl's scrubber).

Only the fields listed in ``ALLOW`` survive; everything else (names, telecom, address lines, narrative ``text``,
notes, conclusions, attachments, unknown extensions, reference displays) is dropped. What survives is transformed:

- resource ids -> keyed pseudonyms ``Pseudonymizer.id(<ResourceType>, id)``;
- identifiers -> ``{system, value: Pseudonymizer.id(kind, value)}`` where kind is ``"iin"`` for every configured IIN
  system (``ingest.iin_systems``; so the patient pseudonym equals the DICOM side's ``Pseudonymizer.id("iin",
  PatientID)`` whichever URI the export uses) and the system URI otherwise; a DICOM study identifier
  ``urn:oid:<uid>`` -> ``urn:oid:<Pseudonymizer.uid(uid)>``;
- references -> ``Type/<pseudonym>``; conditional references keep their form with the identifier value replaced by
  its pseudonym, so they still resolve against the de-identified identifiers;
- Patient.birthDate -> ``YYYY-MM``; deceasedDateTime -> its date; addresses keep only the region (``state`` and the
  region extension), country and the first three characters of the postal code.

This module is the only one that reads national identifiers; it never logs values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines import codes
from pipelines.fhir import dates, refs
from pipelines.fhir.keys import cond_key, id_key
from pipelines.fhir.pseudonym import Pseudonymizer

# Rule tokens for the allow-list interpreter.
KEEP = "keep"  # a primitive or a structure without personal data, kept as it is
REF = "ref"  # Reference
CC = "cc"  # CodeableConcept: codings only (system, code, display); free text dropped
CODING = "coding"
IDENT = "ident"  # Identifier
PERIOD = "period"
QTY = "qty"  # Quantity, SimpleQuantity, Money
BIRTH = "birth"  # date -> YYYY-MM
DATE_ONLY = "date-only"  # dateTime -> YYYY-MM-DD
ADDRESS = "address"
UID = "uid"  # a DICOM UID
Rule = str | Mapping[str, "Rule"]

POSTAL_PREFIX_LEN = 3
DICOM_UID_SYSTEM = "urn:dicom:uid"

_CLINICAL_COMMON: dict[str, Rule] = {"status": KEEP, "subject": REF, "encounter": REF, "identifier": IDENT}

ALLOW: dict[str, dict[str, Rule]] = {
    "Patient": {
        "identifier": IDENT,
        "active": KEEP,
        "gender": KEEP,
        "birthDate": BIRTH,
        "deceasedBoolean": KEEP,
        "deceasedDateTime": DATE_ONLY,
        "address": ADDRESS,
        "managingOrganization": REF,
        "generalPractitioner": REF,
    },
    "Organization": {
        "identifier": IDENT,
        "active": KEEP,
        "type": CC,
        "name": KEEP,  # an institution's name, not a person's
        "address": ADDRESS,
        "partOf": REF,
        "extension": {"url": KEEP, "valueCode": KEEP, "valueString": KEEP, "valueCoding": CODING},
    },
    "Practitioner": {"identifier": IDENT, "active": KEEP, "gender": KEEP, "qualification": {"code": CC}},
    "PractitionerRole": {
        "identifier": IDENT,
        "active": KEEP,
        "practitioner": REF,
        "organization": REF,
        "code": CC,
        "specialty": CC,
        "location": REF,
    },
    "Location": {"identifier": IDENT, "status": KEEP, "type": CC, "address": ADDRESS, "managingOrganization": REF},
    "Coverage": {
        "identifier": IDENT,
        "status": KEEP,
        "type": CC,
        "subscriberId": KEEP,  # replaced by a pseudonym below
        "subscriber": REF,
        "beneficiary": REF,
        "relationship": CC,
        "period": PERIOD,
        "payor": REF,
    },
    "Encounter": {
        **_CLINICAL_COMMON,
        "class": CODING,
        "type": CC,
        "serviceType": CC,
        "priority": CC,
        "participant": {"type": CC, "period": PERIOD, "individual": REF},
        "period": PERIOD,
        "reasonCode": CC,
        "reasonReference": REF,
        "diagnosis": {"condition": REF, "use": CC, "rank": KEEP},
        "hospitalization": {"admitSource": CC, "dischargeDisposition": CC},
        "location": {"location": REF, "status": KEEP},
        "serviceProvider": REF,
        "partOf": REF,
        "episodeOfCare": REF,
        "basedOn": REF,
    },
    "Condition": {
        **_CLINICAL_COMMON,
        "clinicalStatus": CC,
        "verificationStatus": CC,
        "category": CC,
        "severity": CC,
        "code": CC,
        "bodySite": CC,
        "onsetDateTime": KEEP,
        "onsetPeriod": PERIOD,
        "abatementDateTime": KEEP,
        "abatementPeriod": PERIOD,
        "recordedDate": KEEP,
        "recorder": REF,
        "asserter": REF,
    },
    "Observation": {
        **_CLINICAL_COMMON,
        "basedOn": REF,
        "partOf": REF,
        "category": CC,
        "code": CC,
        "focus": REF,
        "effectiveDateTime": KEEP,
        "effectivePeriod": PERIOD,
        "effectiveInstant": KEEP,
        "issued": KEEP,
        "performer": REF,
        "valueQuantity": QTY,
        "valueCodeableConcept": CC,
        "valueBoolean": KEEP,
        "valueInteger": KEEP,
        "dataAbsentReason": CC,
        "interpretation": CC,
        "bodySite": CC,
        "method": CC,
        "device": REF,
        "hasMember": REF,
        "derivedFrom": REF,
        "component": {
            "code": CC,
            "valueQuantity": QTY,
            "valueCodeableConcept": CC,
            "valueBoolean": KEEP,
            "valueInteger": KEEP,
            "dataAbsentReason": CC,
            "interpretation": CC,
        },
    },
    "Procedure": {
        **_CLINICAL_COMMON,
        "basedOn": REF,
        "partOf": REF,
        "category": CC,
        "code": CC,
        "performedDateTime": KEEP,
        "performedPeriod": PERIOD,
        "recorder": REF,
        "asserter": REF,
        "performer": {"function": CC, "actor": REF, "onBehalfOf": REF},
        "location": REF,
        "reasonCode": CC,
        "reasonReference": REF,
        "bodySite": CC,
        "outcome": CC,
    },
    "MedicationRequest": {
        **_CLINICAL_COMMON,
        "intent": KEEP,
        "category": CC,
        "priority": KEEP,
        "medicationCodeableConcept": CC,
        "medicationReference": REF,
        "authoredOn": KEEP,
        "requester": REF,
        "performer": REF,
        "reasonCode": CC,
        "reasonReference": REF,
        "basedOn": REF,
        "dispenseRequest": {"quantity": QTY, "numberOfRepeatsAllowed": KEEP, "expectedSupplyDuration": QTY},
    },
    "ServiceRequest": {
        **_CLINICAL_COMMON,
        "basedOn": REF,
        "replaces": REF,
        "intent": KEEP,
        "category": CC,
        "priority": KEEP,
        "code": CC,
        "occurrenceDateTime": KEEP,
        "occurrencePeriod": PERIOD,
        "authoredOn": KEEP,
        "requester": REF,
        "performerType": CC,
        "performer": REF,
        "reasonCode": CC,
        "reasonReference": REF,
        "insurance": REF,
    },
    "ImagingStudy": {
        **_CLINICAL_COMMON,
        "modality": CODING,
        "started": KEEP,
        "basedOn": REF,
        "referrer": REF,
        "interpreter": REF,
        "numberOfSeries": KEEP,
        "numberOfInstances": KEEP,
        "procedureCode": CC,
        "location": REF,
        "reasonCode": CC,
        "reasonReference": REF,
        "series": {
            "uid": UID,
            "number": KEEP,
            "modality": CODING,
            "numberOfInstances": KEEP,
            "bodySite": CODING,
            "laterality": CODING,
            "started": KEEP,
            "instance": {"uid": UID, "sopClass": CODING, "number": KEEP},
        },
    },
    "DiagnosticReport": {
        **_CLINICAL_COMMON,
        "basedOn": REF,
        "category": CC,
        "code": CC,
        "effectiveDateTime": KEEP,
        "effectivePeriod": PERIOD,
        "issued": KEEP,
        "performer": REF,
        "resultsInterpreter": REF,
        "result": REF,
        "imagingStudy": REF,
        "conclusionCode": CC,
    },
    "Claim": {
        "identifier": IDENT,
        "status": KEEP,
        "type": CC,
        "subType": CC,
        "use": KEEP,
        "patient": REF,
        "billablePeriod": PERIOD,
        "created": KEEP,
        "enterer": REF,
        "insurer": REF,
        "provider": REF,
        "priority": CC,
        "related": {"claim": REF, "relationship": CC, "reference": IDENT},
        "prescription": REF,
        "originalPrescription": REF,
        "referral": REF,
        "facility": REF,
        "careTeam": {"sequence": KEEP, "provider": REF, "responsible": KEEP, "role": CC, "qualification": CC},
        "supportingInfo": {"sequence": KEEP, "category": CC, "code": CC, "valueReference": REF},
        "diagnosis": {
            "sequence": KEEP,
            "diagnosisCodeableConcept": CC,
            "diagnosisReference": REF,
            "type": CC,
            "onAdmission": CC,
        },
        "procedure": {
            "sequence": KEEP,
            "type": CC,
            "date": KEEP,
            "procedureCodeableConcept": CC,
            "procedureReference": REF,
        },
        "insurance": {"sequence": KEEP, "focal": KEEP, "coverage": REF},
        "item": {
            "sequence": KEEP,
            "careTeamSequence": KEEP,
            "diagnosisSequence": KEEP,
            "procedureSequence": KEEP,
            "informationSequence": KEEP,
            "revenue": CC,
            "category": CC,
            "productOrService": CC,
            "modifier": CC,
            "servicedDate": KEEP,
            "servicedPeriod": PERIOD,
            "locationCodeableConcept": CC,
            "locationReference": REF,
            "quantity": QTY,
            "unitPrice": QTY,
            "factor": KEEP,
            "net": QTY,
            "encounter": REF,
        },
        "total": QTY,
    },
    "ClaimResponse": {
        "identifier": IDENT,
        "status": KEEP,
        "type": CC,
        "use": KEEP,
        "patient": REF,
        "created": KEEP,
        "insurer": REF,
        "requestor": REF,
        "request": REF,
        "outcome": KEEP,
        "item": {"itemSequence": KEEP, "adjudication": {"category": CC, "reason": CC, "amount": QTY, "value": KEEP}},
        "total": {"category": CC, "amount": QTY},
        "payment": {"type": CC, "date": KEEP, "amount": QTY, "adjustment": QTY},
    },
    "ExplanationOfBenefit": {
        "identifier": IDENT,
        "status": KEEP,
        "type": CC,
        "use": KEEP,
        "patient": REF,
        "billablePeriod": PERIOD,
        "created": KEEP,
        "insurer": REF,
        "provider": REF,
        "referral": REF,
        "facility": REF,
        "claim": REF,
        "claimResponse": REF,
        "outcome": KEEP,
        "item": {
            "sequence": KEEP,
            "productOrService": CC,
            "servicedDate": KEEP,
            "servicedPeriod": PERIOD,
            "quantity": QTY,
            "unitPrice": QTY,
            "net": QTY,
            "encounter": REF,
            "adjudication": {"category": CC, "reason": CC, "amount": QTY, "value": KEEP},
        },
        "total": {"category": CC, "amount": QTY},
        "payment": {"type": CC, "date": KEEP, "amount": QTY, "adjustment": QTY},
    },
}

# Extensions that survive on the listed structures (everything else is dropped).
_ADDRESS_EXTENSIONS = frozenset({codes.REGION_EXTENSION})
_ORGANIZATION_EXTENSIONS = frozenset({codes.ORG_TYPE_EXTENSION})


@dataclass(frozen=True, slots=True)
class PseudoRef:
    """A reference after de-identification.

    Attributes:
        reference: the de-identified reference string (``Type/<pseudonym>``, a conditional reference with the
            identifier value pseudonymised, or a contained ``#id`` unchanged).
        key: the index key of its target (id key, or conditional key); 0 for a contained reference.
        conditional: whether the key is a conditional key (resolved against identifiers).
    """

    reference: str
    key: int
    conditional: bool


class Pseudonyms:
    """Cached keyed pseudonyms for the de-identifier and the flattener (one instance per process).

    Args:
        pseudonymizer: the keyed HMAC pseudonymizer.
        max_cache: entries kept before the caches are cleared (bounds memory on long runs).
        iin_systems: identifier systems whose values are IINs (``ingest.iin_systems``).
    """

    def __init__(
        self,
        pseudonymizer: Pseudonymizer,
        max_cache: int = 10_000,
        iin_systems: frozenset[str] = codes.DEFAULT_IIN_SYSTEMS,
    ) -> None:
        self._p = pseudonymizer
        self.iin_systems = iin_systems
        self._max = max_cache
        self._resources: dict[tuple[str, str], str] = {}
        self._identifiers: dict[tuple[str, str], str] = {}
        self._references: dict[str, PseudoRef | None] = {}

    def resource(self, rtype: str, rid: str) -> str:
        """Pseudonym of a resource id: ``Pseudonymizer.id(rtype, rid)``."""
        key = (rtype, rid)
        out = self._resources.get(key)
        if out is None:
            if len(self._resources) >= self._max:
                self._resources.clear()
            out = self._resources[key] = self._p.id(rtype, rid)
        return out

    def identifier(self, system: str | None, value: str) -> str:
        """Pseudonym of an identifier value (kind ``iin`` for an IIN system, else the system URI)."""
        key = (system or "", value)
        out = self._identifiers.get(key)
        if out is None:
            if len(self._identifiers) >= self._max:
                self._identifiers.clear()
            out = self._identifiers[key] = self._p.id(identifier_kind(system, self.iin_systems), value)
        return out

    def reference(self, ref: str) -> PseudoRef | None:
        """The de-identified form of a reference string (Bundle fullUrls already mapped); None if unresolvable."""
        try:
            return self._references[ref]
        except KeyError:
            pass
        if len(self._references) >= self._max:
            self._references.clear()
        parsed = refs.parse_reference(ref)
        out: PseudoRef | None = None
        if parsed.kind == refs.LITERAL:
            pid = self.resource(parsed.type, parsed.id)
            out = PseudoRef(f"{parsed.type}/{pid}", id_key(pid), False)
        elif parsed.kind == refs.CONDITIONAL:
            value = self.identifier(parsed.system, parsed.value)
            key = cond_key(parsed.type, parsed.system, value)
            out = PseudoRef(f"{parsed.type}?identifier={parsed.system}|{value}", key, True)
        elif parsed.kind == refs.CONTAINED:
            out = PseudoRef(ref, 0, False)
        self._references[ref] = out
        return out

    def uid(self, uid: str) -> str:
        """A DICOM UID remapped the way the DICOM ingest remaps it."""
        return self._p.uid(uid)


def patient_pseudonyms(pseudonymizer: Pseudonymizer, values: list[str], kind: str) -> list[str]:
    """Pseudonyms of patients named in a hospital's own terms, exactly as ingest makes them.

    Args:
        pseudonymizer: keyed with the ingest key.
        values: source ``Patient.id`` values (``kind="source_id"``: the tables' ``patient_id``) or IINs
            (``kind="iin"``: ``patients.patient_pseudo_id``, shared with DICOM).
        kind: ``source_id`` or ``iin``.
    """
    prefix = "iin" if kind == "iin" else "Patient"
    return [pseudonymizer.id(prefix, value) for value in values]


def identifier_kind(system: str | None, iin_systems: frozenset[str] = codes.DEFAULT_IIN_SYSTEMS) -> str:
    """The pseudonym kind of an identifier system: ``iin`` for an IIN system (shared with DICOM), else the system."""
    if system in iin_systems:
        return "iin"
    return system or "identifier"


def deidentify(
    resource: Mapping[str, Any], pseudonyms: Pseudonyms, fullurls: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return the de-identified copy of a resource (the input is not changed).

    Args:
        resource: a parsed, valid FHIR resource.
        pseudonyms: keyed pseudonyms.
        fullurls: for a resource read from a Bundle, its ``fullUrl`` -> ``Type/id`` map (to resolve urn:uuid).

    Returns:
        ``{resourceType, id, ...allowed fields}``; a type without an allow-list keeps only resourceType and id.
    """
    rtype = resource["resourceType"]
    out: dict[str, Any] = {"resourceType": rtype}
    rid = resource.get("id")
    if isinstance(rid, str):
        out["id"] = pseudonyms.resource(rtype, rid)
    ctx = _Context(pseudonyms, fullurls)
    fields = _compiled(rtype)
    for key, value in resource.items():
        scrub = fields.get(key)
        if scrub is not None:
            clean = scrub(value, ctx)
            if clean is not None:
                out[key] = clean
    if rtype == "Coverage" and isinstance(out.get("subscriberId"), str):
        out["subscriberId"] = pseudonyms.identifier("subscriberId", out["subscriberId"])
    if rtype == "Organization" and "extension" in out:
        out["extension"] = [e for e in out["extension"] if e.get("url") in _ORGANIZATION_EXTENSIONS] or None
        if out["extension"] is None:
            del out["extension"]
    return out


class _Context:
    __slots__ = ("fullurls", "pseudonyms")

    def __init__(self, pseudonyms: Pseudonyms, fullurls: Mapping[str, str] | None) -> None:
        self.pseudonyms = pseudonyms
        self.fullurls = fullurls


Scrub = Callable[[Any, "_Context"], Any]


def _compile(rule: Rule) -> Scrub:
    """Turn an allow-list rule into a function (value, ctx) -> scrubbed value or None; lists map item by item."""
    if isinstance(rule, str):
        one = _TRANSFORMS[rule]
    else:
        fields = {key: _compile(sub) for key, sub in rule.items()}

        def one(value: Any, ctx: _Context) -> Any:
            if not isinstance(value, dict):
                return None
            out = {}
            for key, item in value.items():
                scrub = fields.get(key)
                if scrub is not None:
                    clean = scrub(item, ctx)
                    if clean is not None:
                        out[key] = clean
            return out or None

    def scrub(value: Any, ctx: _Context) -> Any:
        if isinstance(value, list):
            kept = [c for c in (one(v, ctx) for v in value) if c is not None]
            return kept or None
        return one(value, ctx)

    return scrub


def _compiled(rtype: str) -> dict[str, Scrub]:
    return _COMPILED.get(rtype) or {}


def _keep(value: Any, ctx: _Context) -> Any:
    return value


def _coding(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict):
        return None
    out = {k: value[k] for k in ("system", "code", "display") if k in value}
    return out or None


def _cc(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict):
        return None
    codings = [c for c in (_coding(c, ctx) for c in value.get("coding") or ()) if c]
    return {"coding": codings} if codings else None


def _identifier(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict) or not isinstance(value.get("value"), str):
        return None
    system = value.get("system")
    raw = value["value"]
    if system == DICOM_UID_SYSTEM and raw.startswith("urn:oid:"):
        pseudo = "urn:oid:" + ctx.pseudonyms.uid(raw[len("urn:oid:") :])
    else:
        pseudo = ctx.pseudonyms.identifier(system, raw)
    out: dict[str, Any] = {"value": pseudo}
    if system is not None:
        out = {"system": system, "value": pseudo}
    type_cc = _cc(value.get("type"), ctx)
    if type_cc:
        out["type"] = type_cc
    return out


def pseudonymize_reference(ref: str, pseudonyms: Pseudonyms, fullurls: Mapping[str, str] | None = None) -> str | None:
    """The de-identified form of a reference string (None when it cannot resolve)."""
    if fullurls:
        ref = fullurls.get(ref, ref)
    pseudo = pseudonyms.reference(ref)
    return pseudo.reference if pseudo is not None else None


def _reference(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    ref = value.get("reference")
    if isinstance(ref, str):
        pseudo = pseudonymize_reference(ref, ctx.pseudonyms, ctx.fullurls)
        if pseudo is not None:
            out["reference"] = pseudo
    if isinstance(value.get("type"), str):
        out["type"] = value["type"]
    ident = _identifier(value.get("identifier"), ctx)
    if ident:
        out["identifier"] = ident
    return out or None


def _period(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict):
        return None
    out = {k: value[k] for k in ("start", "end") if isinstance(value.get(k), str)}
    return out or None


def _quantity(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict):
        return None
    out = {k: value[k] for k in ("value", "comparator", "unit", "system", "code", "currency") if k in value}
    return out or None


def _birth(value: Any, ctx: _Context) -> Any:
    return dates.year_month(value) or (value[0:4] if isinstance(value, str) and len(value) >= 4 else None)


def _date_only(value: Any, ctx: _Context) -> Any:
    return value[0:10] if isinstance(value, str) else None


def _address(value: Any, ctx: _Context) -> Any:
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {k: value[k] for k in ("use", "type", "state", "country") if isinstance(value.get(k), str)}
    postal = value.get("postalCode")
    if isinstance(postal, str) and postal:
        out["postalCode"] = postal[:POSTAL_PREFIX_LEN]
    extensions = [
        {"url": e["url"], "valueCode": e["valueCode"]}
        for e in value.get("extension") or ()
        if isinstance(e, dict) and e.get("url") in _ADDRESS_EXTENSIONS and isinstance(e.get("valueCode"), str)
    ]
    if extensions:
        out["extension"] = extensions
    return out or None


def _uid(value: Any, ctx: _Context) -> Any:
    return ctx.pseudonyms.uid(value) if isinstance(value, str) else None


_TRANSFORMS = {
    KEEP: _keep,
    REF: _reference,
    CC: _cc,
    CODING: _coding,
    IDENT: _identifier,
    PERIOD: _period,
    QTY: _quantity,
    BIRTH: _birth,
    DATE_ONLY: _date_only,
    ADDRESS: _address,
    UID: _uid,
}

# The allow-list compiled once (read-only after import).
_COMPILED: dict[str, dict[str, Scrub]] = {
    rtype: {key: _compile(rule) for key, rule in fields.items()} for rtype, fields in ALLOW.items()
}

"""Flatten de-identified resources into table rows (one row per resource, or per claim item / component).

Rows are dicts keyed by the columns of ``pipelines.fhir.schema``. A reference column holds the target's pseudonym
when the reference is literal; for a conditional reference it is empty and ``<column>__ck`` holds the key that the
second pass resolves. ``__event`` carries the event date (YYYYMMDD) from which the second pass computes
``age_at_event``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelines import codes
from pipelines.fhir import dates
from pipelines.fhir.keys import cond_key
from pipelines.fhir.schema import CK_SUFFIX, EVENT

Row = dict[str, Any]


def reference_target(ref: Any, default_type: str | None = None) -> tuple[str | None, str | None, int]:
    """(target type, pseudonym or None, conditional key or 0) of a de-identified Reference.

    A logical reference (``identifier`` without ``reference``) is looked up like a conditional one, with its
    ``type`` or ``default_type`` as the target type.
    """
    if not isinstance(ref, dict):
        return None, None, 0
    value = ref.get("reference")
    if not isinstance(value, str):
        ident = ref.get("identifier")
        rtype = ref.get("type") or default_type
        if isinstance(ident, dict) and isinstance(ident.get("value"), str) and rtype:
            return rtype, None, cond_key(rtype, ident.get("system") or "", ident["value"])
        return None, None, 0
    rtype, sep, rest = value.partition("?identifier=")
    if sep:
        system, _, pseudo = rest.partition("|")
        return rtype, None, cond_key(rtype, system, pseudo)
    rtype, sep, pid = value.partition("/")
    if sep and "/" not in pid:
        return rtype, pid, 0
    return None, None, 0


def _set_ref(row: Row, column: str, ref: Any, want: str | None = None, default: str | None = None) -> str | None:
    rtype, pid, ck = reference_target(ref, default or want)
    if want is not None and rtype != want:
        pid, ck = None, 0
    row[column] = pid
    row[column + CK_SUFFIX] = ck
    return rtype


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _coding(cc: Any, system: str | None = None) -> tuple[str | None, str | None]:
    """(system, code) of the first coding of a CodeableConcept (of ``system`` when given)."""
    cc = _first(cc)
    if not isinstance(cc, dict):
        return None, None
    for coding in cc.get("coding") or ():
        if system is None or coding.get("system") == system:
            return coding.get("system"), coding.get("code")
    return None, None


def _code(cc: Any, system: str | None = None) -> str | None:
    return _coding(cc, system)[1]


def _number(quantity: Any) -> float | None:
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        return float(quantity["value"])
    return None


def _event(value: Any) -> int:
    bounds = dates.ymd_bounds(value)
    return bounds[0] if bounds else 0


def _period(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _region(address: Any) -> tuple[str | None, str | None]:
    address = _first(address)
    if not isinstance(address, dict):
        return None, None
    region = address.get("state")
    for ext in address.get("extension") or ():
        if ext.get("url") == codes.REGION_EXTENSION:
            region = ext.get("valueCode")
    return region, address.get("postalCode")


def _ident_value(resource: dict[str, Any]) -> str | None:
    ident = _first(resource.get("identifier"))
    return ident.get("value") if isinstance(ident, dict) else None


class Flattener:
    """Turns de-identified resources into rows of the ingest tables.

    Args:
        fund_identifier: pseudonym of the Fund's organization identifier (``FSMS``), to mark ``is_fund``.
        iin_systems: identifier systems whose (pseudonymised) values are IINs: the first fills
            ``patient_pseudo_id``.
    """

    def __init__(self, fund_identifier: str | None, iin_systems: frozenset[str] = codes.DEFAULT_IIN_SYSTEMS) -> None:
        self._fund = fund_identifier
        self._iin_systems = iin_systems
        self._by_type: dict[str, Callable[[dict[str, Any]], dict[str, list[Row]]]] = {
            "Patient": self._patient,
            "Organization": self._organization,
            "Practitioner": self._practitioner,
            "PractitionerRole": self._practitioner_role,
            "Coverage": self._coverage,
            "Encounter": self._encounter,
            "Condition": self._condition,
            "Observation": self._observation,
            "Procedure": self._procedure,
            "MedicationRequest": self._medication_request,
            "ServiceRequest": self._service_request,
            "ImagingStudy": self._imaging_study,
            "DiagnosticReport": self._diagnostic_report,
            "Claim": self._claim,
            "ClaimResponse": self._claim_response,
            "ExplanationOfBenefit": self._claim_response,
        }

    def rows(self, resource: dict[str, Any]) -> dict[str, list[Row]]:
        """Rows per table for one de-identified resource (empty for types Shipa does not tabulate)."""
        fn = self._by_type.get(resource["resourceType"])
        return fn(resource) if fn is not None else {}

    def _patient(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        iin_pseudo = None
        for ident in r.get("identifier") or ():
            if ident.get("system") in self._iin_systems:
                iin_pseudo = ident.get("value")
                break
        birth = r.get("birthDate")
        region, postal = _region(r.get("address"))
        deceased_dt = r.get("deceasedDateTime")
        row: Row = {
            "patient_id": r["id"],
            "patient_pseudo_id": iin_pseudo,
            "sex": r.get("gender"),
            "birth_year_month": dates.year_month(birth),
            "birth_year": int(birth[0:4]) if isinstance(birth, str) and len(birth) >= 4 else None,
            "deceased": True if deceased_dt else r.get("deceasedBoolean"),
            "deceased_date": dates.to_date(deceased_dt),
            "region": region,
            "postal_prefix": postal,
        }
        _set_ref(row, "managing_organization_id", r.get("managingOrganization"), default="Organization")
        return {"patients": [row]}

    def _organization(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        region, postal = _region(r.get("address"))
        kind = None
        for ext in r.get("extension") or ():
            if ext.get("url") == codes.ORG_TYPE_EXTENSION:
                kind = ext.get("valueCode") or ext.get("valueString") or (ext.get("valueCoding") or {}).get("code")
        is_fund = False
        first_ident = None
        for ident in r.get("identifier") or ():
            if first_ident is None:
                first_ident = ident.get("value")
            if ident.get("system") == codes.ORG_ID_SYSTEM and ident.get("value") == self._fund:
                is_fund = True
        row: Row = {
            "organization_id": r["id"],
            "identifier_pseudo": first_ident,
            "is_fund": is_fund,
            "kind": kind,
            "type_code": _code(r.get("type")),
            "name": r.get("name"),
            "region": region,
            "postal_prefix": postal,
            "active": r.get("active"),
        }
        _set_ref(row, "part_of_id", r.get("partOf"))
        return {"organizations": [row]}

    def _practitioner(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        qual = _first(r.get("qualification"))
        row: Row = {
            "practitioner_id": r["id"],
            "identifier_pseudo": _ident_value(r),
            "gender": r.get("gender"),
            "qualification_code": _code(qual.get("code")) if isinstance(qual, dict) else None,
            "active": r.get("active"),
        }
        return {"practitioners": [row]}

    def _practitioner_role(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        row: Row = {
            "practitioner_role_id": r["id"],
            "role_code": _code(r.get("code")),
            "specialty_code": _code(r.get("specialty")),
            "active": r.get("active"),
        }
        _set_ref(row, "practitioner_id", r.get("practitioner"), default="Practitioner")
        _set_ref(row, "organization_id", r.get("organization"), default="Organization")
        return {"practitioner_roles": [row]}

    def _coverage(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        period = r.get("period")
        row: Row = {
            "coverage_id": r["id"],
            "status": r.get("status"),
            "type_code": _code(r.get("type")),
            "period_start": dates.to_utc(_period(period, "start")),
            "period_end": dates.to_utc(_period(period, "end")),
            "subscriber_pseudo": r.get("subscriberId"),
        }
        _set_ref(row, "patient_id", r.get("beneficiary"))
        _set_ref(row, "payor_id", _first(r.get("payor")), default="Organization")
        return {"coverage": [row]}

    def _encounter(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        period = r.get("period")
        type_system, type_code = _coding(r.get("type"))
        participant = _first(r.get("participant"))
        row: Row = {
            "encounter_id": r["id"],
            "status": r.get("status"),
            "class_code": (r.get("class") or {}).get("code"),
            "type_system": type_system,
            "type_code": type_code,
            "reason_code": _code(r.get("reasonCode")),
            "period_start": dates.to_utc(_period(period, "start")),
            "period_end": dates.to_utc(_period(period, "end")),
            EVENT: _event(_period(period, "start")),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "organization_id", r.get("serviceProvider"), default="Organization")
        _set_ref(row, "practitioner_id", participant.get("individual") if isinstance(participant, dict) else None)
        return {"encounters": [row]}

    def _condition(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        system, code = _coding(r.get("code"))
        onset = r.get("onsetDateTime") or _period(r.get("onsetPeriod"), "start")
        row: Row = {
            "condition_id": r["id"],
            "icd10_code": _code(r.get("code"), codes.ICD10),
            "code_system": system,
            "code": code,
            "clinical_status": _code(r.get("clinicalStatus")),
            "verification_status": _code(r.get("verificationStatus")),
            "category": _code(r.get("category")),
            "onset": dates.to_utc(onset),
            "recorded_date": dates.to_date(r.get("recordedDate")),
            EVENT: _event(onset),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "encounter_id", r.get("encounter"))
        return {"conditions": [row]}

    def _observation(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        effective = (
            r.get("effectiveDateTime") or _period(r.get("effectivePeriod"), "start") or r.get("effectiveInstant")
        )
        base: Row = {
            "observation_id": r["id"],
            "status": r.get("status"),
            "category": _code(r.get("category")),
            "effective": dates.to_utc(effective),
            EVENT: _event(effective),
        }
        _set_ref(base, "patient_id", r.get("subject"))
        _set_ref(base, "encounter_id", r.get("encounter"))
        rows = [{**base, "component_index": 0, **_observation_value(r)}]
        for i, component in enumerate(r.get("component") or (), start=1):
            rows.append({**base, "component_index": i, **_observation_value(component)})
        return {"observations": rows}

    def _procedure(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        system, code = _coding(r.get("code"))
        start = r.get("performedDateTime") or _period(r.get("performedPeriod"), "start")
        row: Row = {
            "procedure_id": r["id"],
            "status": r.get("status"),
            "tariff_code": _code(r.get("code"), codes.TARIFF),
            "code_system": system,
            "code": code,
            "performed_start": dates.to_utc(start),
            "performed_end": dates.to_utc(_period(r.get("performedPeriod"), "end")),
            EVENT: _event(start),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "encounter_id", r.get("encounter"))
        return {"procedures": [row]}

    def _medication_request(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        system, code = _coding(r.get("medicationCodeableConcept"))
        row: Row = {
            "medication_request_id": r["id"],
            "status": r.get("status"),
            "intent": r.get("intent"),
            "atc_code": _code(r.get("medicationCodeableConcept"), codes.ATC),
            "code_system": system,
            "code": code,
            "authored_on": dates.to_utc(r.get("authoredOn")),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "encounter_id", r.get("encounter"))
        _set_ref(row, "requester_id", r.get("requester"))
        return {"medication_requests": [row]}

    def _service_request(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        system, code = _coding(r.get("code"))
        row: Row = {
            "service_request_id": r["id"],
            "status": r.get("status"),
            "intent": r.get("intent"),
            "code_system": system,
            "code": code,
            "authored_on": dates.to_utc(r.get("authoredOn")),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "encounter_id", r.get("encounter"))
        row["requester_type"] = _set_ref(row, "requester_id", r.get("requester"))
        row["performer_type"] = _set_ref(row, "performer_id", _first(r.get("performer")))
        return {"service_requests": [row]}

    def _imaging_study(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        study_uid = None
        for ident in r.get("identifier") or ():
            value = ident.get("value")
            if isinstance(value, str) and value.startswith("urn:oid:"):
                study_uid = value[len("urn:oid:") :]
                break
        modality = _first(r.get("modality"))
        if not isinstance(modality, dict):
            series = _first(r.get("series"))
            modality = series.get("modality") if isinstance(series, dict) else None
        row: Row = {
            "imaging_study_id": r["id"],
            "study_uid": study_uid,
            "status": r.get("status"),
            "modality": modality.get("code") if isinstance(modality, dict) else None,
            "started": dates.to_utc(r.get("started")),
            "number_of_series": r.get("numberOfSeries"),
            "number_of_instances": r.get("numberOfInstances"),
            "image_count": None,
            EVENT: _event(r.get("started")),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "encounter_id", r.get("encounter"))
        return {"imaging_studies": [row]}

    def _diagnostic_report(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        effective = r.get("effectiveDateTime") or _period(r.get("effectivePeriod"), "start")
        conclusion = [c.get("code") for cc in r.get("conclusionCode") or () for c in cc.get("coding") or ()]
        icd = [
            c.get("code")
            for cc in r.get("conclusionCode") or ()
            for c in cc.get("coding") or ()
            if c.get("system") == codes.ICD10
        ]
        row: Row = {
            "diagnostic_report_id": r["id"],
            "status": r.get("status"),
            "loinc_code": _code(r.get("code"), codes.LOINC),
            "code": _code(r.get("code")),
            "conclusion_code": icd[0] if icd else None,
            "conclusion_codes": [c for c in conclusion if isinstance(c, str)],
            "effective": dates.to_utc(effective),
            "issued": dates.to_utc(r.get("issued")),
            "result_count": len(r.get("result") or ()),
        }
        _set_ref(row, "patient_id", r.get("subject"))
        _set_ref(row, "encounter_id", r.get("encounter"))
        _set_ref(row, "imaging_study_id", _first(r.get("imagingStudy")))
        return {"diagnostic_reports": [row]}

    def _claim(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        items = r.get("item") or []
        diagnoses = [d for d in r.get("diagnosis") or () if isinstance(d, dict)]
        diag_codes = [_code(d.get("diagnosisCodeableConcept")) for d in diagnoses]
        icd = [_code(d.get("diagnosisCodeableConcept"), codes.ICD10) for d in diagnoses]
        icd = [c for c in icd if c]
        encounter = next((_first(i.get("encounter")) for i in items if i.get("encounter")), None)
        billable = r.get("billablePeriod")
        total = r.get("total")
        row: Row = {
            "claim_id": r["id"],
            "claim_identifier": _ident_value(r),
            "status": r.get("status"),
            "use": r.get("use"),
            "type_code": _code(r.get("type")),
            "created": dates.to_utc(r.get("created")),
            "billable_start": dates.to_utc(_period(billable, "start")),
            "billable_end": dates.to_utc(_period(billable, "end")),
            "total": _number(total),
            "currency": total.get("currency") if isinstance(total, dict) else None,
            "primary_diagnosis": icd[0] if icd else None,
            "diagnosis_codes": [c for c in diag_codes if isinstance(c, str)],
            "related_claim_ids": _literal_ids(rel.get("claim") for rel in r.get("related") or ()),
            "care_team_ids": _literal_ids(ct.get("provider") for ct in r.get("careTeam") or ()),
            "item_count": len(items),
            EVENT: _event(r.get("created")),
        }
        _set_ref(row, "patient_id", r.get("patient"))
        _set_ref(row, "encounter_id", encounter)
        _set_ref(row, "provider_id", r.get("provider"), want="Organization")
        _set_ref(row, "provider_practitioner_id", r.get("provider"), want="Practitioner")
        _set_ref(row, "insurer_id", r.get("insurer"), default="Organization")
        _set_ref(row, "facility_id", r.get("facility"))
        _set_ref(row, "referral_id", r.get("referral"))
        item_rows = []
        for item in items:
            system, code = _coding(item.get("productOrService"))
            serviced = item.get("servicedDate") or _period(item.get("servicedPeriod"), "start") or r.get("created")
            quantity = _number(item.get("quantity"))
            item_row: Row = {
                "claim_id": r["id"],
                "item_sequence": item.get("sequence"),
                "tariff_code": _code(item.get("productOrService"), codes.TARIFF),
                "code_system": system,
                "code": code,
                "quantity": 1.0 if quantity is None else quantity,
                "unit_price": _number(item.get("unitPrice")),
                "net": _number(item.get("net")),
                "serviced_date": dates.to_date(serviced),
            }
            for column in ("patient_id", "provider_id"):
                item_row[column] = row[column]
                item_row[column + CK_SUFFIX] = row[column + CK_SUFFIX]
            _set_ref(item_row, "encounter_id", _first(item.get("encounter")))
            item_rows.append(item_row)
        return {"claims": [row], "claim_items": item_rows}

    def _claim_response(self, r: dict[str, Any]) -> dict[str, list[Row]]:
        total = _first(r.get("total"))
        payment = r.get("payment")
        payment = payment if isinstance(payment, dict) else {}
        row: Row = {
            "claim_response_id": r["id"],
            "resource_type": r["resourceType"],
            "status": r.get("status"),
            "outcome": r.get("outcome"),
            "created": dates.to_utc(r.get("created")),
            "total_amount": _number(total.get("amount")) if isinstance(total, dict) else None,
            "payment_amount": _number(payment.get("amount")),
            "payment_date": dates.to_date(payment.get("date")),
        }
        claim = r.get("request") if r["resourceType"] == "ClaimResponse" else r.get("claim")
        _set_ref(row, "claim_id", claim)
        _set_ref(row, "patient_id", r.get("patient"))
        _set_ref(row, "insurer_id", r.get("insurer"), default="Organization")
        return {"claim_responses": [row]}


def _observation_value(part: dict[str, Any]) -> Row:
    system, code = _coding(part.get("code"))
    quantity = part.get("valueQuantity")
    value = _number(quantity)
    if value is None and isinstance(part.get("valueInteger"), int):
        value = float(part["valueInteger"])
    unit = None
    if isinstance(quantity, dict):
        unit = quantity.get("code") or quantity.get("unit")
    return {
        "loinc_code": _code(part.get("code"), codes.LOINC),
        "code_system": system,
        "code": code,
        "value": value,
        "unit": unit,
        "value_code": _code(part.get("valueCodeableConcept")),
    }


def _literal_ids(references: Any) -> list[str]:
    out = []
    for ref in references:
        pid = reference_target(ref)[1]
        if pid is not None:
            out.append(pid)
    return out

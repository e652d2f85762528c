"""Explicit pyarrow schemas of the ingest tables (``<output>/tables/<name>.parquet``), documented in docs/tables.md.

Keys are keyed pseudonyms (32 hex characters): ``<table>_id`` = ``Pseudonymizer.id(<ResourceType>, id)``; a
foreign key holds the pseudonym of the resource it references. ``patients.patient_pseudo_id`` is
``Pseudonymizer.id("iin", IIN)``, the same value as the DICOM manifest's ``patient_pseudo_id``. Timestamps are UTC.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
STR = pa.string()
STR_LIST = pa.list_(pa.string())


def _f(name: str, dtype: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, dtype, nullable=True, metadata={"doc": doc})


@dataclass(frozen=True)
class TableSpec:
    """A table: its schema, the columns that hold references, and whether it carries ``age_at_event``.

    Attributes:
        name: table (and file) name.
        schema: the final schema, in column order.
        ref_columns: columns filled from a reference; a conditional reference is resolved in the second pass.
        event_age: whether ``age_at_event`` is computed (patient's birth date -> event date, whole years).
    """

    name: str
    schema: pa.Schema
    ref_columns: tuple[str, ...] = ()
    event_age: bool = False


AGE = _f("age_at_event", pa.int16(), "whole years between the patient's full birth date and the event date")

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "patients",
            pa.schema(
                [
                    _f("patient_id", STR, "pseudonym of the Patient resource id"),
                    _f("patient_pseudo_id", STR, "Pseudonymizer.id('iin', IIN): joins DICOM; null without an IIN"),
                    _f("sex", STR, "Patient.gender"),
                    _f("birth_year_month", STR, "YYYY-MM of Patient.birthDate (the day is dropped)"),
                    _f("birth_year", pa.int16(), "year of Patient.birthDate"),
                    _f("deceased", pa.bool_(), "deceasedBoolean, or true when deceasedDateTime is present"),
                    _f("deceased_date", pa.date32(), "date of Patient.deceasedDateTime"),
                    _f("region", STR, "region code of address[0] (region extension, else state)"),
                    _f("postal_prefix", STR, "first three characters of address[0].postalCode"),
                    _f("managing_organization_id", STR, "Patient.managingOrganization"),
                ]
            ),
            ref_columns=("managing_organization_id",),
        ),
        TableSpec(
            "organizations",
            pa.schema(
                [
                    _f("organization_id", STR, "pseudonym of the Organization resource id"),
                    _f("identifier_pseudo", STR, "pseudonym of the first identifier (provider registry number)"),
                    _f("is_fund", pa.bool_(), "the Social Health Insurance Fund (identifier FSMS)"),
                    _f("kind", STR, "organization-kind extension (polyclinic, hospital, fund...)"),
                    _f("type_code", STR, "first Organization.type code"),
                    _f("name", STR, "institution name (not personal data)"),
                    _f("region", STR, "region code of address[0]"),
                    _f("postal_prefix", STR, "first three characters of address[0].postalCode"),
                    _f("part_of_id", STR, "Organization.partOf"),
                    _f("active", pa.bool_(), "Organization.active"),
                ]
            ),
            ref_columns=("part_of_id",),
        ),
        TableSpec(
            "practitioners",
            pa.schema(
                [
                    _f("practitioner_id", STR, "pseudonym of the Practitioner resource id"),
                    _f("identifier_pseudo", STR, "pseudonym of the first identifier"),
                    _f("gender", STR, "Practitioner.gender"),
                    _f("qualification_code", STR, "first qualification code"),
                    _f("active", pa.bool_(), "Practitioner.active"),
                ]
            ),
        ),
        TableSpec(
            "practitioner_roles",
            pa.schema(
                [
                    _f("practitioner_role_id", STR, "pseudonym of the PractitionerRole resource id"),
                    _f("practitioner_id", STR, "PractitionerRole.practitioner"),
                    _f("organization_id", STR, "PractitionerRole.organization (staff count per provider)"),
                    _f("role_code", STR, "first code"),
                    _f("specialty_code", STR, "first specialty code"),
                    _f("active", pa.bool_(), "PractitionerRole.active"),
                ]
            ),
            ref_columns=("practitioner_id", "organization_id"),
        ),
        TableSpec(
            "coverage",
            pa.schema(
                [
                    _f("coverage_id", STR, "pseudonym of the Coverage resource id"),
                    _f("patient_id", STR, "Coverage.beneficiary"),
                    _f("payor_id", STR, "first Coverage.payor"),
                    _f("status", STR, "Coverage.status"),
                    _f("type_code", STR, "first Coverage.type code"),
                    _f("period_start", TS, "Coverage.period.start"),
                    _f("period_end", TS, "Coverage.period.end"),
                    _f("subscriber_pseudo", STR, "pseudonym of Coverage.subscriberId"),
                ]
            ),
            ref_columns=("patient_id", "payor_id"),
        ),
        TableSpec(
            "encounters",
            pa.schema(
                [
                    _f("encounter_id", STR, "pseudonym of the Encounter resource id"),
                    _f("patient_id", STR, "Encounter.subject"),
                    _f("organization_id", STR, "Encounter.serviceProvider"),
                    _f("practitioner_id", STR, "first participant.individual"),
                    _f("status", STR, "Encounter.status"),
                    _f("class_code", STR, "Encounter.class.code (AMB, EMER, IMP...)"),
                    _f("type_system", STR, "system of the first Encounter.type coding"),
                    _f("type_code", STR, "code of the first Encounter.type coding"),
                    _f("reason_code", STR, "first reasonCode code"),
                    _f("period_start", TS, "Encounter.period.start"),
                    _f("period_end", TS, "Encounter.period.end"),
                    AGE,
                ]
            ),
            ref_columns=("patient_id", "organization_id", "practitioner_id"),
            event_age=True,
        ),
        TableSpec(
            "conditions",
            pa.schema(
                [
                    _f("condition_id", STR, "pseudonym of the Condition resource id"),
                    _f("patient_id", STR, "Condition.subject"),
                    _f("encounter_id", STR, "Condition.encounter"),
                    _f("icd10_code", STR, "first ICD-10 code of Condition.code (null when coded otherwise)"),
                    _f("code_system", STR, "system of the first coding"),
                    _f("code", STR, "code of the first coding"),
                    _f("clinical_status", STR, "clinicalStatus code"),
                    _f("verification_status", STR, "verificationStatus code"),
                    _f("category", STR, "first category code"),
                    _f("onset", TS, "onsetDateTime or onsetPeriod.start"),
                    _f("recorded_date", pa.date32(), "date of Condition.recordedDate"),
                    AGE,
                ]
            ),
            ref_columns=("patient_id", "encounter_id"),
            event_age=True,
        ),
        TableSpec(
            "observations",
            pa.schema(
                [
                    _f("observation_id", STR, "pseudonym of the Observation resource id"),
                    _f("component_index", pa.int16(), "0 for the observation's own value, n for component n"),
                    _f("patient_id", STR, "Observation.subject"),
                    _f("encounter_id", STR, "Observation.encounter"),
                    _f("status", STR, "Observation.status"),
                    _f("category", STR, "first category code"),
                    _f("loinc_code", STR, "first LOINC code (of the component for component rows)"),
                    _f("code_system", STR, "system of the first coding"),
                    _f("code", STR, "code of the first coding"),
                    _f("value", pa.float64(), "valueQuantity.value (or valueInteger)"),
                    _f("unit", STR, "UCUM code (else unit) of valueQuantity"),
                    _f("value_code", STR, "first code of valueCodeableConcept"),
                    _f("effective", TS, "effectiveDateTime / effectivePeriod.start / effectiveInstant"),
                    AGE,
                ]
            ),
            ref_columns=("patient_id", "encounter_id"),
            event_age=True,
        ),
        TableSpec(
            "procedures",
            pa.schema(
                [
                    _f("procedure_id", STR, "pseudonym of the Procedure resource id"),
                    _f("patient_id", STR, "Procedure.subject"),
                    _f("encounter_id", STR, "Procedure.encounter"),
                    _f("status", STR, "Procedure.status"),
                    _f("tariff_code", STR, "tariff code of Procedure.code"),
                    _f("code_system", STR, "system of the first coding"),
                    _f("code", STR, "code of the first coding"),
                    _f("performed_start", TS, "performedDateTime or performedPeriod.start"),
                    _f("performed_end", TS, "performedPeriod.end"),
                    AGE,
                ]
            ),
            ref_columns=("patient_id", "encounter_id"),
            event_age=True,
        ),
        TableSpec(
            "medication_requests",
            pa.schema(
                [
                    _f("medication_request_id", STR, "pseudonym of the MedicationRequest resource id"),
                    _f("patient_id", STR, "MedicationRequest.subject"),
                    _f("encounter_id", STR, "MedicationRequest.encounter"),
                    _f("requester_id", STR, "MedicationRequest.requester"),
                    _f("status", STR, "MedicationRequest.status"),
                    _f("intent", STR, "MedicationRequest.intent"),
                    _f("atc_code", STR, "ATC code of medicationCodeableConcept"),
                    _f("code_system", STR, "system of the first coding"),
                    _f("code", STR, "code of the first coding"),
                    _f("authored_on", TS, "MedicationRequest.authoredOn"),
                ]
            ),
            ref_columns=("patient_id", "encounter_id", "requester_id"),
        ),
        TableSpec(
            "service_requests",
            pa.schema(
                [
                    _f("service_request_id", STR, "pseudonym of the ServiceRequest resource id (referrals)"),
                    _f("patient_id", STR, "ServiceRequest.subject"),
                    _f("encounter_id", STR, "ServiceRequest.encounter"),
                    _f("requester_id", STR, "ServiceRequest.requester"),
                    _f("requester_type", STR, "resource type of the requester"),
                    _f("performer_id", STR, "first ServiceRequest.performer"),
                    _f("performer_type", STR, "resource type of the performer"),
                    _f("status", STR, "ServiceRequest.status"),
                    _f("intent", STR, "ServiceRequest.intent"),
                    _f("code_system", STR, "system of the first code coding"),
                    _f("code", STR, "code of the first code coding"),
                    _f("authored_on", TS, "ServiceRequest.authoredOn"),
                ]
            ),
            ref_columns=("patient_id", "encounter_id", "requester_id", "performer_id"),
        ),
        TableSpec(
            "imaging_studies",
            pa.schema(
                [
                    _f("imaging_study_id", STR, "pseudonym of the ImagingStudy resource id"),
                    _f("patient_id", STR, "ImagingStudy.subject"),
                    _f("encounter_id", STR, "ImagingStudy.encounter"),
                    _f("study_uid", STR, "Pseudonymizer.uid(StudyInstanceUID) from identifier urn:oid: (joins DICOM)"),
                    _f("status", STR, "ImagingStudy.status"),
                    _f("modality", STR, "first modality (else first series modality) code"),
                    _f("started", TS, "ImagingStudy.started"),
                    _f("number_of_series", pa.int32(), "ImagingStudy.numberOfSeries"),
                    _f("number_of_instances", pa.int32(), "ImagingStudy.numberOfInstances"),
                    _f("image_count", pa.int32(), "DICOM images ingested for this study uid"),
                    AGE,
                ]
            ),
            ref_columns=("patient_id", "encounter_id"),
            event_age=True,
        ),
        TableSpec(
            "diagnostic_reports",
            pa.schema(
                [
                    _f("diagnostic_report_id", STR, "pseudonym of the DiagnosticReport resource id"),
                    _f("patient_id", STR, "DiagnosticReport.subject"),
                    _f("encounter_id", STR, "DiagnosticReport.encounter"),
                    _f("imaging_study_id", STR, "first DiagnosticReport.imagingStudy"),
                    _f("status", STR, "DiagnosticReport.status"),
                    _f("loinc_code", STR, "first LOINC code of DiagnosticReport.code"),
                    _f("code", STR, "code of the first coding"),
                    _f("conclusion_code", STR, "first ICD-10 conclusionCode"),
                    _f("conclusion_codes", STR_LIST, "every conclusionCode code (any system)"),
                    _f("effective", TS, "effectiveDateTime or effectivePeriod.start"),
                    _f("issued", TS, "DiagnosticReport.issued"),
                    _f("result_count", pa.int32(), "number of result references"),
                ]
            ),
            ref_columns=("patient_id", "encounter_id", "imaging_study_id"),
        ),
        TableSpec(
            "claims",
            pa.schema(
                [
                    _f("claim_id", STR, "pseudonym of the Claim resource id"),
                    _f("claim_identifier", STR, "pseudonym of the first Claim.identifier"),
                    _f("patient_id", STR, "Claim.patient"),
                    _f("encounter_id", STR, "first item.encounter (null: no encounter behind the claim)"),
                    _f("provider_id", STR, "Claim.provider when it is an Organization"),
                    _f("provider_practitioner_id", STR, "Claim.provider when it is a Practitioner"),
                    _f("insurer_id", STR, "Claim.insurer"),
                    _f("facility_id", STR, "Claim.facility"),
                    _f("status", STR, "Claim.status"),
                    _f("use", STR, "Claim.use"),
                    _f("type_code", STR, "Claim.type code"),
                    _f("created", TS, "Claim.created"),
                    _f("billable_start", TS, "billablePeriod.start"),
                    _f("billable_end", TS, "billablePeriod.end"),
                    _f("total", pa.float64(), "Claim.total.value"),
                    _f("currency", STR, "Claim.total.currency"),
                    _f("primary_diagnosis", STR, "first ICD-10 diagnosis code"),
                    _f("diagnosis_codes", STR_LIST, "every diagnosisCodeableConcept code"),
                    _f("referral_id", STR, "Claim.referral (a ServiceRequest)"),
                    _f("related_claim_ids", STR_LIST, "Claim.related.claim"),
                    _f("care_team_ids", STR_LIST, "Claim.careTeam.provider"),
                    _f("item_count", pa.int32(), "number of items"),
                    AGE,
                ]
            ),
            ref_columns=(
                "patient_id",
                "encounter_id",
                "provider_id",
                "provider_practitioner_id",
                "insurer_id",
                "facility_id",
                "referral_id",
            ),
            event_age=True,
        ),
        TableSpec(
            "claim_items",
            pa.schema(
                [
                    _f("claim_id", STR, "the item's Claim"),
                    _f("item_sequence", pa.int32(), "Claim.item.sequence"),
                    _f("patient_id", STR, "Claim.patient (repeated for convenience)"),
                    _f("provider_id", STR, "Claim.provider when an Organization (repeated)"),
                    _f("encounter_id", STR, "first item.encounter"),
                    _f("tariff_code", STR, "tariff code of productOrService"),
                    _f("code_system", STR, "system of the first productOrService coding"),
                    _f("code", STR, "code of the first productOrService coding"),
                    _f("quantity", pa.float64(), "item.quantity.value (1 when absent)"),
                    _f("unit_price", pa.float64(), "item.unitPrice.value"),
                    _f("net", pa.float64(), "item.net.value"),
                    _f("serviced_date", pa.date32(), "servicedDate or servicedPeriod.start (else Claim.created)"),
                ]
            ),
            ref_columns=("patient_id", "provider_id", "encounter_id"),
        ),
        TableSpec(
            "claim_responses",
            pa.schema(
                [
                    _f("claim_response_id", STR, "pseudonym of the ClaimResponse / ExplanationOfBenefit id"),
                    _f("resource_type", STR, "ClaimResponse or ExplanationOfBenefit"),
                    _f("claim_id", STR, "ClaimResponse.request / ExplanationOfBenefit.claim"),
                    _f("patient_id", STR, "patient"),
                    _f("insurer_id", STR, "insurer"),
                    _f("status", STR, "status"),
                    _f("outcome", STR, "outcome (queued, complete, error, partial)"),
                    _f("created", TS, "created"),
                    _f("total_amount", pa.float64(), "first total.amount.value"),
                    _f("payment_amount", pa.float64(), "payment.amount.value"),
                    _f("payment_date", pa.date32(), "payment.date"),
                ]
            ),
            ref_columns=("claim_id", "patient_id", "insurer_id"),
        ),
    )
}

# Which table each resource type feeds.
RESOURCE_TABLES: dict[str, tuple[str, ...]] = {
    "Patient": ("patients",),
    "Organization": ("organizations",),
    "Practitioner": ("practitioners",),
    "PractitionerRole": ("practitioner_roles",),
    "Coverage": ("coverage",),
    "Encounter": ("encounters",),
    "Condition": ("conditions",),
    "Observation": ("observations",),
    "Procedure": ("procedures",),
    "MedicationRequest": ("medication_requests",),
    "ServiceRequest": ("service_requests",),
    "ImagingStudy": ("imaging_studies",),
    "DiagnosticReport": ("diagnostic_reports",),
    "Claim": ("claims", "claim_items"),
    "ClaimResponse": ("claim_responses",),
    "ExplanationOfBenefit": ("claim_responses",),
}

# The Fund audit findings (fraud labels); the table keeps its documented name.
FUND_FINDINGS = TableSpec(
    "audit_findings",
    pa.schema(
        [
            _f("claim_id", STR, "pseudonym of the Claim (resolved by resource id or Claim.identifier)"),
            _f("provider_id", STR, "pseudonym of the Organization (by resource id or identifier)"),
            _f("pattern", STR, "fraud pattern confirmed by the audit"),
            _f("finding_date", pa.date32(), "date of the finding"),
            _f("claim_resolved", pa.bool_(), "the claim was found among the ingested claims"),
            _f("provider_resolved", pa.bool_(), "the provider was found among the ingested organizations"),
        ]
    ),
)

INGEST_FINDINGS = TableSpec(
    "findings",
    pa.schema(
        [
            _f("resource_type", STR, "type of the kept resource the finding is about"),
            _f("resource_id", STR, "pseudonym of its id (joins the <table>_id columns)"),
            _f("defect", STR, "finding code (docs/raw-data.md): dangling_reference, unmapped_code ..."),
            _f("severity", STR, "OperationOutcome severity: warning or information"),
            _f("expression", STR, "the element at fault (FHIRPath-like, list indexes kept)"),
            _f("diagnostics", STR, "plain words; never a value from the record"),
        ]
    ),
)

HISTORY = TableSpec(
    "history",
    pa.schema(
        [
            _f("resource_type", STR, "type of the superseded version"),
            _f("resource_id", STR, "pseudonym of its id (the kept version has the same)"),
            _f("version_id", STR, "its meta.versionId (null when absent)"),
            _f("last_updated", TS, "its meta.lastUpdated (null when absent)"),
            _f("source_id", STR, "pseudonym of the input file it was read from (quarantine/history.ndjson names it)"),
            _f("kept_source_id", STR, "pseudonym of the input file of the version that was kept"),
        ]
    ),
)

# Internal columns of the first pass's temporary tables (never in a final table).
ORD = "__ord"  # resource ordinal within its chunk
EVENT = "__event"  # event date as YYYYMMDD (0: none), for age_at_event
CK_SUFFIX = "__ck"  # per reference column: key of a conditional reference (0: none)


def temp_schema(spec: TableSpec) -> pa.Schema:
    """The first pass's schema of a table: final columns plus ordinal, conditional keys and event date."""
    fields = [spec.schema.field(i) for i in range(len(spec.schema))]
    if spec.event_age:
        fields = [f for f in fields if f.name != "age_at_event"]
    extra = [pa.field(ORD, pa.int32())]
    extra += [pa.field(col + CK_SUFFIX, pa.uint64()) for col in spec.ref_columns]
    if spec.event_age:
        extra.append(pa.field(EVENT, pa.int32()))
    return pa.schema(fields + extra)

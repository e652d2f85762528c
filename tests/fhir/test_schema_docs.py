"""The table schemas: documented in docs/tables.md, and every flattened column belongs to its schema."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from pipelines.fhir.deid import Pseudonyms, deidentify
from pipelines.fhir.flatten import Flattener
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fhir.schema import FUND_FINDINGS, HISTORY, INGEST_FINDINGS, RESOURCE_TABLES, TABLES, temp_schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "tables.md"


def test_every_table_and_column_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for spec in [*TABLES.values(), FUND_FINDINGS, INGEST_FINDINGS, HISTORY]:
        section = re.search(rf"### `{spec.name}`\n(.*?)(?=\n### |\Z)", text, re.S)
        assert section, spec.name
        for field in spec.schema:
            assert f"| `{field.name}` |" in section.group(1), (spec.name, field.name)
            assert field.metadata and field.metadata[b"doc"], (spec.name, field.name)


OTHERS = [
    {
        "resourceType": "Practitioner",
        "id": "pr1",
        "gender": "female",
        "qualification": [{"code": {"coding": [{"code": "MD"}]}}],
    },
    {"resourceType": "PractitionerRole", "id": "r1", "practitioner": {"reference": "Practitioner/pr1"}},
    {
        "resourceType": "Coverage",
        "id": "cv1",
        "status": "active",
        "beneficiary": {"reference": "Patient/p1"},
        "payor": [{"reference": "Organization/org1"}],
        "subscriberId": "S1",
        "period": {"start": "2023-01-01"},
    },
    {
        "resourceType": "Procedure",
        "id": "pc1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "https://shipa.kz/fhir/CodeSystem/tariff", "code": "R01"}]},
        "performedPeriod": {"start": "2023-03-01", "end": "2023-03-02"},
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2023-03-01",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "J01CA04"}]},
    },
    {
        "resourceType": "ServiceRequest",
        "id": "s1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "Organization/org1"},
        "performer": [{"reference": "Organization/org2"}],
    },
    {
        "resourceType": "ImagingStudy",
        "id": "i1",
        "status": "available",
        "subject": {"reference": "Patient/p1"},
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "started": "2023-03-01",
        "series": [{"uid": "1.2.3.1", "modality": {"code": "DX"}}],
    },
    {
        "resourceType": "DiagnosticReport",
        "id": "d1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "36643-5"}]},
        "imagingStudy": [{"reference": "ImagingStudy/i1"}],
        "conclusionCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J18.9"}]}],
    },
    {
        "resourceType": "ClaimResponse",
        "id": "cr1",
        "status": "active",
        "use": "claim",
        "outcome": "complete",
        "patient": {"reference": "Patient/p1"},
        "request": {"reference": "Claim/cl1"},
        "created": "2023-03-02",
        "payment": {"amount": {"value": 4500, "currency": "KZT"}, "date": "2023-03-10"},
    },
    {
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "component": [
            {
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 120, "code": "mm[Hg]"},
            }
        ],
    },
]


def test_flattened_rows_fit_their_schemas(fx: SimpleNamespace) -> None:
    pseudonyms = Pseudonyms(Pseudonymizer(fx.KEY))
    flattener = Flattener(None)
    seen = set()
    for resource in [*fx.clean_resources(), *OTHERS]:
        for table, rows in flattener.rows(deidentify(resource, pseudonyms)).items():
            assert table in RESOURCE_TABLES[resource["resourceType"]]
            names = set(temp_schema(TABLES[table]).names)
            for row in rows:
                assert set(row) - {"__ord"} <= names, (table, set(row) - names)
            seen.add(table)
    assert seen == set(TABLES)

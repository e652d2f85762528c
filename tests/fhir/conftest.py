"""Tiny hand-made FHIR datasets for the ingest tests (a few resources each, written to tmp_path)."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from pipelines import codes, iin
from pipelines.config import IngestParams
from pipelines.stages import ingest

KEY = "test-key-0123456789abcdef"
ORG_IDENT = "ORG-001"


def make_iin(birth: str, sex: str) -> str:
    """A valid IIN for a birth date (YYYY-MM-DD) and sex."""
    date = dt.date.fromisoformat(birth)
    for serial in range(10_000):
        value = iin.make_iin(date, sex, serial)
        if value is not None:
            return value
    raise AssertionError("no serial gives a valid IIN")


def patient(rid: str, birth: str = "1980-05-17", sex: str = "male", **extra: Any) -> dict[str, Any]:
    """A Kazakh patient with an IIN, a name, telecom and an address."""
    return {
        "resourceType": "Patient",
        "id": rid,
        "identifier": [{"system": codes.IIN_SYSTEM, "value": make_iin(birth, sex)}],
        "name": [{"family": "Ахметов", "given": ["Серик"]}, {"family": "Akhmetov", "given": ["Serik"]}],
        "telecom": [{"system": "phone", "value": "+77011234567"}],
        "gender": sex,
        "birthDate": birth,
        "address": [
            {
                "line": ["ул. Абая 10, кв. 5"],
                "city": "Астана",
                "state": "AST",
                "postalCode": "010000",
                "country": "KZ",
                "extension": [{"url": codes.REGION_EXTENSION, "valueCode": "AST"}],
            }
        ],
        **extra,
    }


def organization(rid: str = "org1", ident: str = ORG_IDENT) -> dict[str, Any]:
    """A polyclinic with a registry identifier."""
    return {
        "resourceType": "Organization",
        "id": rid,
        "identifier": [{"system": codes.ORG_ID_SYSTEM, "value": ident}],
        "name": "Polyclinic No. 1",
        "telecom": [{"system": "phone", "value": "+77172000000"}],
        "address": [{"line": ["пр. Республики 1"], "state": "AST", "postalCode": "010000"}],
    }


def encounter(rid: str, patient_id: str, start: str = "2023-03-01T09:00:00+05:00", **extra: Any) -> dict[str, Any]:
    """An ambulatory encounter at the polyclinic (organization by conditional reference)."""
    return {
        "resourceType": "Encounter",
        "id": rid,
        "status": "finished",
        "class": {"system": codes.ENCOUNTER_CLASS, "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}", "display": "Серик Ахметов"},
        "period": {"start": start, "end": start[:11] + "09:20:00+05:00"},
        "serviceProvider": {"reference": f"Organization?identifier={codes.ORG_ID_SYSTEM}|{ORG_IDENT}"},
        **extra,
    }


def observation(rid: str, patient_id: str, encounter_id: str, when: str = "2023-03-01T09:10:00+05:00") -> dict:
    """A body temperature."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}
                ]
            }
        ],
        "code": {"coding": [{"system": codes.LOINC, "code": "8310-5", "display": "Body temperature"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": 38.4, "unit": "Cel", "system": codes.UCUM, "code": "Cel"},
        "note": [{"text": "patient Serik says he felt feverish"}],
    }


def condition(rid: str, patient_id: str, encounter_id: str, code: str = "J18.9") -> dict[str, Any]:
    """A diagnosis coded in ICD-10."""
    return {
        "resourceType": "Condition",
        "id": rid,
        "code": {"coding": [{"system": codes.ICD10, "code": code}], "text": "pneumonia"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "encounter": {"reference": f"Encounter/{encounter_id}"},
        "onsetDateTime": "2023-03-01",
    }


def claim(rid: str, patient_id: str, encounter_id: str, tariff: str = "A01") -> dict[str, Any]:
    """A claim to the Fund with one item."""
    price = codes.TARIFFS[tariff].price_kzt if tariff in codes.TARIFFS else 1000
    return {
        "resourceType": "Claim",
        "id": rid,
        "identifier": [{"system": codes.CLAIM_ID_SYSTEM, "value": f"CLM-{rid}"}],
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim",
        "patient": {"reference": f"Patient/{patient_id}"},
        "created": "2023-03-01T12:00:00+05:00",
        "provider": {"reference": f"Organization?identifier={codes.ORG_ID_SYSTEM}|{ORG_IDENT}"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "OSMS"}}],
        "diagnosis": [
            {"sequence": 1, "diagnosisCodeableConcept": {"coding": [{"system": codes.ICD10, "code": "J18.9"}]}}
        ],
        "item": [
            {
                "sequence": 1,
                "productOrService": {"coding": [{"system": codes.TARIFF, "code": tariff}]},
                "servicedDate": "2023-03-01",
                "quantity": {"value": 1},
                "unitPrice": {"value": price, "currency": "KZT"},
                "net": {"value": price, "currency": "KZT"},
                "encounter": [{"reference": f"Encounter/{encounter_id}"}],
            }
        ],
        "total": {"value": price, "currency": "KZT"},
    }


def clean_resources() -> list[dict[str, Any]]:
    """A consistent little dataset: one organization, two patients with an encounter, observation, condition, claim."""
    out: list[dict[str, Any]] = [organization()]
    for n, (birth, sex) in enumerate((("1980-05-17", "male"), ("1995-11-02", "female")), start=1):
        out += [
            patient(f"p{n}", birth, sex),
            encounter(f"e{n}", f"p{n}"),
            observation(f"o{n}", f"p{n}", f"e{n}"),
            condition(f"c{n}", f"p{n}", f"e{n}"),
            claim(f"cl{n}", f"p{n}", f"e{n}"),
        ]
    return out


def write_ndjson(path: Path, items: list[dict[str, Any] | bytes], *, gz: bool = False) -> Path:
    """Write resources (dicts) or raw lines (bytes) as NDJSON."""
    data = b"".join((i if isinstance(i, bytes) else orjson.dumps(i)) + b"\n" for i in items)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def run_ingest(
    input_dir: Path, output_dir: Path, *, workers: int = 1, chunk_size: int = 4, **params: Any
) -> dict[str, Any]:
    """Run the ingest stage with a test key and no progress bar (``params``: more ``ingest`` fields)."""
    return ingest.run(
        IngestParams(workers=workers, chunk_size=chunk_size, **params), input_dir, output_dir, key=KEY, progress=False
    )


def quarantine_records(output_dir: Path, name: str = "fhir") -> list[dict[str, Any]]:
    """The records an ingest wrote to ``quarantine/<name>.ndjson`` (fhir, findings or history)."""
    path = output_dir / "quarantine" / f"{name}.ndjson"
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


@pytest.fixture
def clean_dir(tmp_path: Path) -> Path:
    """An input folder with the clean dataset as one NDJSON file."""
    write_ndjson(tmp_path / "in" / "fhir" / "all.ndjson", clean_resources())
    return tmp_path / "in"


@pytest.fixture
def fx() -> SimpleNamespace:
    """The builders and helpers above, for tests (works under any pytest import mode)."""
    return SimpleNamespace(
        KEY=KEY,
        ORG_IDENT=ORG_IDENT,
        make_iin=make_iin,
        patient=patient,
        organization=organization,
        encounter=encounter,
        observation=observation,
        condition=condition,
        claim=claim,
        clean_resources=clean_resources,
        write_ndjson=write_ndjson,
        run_ingest=run_ingest,
        quarantine_records=quarantine_records,
    )

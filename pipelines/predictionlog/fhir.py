"""A prediction-log entry as a FHIR R4 AuditEvent."""

from __future__ import annotations

from typing import Any

from pipelines.predictionlog.entry import LogEntry
from pipelines.predictionlog.roles import PURPOSE_OF_USE_SYSTEM

# Code systems of the AuditEvent built by ``audit_event_to_fhir``.
EVENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ENDPOINT_SYSTEM = "https://shipa.kz/fhir/CodeSystem/service-endpoint"
SERVICE_ROLE_SYSTEM = "https://shipa.kz/fhir/CodeSystem/service-role"
TOKEN_SYSTEM = "https://shipa.kz/fhir/sid/service-token"
MODEL_SYSTEM = "https://shipa.kz/fhir/sid/model"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"


def audit_event_to_fhir(record: LogEntry, observer: str = "shipa-service") -> dict[str, Any]:
    """A stored record as a FHIR R4 AuditEvent resource (valid against ``fhir.resources.R4B``).

    The requestor agent names the token and its role; ``source.observer`` the service; the entities are the model
    (name, version, alias, output, latency), the input (its sha256), the patient (``Patient/<pseudonym>``) and the
    record's place in the hash chain.
    """
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(record.seq),
        "type": {"system": EVENT_TYPE_SYSTEM, "code": "rest", "display": "RESTful Operation"},
        "subtype": [
            {"system": INTERACTION_SYSTEM, "code": "operation", "display": "operation"},
            {"system": ENDPOINT_SYSTEM, "code": record.endpoint},
        ],
        "action": "E",
        "recorded": record.recorded,
        "outcome": record.outcome,
        "purposeOfEvent": [{"coding": [{"system": PURPOSE_OF_USE_SYSTEM, "code": record.purpose_of_use}]}],
        "agent": [
            {
                "role": [{"coding": [{"system": SERVICE_ROLE_SYSTEM, "code": record.role}], "text": record.role}],
                "who": {
                    "identifier": {"system": TOKEN_SYSTEM, "value": record.token_name},
                    "display": record.token_name,
                },
                "requestor": True,
            }
        ],
        "source": {
            "observer": {"display": observer},
            "type": [{"system": SOURCE_TYPE_SYSTEM, "code": "4", "display": "Application Server"}],
        },
        "entity": [
            {
                "what": {
                    "identifier": {"system": MODEL_SYSTEM, "value": f"{record.model_name}/{record.model_version}"},
                    "display": f"{record.model_name} version {record.model_version} ({record.model_alias})",
                },
                "type": {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
                "name": record.model_name,
                "detail": [
                    {"type": "version", "valueString": record.model_version},
                    {"type": "alias", "valueString": record.model_alias},
                    {"type": "output", "valueString": record.output_json},
                    {"type": "latency_ms", "valueString": f"{record.latency_ms:.3f}"},
                ],
            },
            {
                "type": {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
                "name": "input",
                "detail": [{"type": "sha256", "valueString": record.input_sha256}],
            },
            {
                "name": "audit-chain",
                "detail": [
                    {"type": "seq", "valueString": str(record.seq)},
                    {"type": "prev_hash", "valueString": record.prev_hash},
                    {"type": "hash", "valueString": record.hash},
                ],
            },
        ],
    }
    if record.outcome_desc:
        event["outcomeDesc"] = record.outcome_desc
    if record.patient_pseudonym:
        event["entity"].insert(
            2,
            {
                "what": {"reference": f"Patient/{record.patient_pseudonym}"},
                "type": {"system": ENTITY_TYPE_SYSTEM, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE_SYSTEM, "code": "1", "display": "Patient"},
            },
        )
    return event

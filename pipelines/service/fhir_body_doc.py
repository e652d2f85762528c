"""The request body of ``POST /fraud/score`` in the OpenAPI document: the FHIR R4 shapes the service reads.

Documentation and a fuzzing target, not the validator: the body is parsed and checked against the full R4 model
(``fhir.resources.R4B``) by the route, and anything this outline leaves open is checked there. The outline makes
``/docs`` show what to send (with a working example) and lets schemathesis generate Claims and Bundles that reach
the FHIR checks, rather than arbitrary objects refused at the first field.
"""

from __future__ import annotations

from typing import Any

_REFERENCE = {"type": "object", "properties": {"reference": {"type": "string"}}, "required": ["reference"]}
_CODEABLE = {
    "type": "object",
    "properties": {
        "coding": {
            "type": "array",
            "items": {"type": "object", "properties": {"system": {"type": "string"}, "code": {"type": "string"}}},
        },
        "text": {"type": "string"},
    },
}
_MONEY = {"type": "object", "properties": {"value": {"type": "number"}, "currency": {"type": "string"}}}
_DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}

CLAIM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "a FHIR R4 Claim (references to the patient, provider, practitioners and diagnoses)",
    "required": ["resourceType", "id", "status", "type", "use", "patient", "created", "provider", "insurance"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Claim"]},
        "id": {"type": "string", "pattern": r"^[A-Za-z0-9\-.]{1,64}$"},
        "status": {"type": "string", "enum": ["active", "cancelled", "draft", "entered-in-error"]},
        "type": _CODEABLE,
        "use": {"type": "string", "enum": ["claim", "preauthorization", "predetermination"]},
        "patient": _REFERENCE,
        "billablePeriod": {"type": "object", "properties": {"start": _DATE, "end": _DATE}},
        "created": _DATE,
        "provider": _REFERENCE,
        "priority": _CODEABLE,
        "insurance": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sequence", "focal", "coverage"],
                "properties": {"sequence": {"type": "integer"}, "focal": {"type": "boolean"}, "coverage": _REFERENCE},
            },
        },
        "item": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sequence", "productOrService"],
                "properties": {
                    "sequence": {"type": "integer", "minimum": 1},
                    "productOrService": _CODEABLE,
                    "servicedDate": _DATE,
                    "quantity": {"type": "object", "properties": {"value": {"type": "number"}}},
                    "unitPrice": _MONEY,
                    "net": _MONEY,
                },
            },
        },
        "total": _MONEY,
    },
}

BUNDLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "a FHIR R4 Bundle of Claims with the resources they refer to (Patient, Organization, ...)",
    "required": ["resourceType", "type", "entry"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["collection", "batch", "transaction"]},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": {"anyOf": [CLAIM_SCHEMA, {"type": "object"}]},
                },
            },
        },
    },
}

CLAIM_EXAMPLE: dict[str, Any] = {
    "resourceType": "Claim",
    "id": "claim-example-1",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
    "use": "claim",
    "patient": {"reference": "Patient/patient-example-1"},
    "billablePeriod": {"start": "2024-03-01", "end": "2024-03-01"},
    "created": "2024-03-04",
    "provider": {"reference": "Organization/clinic-example-1"},
    "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/coverage-example-1"}}],
    "item": [
        {
            "sequence": 1,
            "productOrService": {
                "coding": [{"system": "https://shipa.kz/fhir/CodeSystem/tariff", "code": "A02"}],
                "text": "Specialist consultation",
            },
            "servicedDate": "2024-03-01",
            "quantity": {"value": 1},
            "unitPrice": {"value": 7800, "currency": "KZT"},
            "net": {"value": 7800, "currency": "KZT"},
        }
    ],
    "total": {"value": 7800, "currency": "KZT"},
}


def fraud_body_doc() -> dict[str, Any]:
    """``openapi_extra`` of the fraud route: the body is a Claim or a Bundle, as FHIR JSON or plain JSON."""
    content = {"schema": {"oneOf": [CLAIM_SCHEMA, BUNDLE_SCHEMA]}, "example": CLAIM_EXAMPLE}
    return {
        "requestBody": {
            "required": True,
            "description": "a FHIR R4 Claim, or a Bundle of Claims with the resources they refer to",
            "content": {"application/fhir+json": content, "application/json": content},
        }
    }

"""The defect vocabulary of ingest and the FHIR OperationOutcome that explains each rejection.

The codes are those of docs/raw-data.md (so quarantine can be matched against the cohort's ``manifest/dirty.csv``),
plus two that only a real export produces: ``invalid_resource`` (a schema violation that is not a missing field, a
date or a code) and ``duplicate_id`` (two different resources with the same type and id).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MISSING_REQUIRED_FIELD = "missing_required_field"
INVALID_CODE = "invalid_code"
INVALID_DATE = "invalid_date"
IMPLAUSIBLE_DATE = "implausible_date"
IIN_CHECKSUM = "iin_checksum"
IIN_MISMATCH = "iin_mismatch"
DANGLING_REFERENCE = "dangling_reference"
DUPLICATE = "duplicate"
INVALID_JSON = "invalid_json"
INVALID_RESOURCE = "invalid_resource"
DUPLICATE_ID = "duplicate_id"

_INDEX = re.compile(r"\[\d+\]")

# When a resource has several problems, its quarantine record names the first of these that applies.
PRIORITY: tuple[str, ...] = (
    INVALID_JSON,
    INVALID_RESOURCE,
    MISSING_REQUIRED_FIELD,
    INVALID_DATE,
    INVALID_CODE,
    IIN_CHECKSUM,
    IIN_MISMATCH,
    IMPLAUSIBLE_DATE,
    DUPLICATE_ID,
    DANGLING_REFERENCE,
)

# FHIR IssueType for each defect (http://hl7.org/fhir/issue-type).
_ISSUE_TYPE: dict[str, str] = {
    MISSING_REQUIRED_FIELD: "required",
    INVALID_CODE: "code-invalid",
    INVALID_DATE: "value",
    IMPLAUSIBLE_DATE: "business-rule",
    IIN_CHECKSUM: "value",
    IIN_MISMATCH: "business-rule",
    DANGLING_REFERENCE: "not-found",
    DUPLICATE: "duplicate",
    DUPLICATE_ID: "duplicate",
    INVALID_JSON: "structure",
    INVALID_RESOURCE: "structure",
}


@dataclass(frozen=True)
class Issue:
    """One problem found in one resource.

    Attributes:
        defect: a code of the vocabulary above.
        expression: FHIRPath-like location of the field at fault (``Observation.status``); empty when the whole
            record is at fault (invalid JSON).
        diagnostics: plain words for a data steward; never contains an identifier, name or other personal value.
        severity: ``error`` rejects the resource, ``warning`` only counts it.
    """

    defect: str
    expression: str
    diagnostics: str
    severity: str = "error"


def primary_defect(issues: Iterable[Issue]) -> str:
    """The defect that names a rejected resource: the highest-priority error among its issues."""
    errors = {i.defect for i in issues if i.severity == "error"}
    for defect in PRIORITY:
        if defect in errors:
            return defect
    raise ValueError("no error among the issues")


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome (as a dict) with one issue per problem, errors first."""
    ordered = sorted(issues, key=lambda i: (i.severity != "error", _rank(i.defect)))
    out = []
    for issue in ordered:
        entry: dict[str, Any] = {
            "severity": issue.severity,
            "code": _ISSUE_TYPE.get(issue.defect, "invalid"),
            "details": {"coding": [{"system": "https://shipa.kz/fhir/CodeSystem/ingest-defect", "code": issue.defect}]},
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            entry["expression"] = [issue.expression]
        out.append(entry)
    return {"resourceType": "OperationOutcome", "issue": out}


def reason_expression(expression: str) -> str:
    """An expression without list indexes (``Claim.item[2].net`` -> ``Claim.item.net``), to group reasons."""
    return _INDEX.sub("", expression)


def _rank(defect: str) -> int:
    return PRIORITY.index(defect) if defect in PRIORITY else len(PRIORITY)

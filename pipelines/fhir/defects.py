"""The defect vocabulary of ingest and the FHIR OperationOutcome that explains each issue.

The codes are those of docs/raw-data.md (so quarantine and findings can be matched against the cohort's
``manifest/dirty.csv``), plus those only a real export produces. An issue is either a conformance error (severity
``error``: the resource breaks FHIR R4, or an IIN is wrong, and it is quarantined) or a data-quality finding
(severity ``warning`` or ``information``: the resource is kept, the finding recorded). ``ingest.strict`` raises
chosen findings to errors (:func:`raise_strict`).
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
UNMAPPED_CODE = "unmapped_code"
MISSING_TABLE_FIELD = "missing_table_field"
CONTENT_ID = "content_id"
SUPERSEDED_VERSION = "superseded_version"

WARNING, INFORMATION = "warning", "information"

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
    UNMAPPED_CODE,
    MISSING_TABLE_FIELD,
    CONTENT_ID,
    SUPERSEDED_VERSION,
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
    UNMAPPED_CODE: "code-invalid",
    MISSING_TABLE_FIELD: "incomplete",
    CONTENT_ID: "informational",
    SUPERSEDED_VERSION: "informational",
}


@dataclass(frozen=True)
class Issue:
    """One problem found in one resource.

    Attributes:
        defect: a code of the vocabulary above.
        expression: FHIRPath-like location of the field at fault (``Observation.status``); empty when the whole
            record is at fault (invalid JSON).
        diagnostics: plain words for a data steward; never contains an identifier, name or other personal value.
        severity: ``error`` rejects the resource; ``warning`` and ``information`` are findings on a kept one.
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


def is_error(issue: Issue) -> bool:
    """Whether an issue rejects its resource."""
    return issue.severity == "error"


def raise_strict(issues: list[Issue], strict: frozenset[str]) -> list[Issue]:
    """The issues with every finding whose defect is in ``strict`` raised to an error (``ingest.strict``)."""
    if not strict or not any(i.defect in strict and i.severity != "error" for i in issues):
        return issues
    return [
        Issue(i.defect, i.expression, i.diagnostics, "error") if i.defect in strict and i.severity != "error" else i
        for i in issues
    ]


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """A FHIR R4 OperationOutcome (as a dict) with one issue per problem, errors first."""
    ordered = sorted(issues, key=lambda i: (_SEVERITY_RANK.get(i.severity, 3), _rank(i.defect)))
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


_SEVERITY_RANK = {"error": 0, WARNING: 1, INFORMATION: 2}


def _rank(defect: str) -> int:
    return PRIORITY.index(defect) if defect in PRIORITY else len(PRIORITY)

"""Validation of one resource: the R4B schema (fhir.resources), then the checks those models do not make.

Content checks (run only on schema-valid resources):

- codes (error ``invalid_code``): at the paths listed in ``CODE_RULES`` every coding in a system Shipa governs must
  be well-formed (ICD-10 format, LOINC format, a tariff of ``codes.TARIFFS``, ATC format) and belong to the right
  kind of code (a LOINC code is not a diagnosis). Foreign systems Shipa does not map (SNOMED CT, RxNorm, CVX, CPT,
  local codes) are accepted. Where Shipa reads a code (``REQUIRED_SYSTEMS``: Observation and DiagnosticReport want
  LOINC, Procedure a tariff or SNOMED CT code) a concept without one is kept with the finding ``unmapped_code``
  (its code column is then empty); a Condition coded only in SNOMED CT is kept silently (``icd10_code`` empty).
- the IIN (errors ``iin_checksum``, ``iin_mismatch``; identifiers of the configured IIN systems only): check digit
  and agreement with birthDate and gender. A wrong IIN would join one person's records to another's, so these stay
  errors;
- dates: an encounter that ends before it starts breaks the R4 invariant ``per-1`` (error ``implausible_date``);
  a birth after death is the finding ``implausible_date``. Checks that need another resource (an event before the
  patient's birth, references) run in the second pass (``pipelines.fhir.finalize``);
- fields the tables want but FHIR does not require (finding ``missing_table_field``): a Patient's birthDate, the
  subject of an event resource.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pipelines import codes, iin
from pipelines.fhir import dates, fastcheck
from pipelines.fhir.defects import (
    IIN_CHECKSUM,
    IIN_MISMATCH,
    IMPLAUSIBLE_DATE,
    INFORMATION,
    INVALID_CODE,
    INVALID_DATE,
    INVALID_RESOURCE,
    MISSING_REQUIRED_FIELD,
    MISSING_TABLE_FIELD,
    UNMAPPED_CODE,
    WARNING,
    Issue,
)

log = logging.getLogger(__name__)

DIAGNOSIS = "diagnosis"
OBSERVATION = "observation"
SERVICE = "service"
MEDICATION = "medication"

# The kind of code each governed system carries, and what a well-formed code of that system looks like.
SYSTEM_ROLE: dict[str, str] = {
    codes.ICD10: DIAGNOSIS,
    codes.LOINC: OBSERVATION,
    codes.TARIFF: SERVICE,
    codes.ATC: MEDICATION,
}
_ICD10 = re.compile(codes.ICD10_PATTERN)
_LOINC = re.compile(codes.LOINC_PATTERN)
_ATC = re.compile(r"^[A-Z]([0-9]{2}([A-Z]([A-Z]([0-9]{2})?)?)?)?$")


@dataclass(frozen=True)
class CodeRule:
    """Where a coded element lives in a resource and what kind of code it must hold.

    Attributes:
        path: field names from the resource root; lists on the way are expanded.
        role: the kind of code expected (a governed system of another kind is a wrong-system error).
        required: systems of which at least one coding must be present (empty: none required).
    """

    path: tuple[str, ...]
    role: str
    required: tuple[str, ...] = ()


REQUIRED_SYSTEMS: dict[str, tuple[str, ...]] = {
    t: codes.EXPECTED_CODE_SYSTEMS[t] for t in ("Observation", "DiagnosticReport", "Procedure")
}

CODE_RULES: dict[str, tuple[CodeRule, ...]] = {
    "Condition": (CodeRule(("code",), DIAGNOSIS),),
    "Observation": (
        CodeRule(("code",), OBSERVATION, REQUIRED_SYSTEMS["Observation"]),
        CodeRule(("component", "code"), OBSERVATION),
    ),
    "DiagnosticReport": (
        CodeRule(("code",), OBSERVATION, REQUIRED_SYSTEMS["DiagnosticReport"]),
        CodeRule(("conclusionCode",), DIAGNOSIS),
    ),
    "Procedure": (CodeRule(("code",), SERVICE, REQUIRED_SYSTEMS["Procedure"]),),
    "MedicationRequest": (CodeRule(("medicationCodeableConcept",), MEDICATION),),
    "Encounter": (CodeRule(("reasonCode",), DIAGNOSIS),),
    "Claim": (
        CodeRule(("item", "productOrService"), SERVICE),
        CodeRule(("diagnosis", "diagnosisCodeableConcept"), DIAGNOSIS),
    ),
    "ClaimResponse": (CodeRule(("addItem", "productOrService"), SERVICE),),
    "ExplanationOfBenefit": (CodeRule(("item", "productOrService"), SERVICE),),
}

_DATE_ERROR = re.compile(r"(Date|DateTime|Instant|Time) value string")


class SchemaValidator:
    """R4B schema validation with the model classes cached (create one per process)."""

    def __init__(self) -> None:
        from fhir.resources.R4B import get_fhir_model_class

        self._get = get_fhir_model_class
        self._classes: dict[str, Any] = {}

    def preload(self, rtypes: Iterable[str]) -> None:
        """Import the models of these types now (before forking workers, so that they share them)."""
        for rtype in rtypes:
            if rtype not in self._classes:
                self._classes[rtype] = self._get(rtype)

    def validate(self, resource: dict[str, Any]) -> list[Issue]:
        """Validate a parsed resource against its R4B model; return the problems found (empty when valid).

        Any exception other than pydantic's ValidationError that the model raises on malformed input becomes one
        ``invalid_resource`` issue naming the exception type, so the resource is quarantined instead of the run
        stopping, with or without :mod:`pipelines.fhir.fastcheck` installed.

        Args:
            resource: parsed JSON (``orjson.loads``), as fastcheck's element cache requires.
        """
        rtype = resource["resourceType"]
        cls = self._classes.get(rtype)
        if cls is None:
            try:
                cls = self._classes[rtype] = self._get(rtype)
            except (KeyError, ValueError, AttributeError, ImportError):
                return [Issue(INVALID_RESOURCE, rtype, "not a FHIR R4 resource type")]
        try:
            # The model is thrown away, so the elements it validated before may come from fastcheck's cache.
            fastcheck.validate_parsed(cls, resource)
        except ValidationError as exc:
            return [_issue_from_error(rtype, err) for err in exc.errors()]
        except Exception as exc:  # the library's own failures reject the resource, not the run
            # fhir_core raises AttributeError, TypeError ... on some malformed input (an ImplementationGuide with
            # ``"_fhirVersion": [{"extension": ...}]``); the same outcome whether or not fastcheck is installed.
            # One line per resource; the traceback (which could quote input) only with debug logging, to tell a
            # library failure on odd input from a bug of ours (pipelines.fhir.fastcheck).
            log.warning(
                "unexpected %s while validating a %s resource; it is rejected",
                type(exc).__name__,
                rtype,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return [Issue(INVALID_RESOURCE, rtype, f"{rtype} could not be validated ({type(exc).__name__})")]
        return []


def _issue_from_error(rtype: str, err: Any) -> Issue:
    expression = _expression(rtype, err.get("loc", ()))
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    if kind == "missing" or kind.endswith(".missing"):
        return Issue(MISSING_REQUIRED_FIELD, expression, f"{expression} is required but missing")
    if "date" in kind or "time" in kind or _DATE_ERROR.search(msg):
        return Issue(INVALID_DATE, expression, f"{expression} is not a valid FHIR date/time: {msg}")
    return Issue(INVALID_RESOURCE, expression, f"{expression}: {msg}")


def _expression(rtype: str, loc: Any) -> str:
    out = rtype
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def content_issues(resource: dict[str, Any], iin_systems: frozenset[str] = codes.DEFAULT_IIN_SYSTEMS) -> list[Issue]:
    """Checks of a schema-valid resource that the R4B models do not make (codes, IIN, dates within it).

    Args:
        resource: a parsed resource that passed schema validation.
        iin_systems: identifier systems whose values are IINs (``ingest.iin_systems``).
    """
    rtype = resource["resourceType"]
    issues: list[Issue] = []
    for rule in CODE_RULES.get(rtype, ()):
        issues.extend(_code_issues(resource, rtype, rule))
    if rtype == "Patient":
        issues.extend(patient_issues(resource, iin_systems))
    elif rtype == "Encounter":
        issues.extend(_period_issues(resource.get("period"), "Encounter.period"))
    if rtype in SUBJECT_FIELDS and not isinstance(resource.get(SUBJECT_FIELDS[rtype]), dict):
        expr = f"{rtype}.{SUBJECT_FIELDS[rtype]}"
        issues.append(Issue(MISSING_TABLE_FIELD, expr, f"{expr} is absent: the row has no patient", INFORMATION))
    return issues


# Event resources whose table rows need a patient, and the field that names it (FHIR makes some optional).
SUBJECT_FIELDS: dict[str, str] = {
    "Encounter": "subject",
    "Observation": "subject",
    "Condition": "subject",
    "Procedure": "subject",
    "ImagingStudy": "subject",
    "DiagnosticReport": "subject",
    "MedicationRequest": "subject",
}


def _walk(value: Any, path: tuple[str, ...], expr: str) -> Iterator[tuple[Any, str]]:
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, path, f"{expr}[{i}]")
        return
    if not path:
        yield value, expr
        return
    if isinstance(value, dict) and path[0] in value:
        yield from _walk(value[path[0]], path[1:], f"{expr}.{path[0]}")


# Observation categories whose codes Shipa's features read. Elsewhere (surveys, social history) a malformed code
# under the LOINC system is tolerated: Synthea, for one, files CIEL concept ids such as
# ``5089AAAA...`` under http://loinc.org in its survey observations, and nothing downstream reads them.
GOVERNED_OBSERVATION_CATEGORIES = frozenset({"vital-signs", "laboratory", "imaging"})


def _category_codes(resource: dict[str, Any]) -> set[str]:
    return {
        code
        for cat in resource.get("category") or []
        if isinstance(cat, dict)
        for c in cat.get("coding") or []
        if isinstance(c, dict) and isinstance(code := c.get("code"), str)
    }


def _code_issues(resource: dict[str, Any], rtype: str, rule: CodeRule) -> Iterator[Issue]:
    if rtype == "Observation" and not _category_codes(resource) & GOVERNED_OBSERVATION_CATEGORIES:
        return
    for concept, expr in _walk(resource, rule.path, rtype):
        if not isinstance(concept, dict):
            continue
        codings = concept.get("coding") or []
        systems = set()
        for i, coding in enumerate(codings):
            system = coding.get("system")
            systems.add(system)
            problem = coding_problem(system, coding.get("code"), rule.role)
            if problem:
                yield Issue(INVALID_CODE, f"{expr}.coding[{i}]", f"{expr}.coding[{i}]: {problem}")
        if rule.required and not systems.intersection(rule.required):
            yield Issue(
                UNMAPPED_CODE,
                f"{expr}.coding",
                f"{expr} has no coding from {' or '.join(rule.required)}: kept, its code column is empty",
                INFORMATION,
            )


def coding_problem(system: object, code: object, role: str) -> str | None:
    """Why a coding is invalid where a code of kind ``role`` is expected, or None (foreign systems pass)."""
    system_role = SYSTEM_ROLE.get(system) if isinstance(system, str) else None
    if system_role is None:
        return None
    if system_role != role:
        return f"system {system} holds {system_role} codes, but a {role} code is expected here"
    if not isinstance(code, str):
        return f"a {system} coding without a code"
    if system == codes.ICD10 and not _ICD10.match(code):
        return "code is not in ICD-10 format (letter, two digits, optional .subcategory)"
    if system == codes.LOINC and not _LOINC.match(code):
        return "code is not in LOINC format (digits, hyphen, check digit)"
    if system == codes.TARIFF and code not in codes.TARIFFS:
        return "code is not in the tariff list"
    if system == codes.ATC and not _ATC.match(code):
        return "code is not in ATC format"
    return None


def patient_issues(patient: dict[str, Any], iin_systems: frozenset[str] = codes.DEFAULT_IIN_SYSTEMS) -> list[Issue]:
    """IIN check digit and agreement with birthDate/gender (errors); birth after death, no birthDate (findings)."""
    issues: list[Issue] = []
    if not isinstance(patient.get("birthDate"), str):
        issues.append(
            Issue(MISSING_TABLE_FIELD, "Patient.birthDate", "Patient.birthDate is absent: no age", INFORMATION)
        )
    birth = dates.ymd_bounds(patient.get("birthDate"))
    birth_date = None
    if birth is not None and birth[0] == birth[1]:
        birth_date = dates.to_date(patient["birthDate"])
    for i, ident in enumerate(patient.get("identifier") or []):
        if ident.get("system") not in iin_systems:
            continue
        expr = f"Patient.identifier[{i}].value"
        value = ident.get("value")
        if not isinstance(value, str):
            issues.append(Issue(IIN_CHECKSUM, expr, f"{expr}: an IIN identifier without a value"))
            continue
        try:
            info = iin.parse_iin(value)
        except iin.IINError as exc:
            issues.append(Issue(IIN_CHECKSUM, expr, f"{expr}: {exc}"))
            continue
        if birth_date is not None and info.birth_date != birth_date:
            issues.append(
                Issue(IIN_MISMATCH, expr, f"{expr}: IIN birth date (digits 1-6 and 7) disagrees with Patient.birthDate")
            )
        elif patient.get("gender") in ("male", "female") and info.sex != patient["gender"]:
            issues.append(Issue(IIN_MISMATCH, expr, f"{expr}: IIN sex (digit 7) disagrees with Patient.gender"))
    death = dates.ymd_bounds(patient.get("deceasedDateTime"))
    if birth is not None and death is not None and birth[0] > death[1]:
        issues.append(
            Issue(
                IMPLAUSIBLE_DATE,
                "Patient.deceasedDateTime",
                "Patient.deceasedDateTime is before Patient.birthDate",
                WARNING,
            )
        )
    return issues


def _period_issues(period: Any, expr: str) -> list[Issue]:
    if not isinstance(period, dict):
        return []
    start, end = dates.to_utc(period.get("start")), dates.to_utc(period.get("end"))
    if start is not None and end is not None and end < start:
        # The R4 invariant per-1 ("start SHALL have a lower value than end"): a conformance error.
        return [Issue(IMPLAUSIBLE_DATE, f"{expr}.end", f"{expr}.end is before {expr}.start (per-1)")]
    return []


# Resource types whose event date is checked against the patient's birth (second pass): the field to report and
# the candidate fields holding the date.
EVENT_DATE_FIELDS: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "Encounter": ("Encounter.period.start", (("period", "start"),)),
    "Observation": (
        "Observation.effective[x]",
        (("effectiveDateTime",), ("effectivePeriod", "start"), ("effectiveInstant",)),
    ),
    "Condition": ("Condition.onset[x]", (("onsetDateTime",), ("onsetPeriod", "start"))),
    "Procedure": ("Procedure.performed[x]", (("performedDateTime",), ("performedPeriod", "start"))),
    "ImagingStudy": ("ImagingStudy.started", (("started",),)),
    "DiagnosticReport": ("DiagnosticReport.effective[x]", (("effectiveDateTime",), ("effectivePeriod", "start"))),
}


def event_date(resource: dict[str, Any]) -> str | None:
    """The event date string of a resource whose type is in ``EVENT_DATE_FIELDS`` (None when absent)."""
    spec = EVENT_DATE_FIELDS.get(resource["resourceType"])
    if spec is None:
        return None
    for path in spec[1]:
        value: Any = resource
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str):
            return value
    return None

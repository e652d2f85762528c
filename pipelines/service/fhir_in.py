"""FHIR input of the model endpoints: check, de-identify and flatten submitted resources as ingest does.

A request carries one resource or a Bundle. Each resource is validated with ingest's checks (the R4B schema,
then codes, IIN check digit and dates: :mod:`pipelines.fhir.validate`; events before the patient's birth); a
failure answers 422 naming the field (``Bundle.entry[3].resource.status``), never the value. Unlike ingest, a
reference to a record the request does not carry is no error: a request is a partial view of a record.
Accepted resources are de-identified with :func:`pipelines.fhir.deid.deidentify` and flattened with ingest's
:class:`~pipelines.fhir.flatten.Flattener` into rows of the ingest tables; conditional references are resolved
against the identifiers of the submitted resources, as ingest resolves them against the whole dataset. From
here on only pseudonyms exist.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipelines import codes
from pipelines.codes import DEFAULT_IIN_SYSTEMS
from pipelines.fhir import dates, refs
from pipelines.fhir.defects import IMPLAUSIBLE_DATE, Issue
from pipelines.fhir.deid import Pseudonyms, deidentify
from pipelines.fhir.flatten import Flattener, Row
from pipelines.fhir.keys import cond_key
from pipelines.fhir.schema import CK_SUFFIX, EVENT, TABLES
from pipelines.fhir.validate import EVENT_DATE_FIELDS, SchemaValidator, content_issues, event_date
from pipelines.service.errors import FhirHTTPError

log = logging.getLogger(__name__)

MAX_ISSUES = 20
# Limits of a request's JSON, checked before any validation (the validators recurse once per level, and a Claim
# with extensions nested about 190 deep overflowed Python's stack). FHIR resources are shallow: the deepest of
# the Synthea R4 bundles is 11 levels (a Bundle's entry, resource, then nested extensions, codings ...); 64 leaves
# room for deeply nested extensions and contained resources. The values limit is about 25 times the largest
# Synthea patient bundle (26,000 values in 1 MB) and bounds the objects one request may make.
MAX_JSON_DEPTH = 64
MAX_JSON_VALUES = 1_000_000
# Numbers of magnitude 10^15 or more are refused: no amount, count or measurement is that large (10^15 KZT is about
# eight years of Kazakhstan's GDP), and such values broke what follows (the reason texts' 28-digit decimal
# arithmetic failed on a 10^30 claim total, a 500).
MAX_JSON_NUMBER = 1e15
PATH_STEPS_SHOWN = 8
_CONTAINERS = (dict, list)
_NUMBERS = (int, float)  # exact types: a bool is no number here
# A number of 16 integer digits or more, or with a positive exponent of 2 digits or more, where JSON puts numbers
# (after ":", "," or "["); the same text inside a string only costs a walk that finds nothing.
_LONG_NUMBER = re.compile(rb"[:,\[]\s*-?(?:[0-9]{16}|[0-9.]+[eE]\+?[0-9]{2})")
_ELEMENT_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9]{0,63}$")


@dataclass(frozen=True)
class Submitted:
    """The resources of a request.

    Attributes:
        resources: (FHIRPath of the resource in the request, resource with its id) in request order.
        fullurls: the Bundle's ``fullUrl`` -> ``Type/id`` map (empty for a single resource).
        references: for each resource, how the request refers to it (``Type/id`` or its fullUrl).
    """

    resources: list[tuple[str, dict[str, Any]]]
    fullurls: dict[str, str] = field(default_factory=dict)
    references: list[str] = field(default_factory=list)

    def of_type(self, rtype: str) -> list[tuple[int, dict[str, Any]]]:
        """(position, resource) of every resource of ``rtype``."""
        return [(i, r) for i, (_, r) in enumerate(self.resources) if r.get("resourceType") == rtype]


def parse_json(
    data: bytes,
    what: str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_values: int = MAX_JSON_VALUES,
    max_number: float = MAX_JSON_NUMBER,
) -> Any:
    """Parsed JSON within the service's depth, size and number limits, checked before any FHIR validation.

    The number of values is bounded before parsing (from the body's commas and brackets, so a body of millions of
    empty arrays never becomes millions of Python objects), the depth and the numbers right after it, without
    recursion. Every refusal names ``what`` and the limit, and the path of the element at fault (a too-deep array or
    object, a too-large number), never the content.

    Raises:
        FhirHTTPError: 400 ``structure`` for a body that is not JSON (invalid UTF-8, ``NaN``, a number out of the
            double range ...); 413 ``too-costly`` over ``max_values``; 422 ``too-costly`` deeper than ``max_depth``;
            422 ``value`` for a number of magnitude ``max_number`` or more.
    """
    # Every value but the first follows a comma, or opens an array or object: an upper bound (commas and brackets
    # inside strings count too), exact enough for a limit set far above any real resource.
    containers = data.count(b"[") + data.count(b"{")
    if data.count(b",") + containers + 1 > max_values:
        raise FhirHTTPError(
            413, "too-costly", f"{what} holds more than {max_values} JSON values (the limit); send less at once"
        )
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # orjson's own bound (1024 levels), far beyond ours
            raise FhirHTTPError(
                422, "too-costly", f"{what} is nested deeper than {max_depth} levels (the limit)"
            ) from None
        raise FhirHTTPError(400, "structure", f"{what} is not valid JSON") from None
    if containers > max_depth:  # fewer arrays and objects than levels (a small Claim): nothing to walk
        check_depth(value, max_depth, what)
    if _LONG_NUMBER.search(data):
        check_numbers(value, max_number, what)
    return value


def check_depth(value: Any, max_depth: int, what: str) -> None:
    """Refuse a parsed JSON value nested deeper than ``max_depth`` arrays and objects (the root is level 1).

    One level at a time, without recursion: about 3 ms for a 1 MB Synthea bundle.

    Raises:
        FhirHTTPError: 422 ``too-costly`` naming the limit and the path of the first element beyond it.
    """
    level = [value] if type(value) in _CONTAINERS else []
    depth = 1
    while level:
        if depth > max_depth:
            where = _json_path(value, max_depth + 1)
            raise FhirHTTPError(
                422,
                "too-costly",
                f"{what} is nested deeper than {max_depth} levels (the limit) at {where}",
                [where],
            )
        # Exact types (orjson makes only dict and list) test twice as fast as isinstance here.
        level = [
            child
            for node in level
            for child in (node.values() if type(node) is dict else node)
            if type(child) in _CONTAINERS
        ]
        depth += 1


def check_numbers(value: Any, max_number: float, what: str) -> None:
    """Refuse a parsed JSON value holding a number of magnitude ``max_number`` or more.

    Raises:
        FhirHTTPError: 422 ``value`` naming the limit and the path of the first such number, never the number.
    """
    level = [value] if type(value) in _CONTAINERS else []
    while level:  # one level at a time, as check_depth; the path is looked for only once a number is found
        children = [child for node in level for child in (node.values() if type(node) is dict else node)]
        numbers = [abs(child) for child in children if type(child) in _NUMBERS]
        if numbers and max(numbers) >= max_number:
            where = _first_path(value, lambda node, _: type(node) in _NUMBERS and not abs(node) < max_number)
            raise FhirHTTPError(
                422,
                "value",
                f"{what} holds a number of magnitude {max_number:.0e} or more (the limit) at {where}",
                [str(where)],
            )
        level = [child for child in children if type(child) in _CONTAINERS]


def _json_path(value: Any, depth: int) -> str:
    """The FHIRPath-like path of the first array or object at ``depth`` (the root is 1), truncated."""
    where = _first_path(value, lambda node, level: level == depth and type(node) in _CONTAINERS)
    assert where is not None, "called for a value at least that deep"
    return where


def _first_path(value: Any, found: Callable[[Any, int], bool]) -> str | None:
    """The FHIRPath-like path (truncated) of the first node, depth first in document order, for which
    ``found(node, level)`` holds (the root is level 1), or None.

    Keys that are not shaped like FHIR element names (letters and digits, starting with a letter or ``_``) are shown
    as ``*``: a key could be personal data.
    """
    root = value.get("resourceType") if isinstance(value, dict) else None
    parts: list[str] = [root if isinstance(root, str) and _ELEMENT_NAME.match(root) else "$"]
    stack: list[tuple[Any, int, list[str]]] = [(value, 1, [])]
    while stack:
        node, level, path = stack.pop()
        if found(node, level):
            parts += path
            break
        if type(node) in _CONTAINERS:
            items = node.items() if type(node) is dict else enumerate(node)
            stack.extend(reversed([(child, level + 1, [*path, _step(key)]) for key, child in items]))
    else:
        return None
    shown = parts[: 1 + PATH_STEPS_SHOWN]
    text = "".join(shown[:1] + [p if p.startswith("[") else f".{p}" for p in shown[1:]])
    hidden = len(parts) - len(shown)
    return f"{text}...(+{hidden} levels)" if hidden else text


def _step(key: Any) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    return key if _ELEMENT_NAME.match(key) else "*"


def _bundle_envelope(body: dict[str, Any]) -> None:
    """Validate the Bundle without its entries' resources (those are checked one by one)."""
    from fhir.resources.R4B.bundle import Bundle

    entries = body.get("entry")
    envelope = dict(body)
    if isinstance(entries, list):
        envelope["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e for e in entries
        ]
    Bundle.model_validate(envelope)  # a ValidationError becomes a 422 naming Bundle.<field>


def submitted_resources(body: Any, allowed: Iterable[str] | None = None) -> Submitted:
    """The resources of a request body: a Bundle's entries, or the body itself when it is one resource.

    Args:
        body: parsed JSON.
        allowed: resource types a single resource may be (a Bundle may hold any type).

    Raises:
        FhirHTTPError: 422 when the body is not a resource, a Bundle entry holds none, or a single
            resource is of a type not in ``allowed``.
        pydantic.ValidationError: the Bundle envelope is invalid (answered as 422 by the service's handler).
    """
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FhirHTTPError(422, "invalid", "the body is not a FHIR resource (no resourceType)", ["resourceType"])
    if body["resourceType"] != "Bundle":
        allowed_set = set(allowed or ())
        if allowed_set and body["resourceType"] not in allowed_set:
            names = ", ".join(sorted(allowed_set | {"Bundle"}))
            raise FhirHTTPError(422, "not-supported", f"send one of: {names}", ["resourceType"])
        rid = body.get("id")
        ref = f"{body['resourceType']}/{rid}" if isinstance(rid, str) else body["resourceType"]
        return Submitted(resources=[(body["resourceType"], body)], references=[ref])
    _bundle_envelope(body)
    entries = body.get("entry") or []
    fullurls = refs.bundle_fullurl_map(entries)
    resources: list[tuple[str, dict[str, Any]]] = []
    references: list[str] = []
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}].resource"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise FhirHTTPError(422, "required", f"{where} is missing: each entry must hold a resource", [where])
        rid = resource.get("id") or refs.id_from_fullurl(entry.get("fullUrl"))
        if isinstance(rid, str) and resource.get("id") != rid:
            resource = {**resource, "id": rid}
        resources.append((where, resource))
        full_url = entry.get("fullUrl")
        references.append(
            full_url if isinstance(full_url, str) else f"{resource['resourceType']}/{rid}" if rid else where
        )
    return Submitted(resources=resources, fullurls=fullurls, references=references)


def _located(issue: Issue, where: str, rtype: str) -> str:
    """An ingest issue's expression (``Observation.status``) placed in the request (``<where>.status``)."""
    expression = issue.expression or rtype
    if expression == rtype:
        return where
    if expression.startswith(rtype):
        return where + expression[len(rtype) :]
    return f"{where}.{expression}"


def _births(submitted: Submitted) -> dict[str, int]:
    """``Patient/<id>`` -> the low end of the birth date (YYYYMMDD) of every submitted Patient."""
    out = {}
    for _, resource in submitted.resources:
        if resource.get("resourceType") == "Patient" and isinstance(resource.get("id"), str):
            bounds = dates.ymd_bounds(resource.get("birthDate"))
            if bounds:
                out[f"Patient/{resource['id']}"] = bounds[0]
    return out


def _before_birth(resource: dict[str, Any], births: Mapping[str, int], fullurls: Mapping[str, str]) -> Issue | None:
    """Ingest's second-pass check: an event dated before its patient's birth (``implausible_date``)."""
    spec = EVENT_DATE_FIELDS.get(resource["resourceType"])
    subject = resource.get("subject")
    if spec is None or not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
        return None
    birth = births.get(fullurls.get(subject["reference"], subject["reference"]))
    bounds = dates.ymd_bounds(event_date(resource))
    if birth is None or bounds is None or bounds[1] >= birth:
        return None
    return Issue(IMPLAUSIBLE_DATE, spec[0], f"{spec[0]} is before the patient's birth date")


def resource_problems(
    submitted: Submitted,
    validator: SchemaValidator | None = None,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
    *,
    limit: int | None = None,
) -> list[list[tuple[str, str]]]:
    """Ingest's checks on every submitted resource (schema, content, events before the patient's birth).

    Args:
        submitted: the request's resources.
        validator: the schema validator (a new one by default).
        iin_systems: identifier systems whose values are IINs.
        limit: stop after this many problems in all (the remaining resources get no entry checked).

    Returns:
        For each resource in request order, its errors as (FHIRPath in the request, diagnostics); the diagnostics
        are ingest's, which never quote a value.
    """
    validator = validator or SchemaValidator()
    births = _births(submitted)
    found: list[list[tuple[str, str]]] = []
    total = 0
    for where, resource in submitted.resources:
        problems: list[tuple[str, str]] = []
        found.append(problems)
        if limit is not None and total >= limit:
            continue
        rtype = resource["resourceType"]
        issues = validator.validate(resource)
        if not issues:
            issues = content_issues(resource, iin_systems)
            implausible = _before_birth(resource, births, submitted.fullurls)
            if implausible is not None:
                issues.append(implausible)
        if not isinstance(resource.get("id"), str):
            issues.append(Issue("missing_required_field", f"{rtype}.id", f"{rtype}.id is required but missing"))
        for issue in issues:
            if issue.severity == "error":
                located = _located(issue, where, rtype)
                detail = issue.diagnostics.replace(issue.expression, located) if issue.expression else issue.diagnostics
                problems.append((located, f"{issue.defect}: {detail}"))
        total += len(problems)
    return found


def check_resources(
    submitted: Submitted,
    validator: SchemaValidator | None = None,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
) -> None:
    """Run ingest's checks on every submitted resource (:func:`resource_problems`); any error refuses the request.

    Raises:
        FhirHTTPError: 422 ``invalid`` listing each problem with its field (at most :data:`MAX_ISSUES`); the
            diagnostics are ingest's, which never quote a value.
    """
    found = resource_problems(submitted, validator, iin_systems, limit=MAX_ISSUES)
    problems = [p for per_resource in found for p in per_resource][:MAX_ISSUES]
    if problems:
        raise FhirHTTPError(
            422, "invalid", "; ".join(message for _, message in problems), [where for where, _ in problems]
        )


def keep_valid_resources(
    submitted: Submitted,
    validator: SchemaValidator | None = None,
    iin_systems: frozenset[str] = DEFAULT_IIN_SYSTEMS,
) -> tuple[Submitted, list[tuple[str, str]]]:
    """The submitted resources without those that fail ingest's checks, and a warning for each left out.

    For a request whose resources are context (a diagnosis Bundle's Patient and Observations): one malformed lab
    value must not cost the clinician the whole answer. A reference to a left-out resource then matches nothing,
    as if it had not been sent.

    Returns:
        (the valid resources, with their fullUrls and references; (FHIRPath, text) of each problem of each
        resource left out, naming the field and why, never its value).
    """
    found = resource_problems(submitted, validator, iin_systems)
    kept = [i for i, problems in enumerate(found) if not problems]
    warnings = [
        (where, f"{submitted.resources[i][1]['resourceType']} left out: {text}")
        for i, problems in enumerate(found)
        for where, text in problems
    ]
    if len(kept) == len(submitted.resources):
        return submitted, []
    references = [submitted.references[i] for i in kept] if submitted.references else []
    kept_refs = {f"{r['resourceType']}/{r.get('id')}" for _, r in (submitted.resources[i] for i in kept)}
    valid = Submitted(
        resources=[submitted.resources[i] for i in kept],
        fullurls={url: ref for url, ref in submitted.fullurls.items() if ref in kept_refs},
        references=references,
    )
    return valid, warnings


@dataclass
class Flattened:
    """The submitted resources as de-identified ingest-table rows.

    Attributes:
        rows: table name -> rows (columns of :data:`pipelines.fhir.schema.TABLES`; no ``__`` columns).
        pseudonyms: the pseudonymous id of each submitted resource, in request order.
    """

    rows: dict[str, list[Row]]
    pseudonyms: list[str]


def deidentify_and_flatten(submitted: Submitted, pseudonyms: Pseudonyms) -> Flattened:
    """De-identify and flatten the submitted resources, resolving conditional references among them."""
    flattener = Flattener(pseudonyms.identifier(codes.ORG_ID_SYSTEM, codes.FSMS_ORG_IDENTIFIER), pseudonyms.iin_systems)
    targets: dict[int, str] = {}
    tables: dict[str, list[Row]] = {}
    ids: list[str] = []
    fullurls = submitted.fullurls or None
    for _, resource in submitted.resources:
        rtype = resource["resourceType"]
        pid = pseudonyms.resource(rtype, resource["id"])
        ids.append(pid)
        idents = resource.get("identifier")
        for ident in [idents] if isinstance(idents, dict) else idents or ():
            value = ident.get("value") if isinstance(ident, dict) else None
            if isinstance(value, str):
                system = ident.get("system") or ""
                targets.setdefault(cond_key(rtype, system, pseudonyms.identifier(system, value)), pid)
        for table, rows in flattener.rows(deidentify(resource, pseudonyms, fullurls)).items():
            tables.setdefault(table, []).extend(rows)
    unresolved = 0
    for table, rows in tables.items():
        for column in TABLES[table].ref_columns:
            key_column = column + CK_SUFFIX
            for row in rows:
                key = row.pop(key_column, 0)
                if key:
                    row[column] = targets.get(key)
                    unresolved += int(row[column] is None)
        for row in rows:
            row.pop(EVENT, None)
    if unresolved:
        log.info("%d conditional references point outside the submitted resources", unresolved)
    return Flattened(rows=tables, pseudonyms=ids)


def table_frames(rows: Mapping[str, list[Row]]) -> dict[str, Any]:
    """Polars frames with the ingest tables' exact schemas (``pipelines.fhir.schema.TABLES``)."""
    import polars as pl
    import pyarrow as pa

    frames: dict[str, Any] = {}
    for name, table_rows in rows.items():
        schema = TABLES[name].schema
        frames[name] = pl.from_arrow(pa.Table.from_pylist(table_rows, schema=schema))
    return frames

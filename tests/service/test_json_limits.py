"""The JSON limits of the model endpoints' bodies (:func:`pipelines.service.fhir_in.parse_json`): depth and values
checked before any validation, refusals that name the limit and the place but never the content, and real FHIR
(the Synthea R4 bundles, the built-in cohort) well inside them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_in import MAX_JSON_DEPTH, MAX_JSON_VALUES, check_resources, parse_json, submitted_resources

from .helpers import FAKE_IIN

CLAIM = {
    "resourceType": "Claim",
    "id": "c1",
    "status": "active",
    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]},
    "use": "claim",
    "patient": {"reference": "Patient/p1"},
    "created": "2025-01-01",
    "provider": {"reference": "Organization/o1"},
    "priority": {"coding": [{"code": "normal"}]},
    "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "OSMS"}}],
    "total": {"value": 100, "currency": "KZT"},
}


def nested_extension(levels: int) -> str:
    """JSON text of an extension holding ``levels`` nested extensions (valid FHIR: each has a url and either a
    value or extensions); built as text, as a client would send it (``json.dumps`` itself recurses)."""
    text = '{"url":"http://example.org/fhir/StructureDefinition/x","valueString":"v"}'
    for _ in range(levels):
        text = '{"url":"http://example.org/fhir/StructureDefinition/x","extension":[' + text + "]}"
    return text


def with_extension(resource: dict[str, Any], levels: int) -> bytes:
    """``resource`` as JSON with an ``extension`` nested ``levels`` deep (its deepest object at 3 + 2 x levels)."""
    return ('{"extension":[' + nested_extension(levels) + "]," + json.dumps(resource)[1:]).encode()


def refusal(body: bytes) -> FhirHTTPError:
    with pytest.raises(FhirHTTPError) as info:
        parse_json(body, "the request body")
    return info.value


@pytest.mark.parametrize("levels", [31, 100, 200, 1000])
def test_deeply_nested_extensions_are_refused_before_validation(levels: int) -> None:
    error = refusal(with_extension(CLAIM, levels))
    assert (error.status_code, error.code) == (422, "too-costly")
    limit = "the request body is nested deeper than 64 levels (the limit)"
    if 3 + 2 * levels > 1024:  # orjson refuses over 1024 levels by itself: the place is not known
        assert (error.diagnostics, error.expression) == (limit, None)
        return
    where = "Claim.extension[0].extension[0].extension[0].extension[0]...(+56 levels)"
    assert error.diagnostics == f"{limit} at {where}"
    assert error.expression == [where]


def test_the_deepest_extension_under_the_limit_passes_and_validates() -> None:
    body = with_extension(CLAIM, 30)  # the innermost extension at level 63
    claim = parse_json(body, "the request body")
    check_resources(submitted_resources(claim, allowed=("Claim",)))  # the validators do not overflow the stack


@pytest.mark.parametrize(("depth", "refused"), [(MAX_JSON_DEPTH, False), (MAX_JSON_DEPTH + 1, True), (1100, True)])
def test_nested_arrays_just_under_and_over_the_limit(depth: int, refused: bool) -> None:
    body = b"[" * depth + b"]" * depth
    if not refused:
        assert parse_json(body, "the bundle part") is not None
        return
    error = refusal(body)
    assert (error.status_code, error.code) == (422, "too-costly")
    assert error.diagnostics.startswith("the request body is nested deeper than 64 levels (the limit)")
    if depth < 1024:  # beyond 1024 orjson refuses by itself: no path is known
        assert error.expression == ["$[0][0][0][0][0][0][0][0]...(+56 levels)"]


def test_the_path_never_names_a_key_that_could_be_personal_data() -> None:
    body = (f'{{"resourceType":"{FAKE_IIN}","{FAKE_IIN}":' + f'{{"{FAKE_IIN}":' * 69 + "1" + "}" * 70).encode()
    error = refusal(body)
    assert FAKE_IIN not in error.diagnostics and FAKE_IIN not in str(error.expression)
    assert error.expression == ["$.*.*.*.*.*.*.*.*...(+56 levels)"]


def test_too_many_values_are_refused_before_parsing() -> None:
    body = b"[" + b"[]," * MAX_JSON_VALUES + b"[]]"
    error = refusal(body)
    assert (error.status_code, error.code) == (413, "too-costly")
    assert error.diagnostics == "the request body holds more than 1000000 JSON values (the limit); send less at once"
    # 1,001 values: exactly at a limit of 1,001 (1,000 commas and one bracket, plus one), refused under it.
    assert parse_json(b"[" + b"0," * 1000 + b"0]", "x", max_values=1002) == [0] * 1001
    with pytest.raises(FhirHTTPError, match="more than 1001 JSON values"):
        parse_json(b"[" + b"0," * 1000 + b"0]", "x", max_values=1001)


@pytest.mark.parametrize(
    "body",
    [
        b'{"resourceType":"Claim","total":{"value":NaN}}',
        b'{"resourceType":"Claim","total":{"value":Infinity}}',
        b'{"resourceType":"Claim","total":{"value":1e400}}',
        b'{"resourceType":"Claim","id":"\xff\xfe"}',
        b'{"resourceType":"Claim","id":"\\ud800"}',
        b"",
    ],
)
def test_not_json_is_a_400_structure(body: bytes) -> None:
    error = refusal(body)
    assert (error.status_code, error.code, error.diagnostics) == (
        400,
        "structure",
        "the request body is not valid JSON",
    )


def test_synthea_bundles_are_well_inside_the_limits(synthea_dir: Path) -> None:
    files = sorted(synthea_dir.glob("*.json"))
    assert len(files) >= 6
    for path in files:
        body = path.read_bytes()
        assert parse_json(body, path.name) == orjson.loads(body), path.name
        assert parse_json(body, path.name, max_depth=11) is not None  # the deepest is 11 levels: 64 leaves room


def test_the_built_in_cohort_is_well_inside_the_limits(tiny_cohort: Path) -> None:
    raw = tiny_cohort / "data" / "raw" / "fhir"
    files = sorted(raw.glob("*.ndjson"))
    assert files
    count = 0
    for path in files:
        resources = [line for line in path.read_bytes().splitlines() if line.strip()]
        bundle = (
            b'{"resourceType":"Bundle","type":"collection","entry":['
            + b",".join(b'{"resource":' + r + b"}" for r in resources[:500])
            + b"]}"
        )
        for body in (*resources, bundle):
            parse_json(body, path.name, max_depth=16)
            count += 1
    assert count > 1000


@pytest.mark.parametrize(
    ("number", "refused"),
    [
        (b"1e30", True),
        (b"-1.5E+15", True),
        (b"1000000000000000", True),
        (b"999999999999999.9", False),
        (b"1e-30", False),
    ],
)
def test_numbers_of_magnitude_1e15_or_more_are_refused_naming_the_field(number: bytes, refused: bool) -> None:
    body = b'{"resourceType":"Claim","id":"x:1e20 ' + FAKE_IIN.encode() + b'","total":{"value":' + number + b"}}"
    if not refused:
        assert parse_json(body, "the request body")["total"]["value"] == float(number)
        return
    error = refusal(body)
    assert (error.status_code, error.code, error.expression) == (422, "value", ["Claim.total.value"])
    assert error.diagnostics == (
        "the request body holds a number of magnitude 1e+15 or more (the limit) at Claim.total.value"
    )

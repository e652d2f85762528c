"""Seeded random and hostile requests: never a 5xx, every error an OperationOutcome, every audited request audited.

The plain seeded fuzz covers the app without models (headers, tokens, content types and bodies the spec does not
describe); the hostile bodies (deeply nested valid FHIR, the JSON limits, huge numbers, long strings, duplicate
keys, invalid UTF-8, NaN, damaged DICOM) go to the model endpoints of the champion models served by uvicorn. The
spec-driven schemathesis fuzz of the app with its models is in ``test_model_endpoints.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import string
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from pipelines.service.deps import InvestigatorPrincipal, RequestAuditDep

from . import test_model_endpoints as endpoints
from .helpers import FAKE_IIN, auth
from .test_model_endpoints import Case, Service, _dx_bundle

# The fixtures of the champion models trained on the tiny cohort and served by uvicorn (about 20 s, once here).
registry, service, case = endpoints.registry, endpoints.service, endpoints.case

CASES = 600
SEED = 20250301

_WEIRD_STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "1e309",
    "NaN",
    "null",
    "true",
    "2025-13-45",
    "2025-03-01T09:00:00Z",
    "9999-12-31T23:59:59+14:00",
    FAKE_IIN,
    "a" * 300,
    "'; DROP TABLE audit_events; --",
    "../../etc/passwd",
    "%00",
    "Ωмега ЖСН",
    "\u202e",
    "{}",
    "[]",
]


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return rng.choice(_WEIRD_STRINGS)
    if kind == 1:
        return rng.choice([0, -1, 1, 2**63, -(2**63), 10**30])
    if kind == 2:
        return rng.choice([0.0, -0.5, 1e308, 3.14])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(20)))
    if kind == 6:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["patient", "claims", "claim_id", "amount", "resourceType", "id", rng.choice(_WEIRD_STRINGS)]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randrange(5))}


def _random_body(rng: random.Random) -> tuple[bytes | None, str | None]:
    kind = rng.randrange(6)
    content_types = [
        "application/json",
        "application/fhir+json",
        "text/plain",
        None,
        "application/json; charset=latin-1",
    ]
    ctype = rng.choice(content_types)
    if kind == 0:
        return None, None
    if kind == 1:
        return json.dumps(_random_value(rng)).encode(), ctype
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64))), ctype
    if kind == 3:
        return b"x" * rng.choice([4096, 4097, 9000]), ctype
    body = {"patient": rng.choice(["a" * 32, FAKE_IIN, ""]), "claims": _random_value(rng)}
    return json.dumps(body).encode(), ctype


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    ops = []
    for path, item in spec["paths"].items():
        if path == "/test/boom":  # fails on purpose (see test_app)
            continue
        for method, op in item.items():
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "query"]
            ops.append((method.upper(), path, params))
    return ops


def test_random_requests_never_5xx(client: TestClient, tokens: dict[str, str]) -> None:
    rng = random.Random(SEED)
    ops = _operations(client.get("/openapi.json").json())
    assert len(ops) == 9  # health, ready, models, reload, audit events/verify/report, docs
    auths = [None, "Bearer shipa_garbage", "Basic Zm9vOmJhcg==", "Bearer", *(f"Bearer {t}" for t in tokens.values())]
    seen_statuses: set[int] = set()
    for case in range(CASES):
        method, path, params = rng.choice(ops)
        if rng.random() < 0.1:
            method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
        query = {name: str(_random_value(rng))[:200] for name in params if rng.random() < 0.5}
        if rng.random() < 0.2:
            query[rng.choice(_WEIRD_STRINGS) or "x"] = rng.choice(_WEIRD_STRINGS)
        body, ctype = _random_body(rng) if method in ("POST", "PUT", "PATCH") or rng.random() < 0.1 else (None, None)
        headers = {}
        if (authorization := rng.choice(auths)) is not None:
            headers["Authorization"] = authorization
        if ctype:
            headers["Content-Type"] = ctype
        response = client.request(method, path, params=query, content=body, headers=headers)
        seen_statuses.add(response.status_code)
        assert response.status_code < 500, (case, method, path, response.status_code, response.text[:300])
        if response.status_code >= 400:
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome", (case, response.text[:300])
            assert FAKE_IIN not in response.text, (case, response.text[:300])
    # The fuzz reached past authentication and validation, not just the front door.
    assert {200, 401, 403, 422} <= seen_statuses
    assert len(seen_statuses) >= 6


# --- every audited request is audited, whatever becomes of it -------------------------------------------------


def _failing_router() -> APIRouter:
    """Audited routes that fail the ways an input could make a model route fail: a recursion too deep, memory
    exhausted, a plain bug (its message quoting personal data), and FastAPI's own body validation."""
    router = APIRouter()

    @router.post("/test/audited/{how}")
    def fail(how: str, body: dict[str, Any], _principal: InvestigatorPrincipal, _audit: RequestAuditDep) -> None:
        def down(level: int) -> int:
            return down(level + 1) + 1

        if how == "recursion":
            down(0)
        if how == "memory":
            raise MemoryError
        raise RuntimeError(f"cannot score patient {FAKE_IIN}")

    return router


def test_exceptions_in_audited_routes_answer_an_outcome_and_leave_one_record(
    app: FastAPI, client: TestClient, tokens: dict[str, str]
) -> None:
    app.include_router(_failing_router())
    headers = {**auth(tokens["investigator"]), "Content-Type": "application/json"}
    log = app.state.audit_log
    before = sum(1 for _ in log.iter_all())
    answers = {
        how: client.post(f"/test/audited/{how}", content=b'{"a":1}', headers=headers)
        for how in ("recursion", "memory", "bug")
    }
    answers["invalid"] = client.post("/test/audited/bug", content=b"[1]", headers=headers)  # FastAPI's 422
    clinician = {**headers, **auth(tokens["clinician"])}
    answers["unaudited"] = client.post("/test/audited/bug", content=b'{"a":1}', headers=clinician)
    expected = {
        "recursion": (422, "too-costly", "4"),
        "memory": (413, "too-costly", "4"),
        "bug": (500, "exception", "8"),
        "invalid": (422, "invalid", "4"),
        "unaudited": (403, "forbidden", None),  # refused before the route: the access log has it, not the chain
    }
    records = list(log.iter_all())[before:]
    assert len(records) == 4  # one per request that reached the route with its role's token
    for (how, response), record in zip(answers.items(), [*records, None], strict=True):
        status, code, outcome = expected[how]
        assert response.status_code == status, (how, response.text)
        outcome_body = response.json()
        assert outcome_body["resourceType"] == "OperationOutcome" and outcome_body["issue"][0]["code"] == code
        assert FAKE_IIN not in response.text
        if record is not None:
            assert (record.outcome, record.output) == (outcome, {"error": code, "status": status}), how
            assert (record.endpoint, record.model_name, record.token_name) == (
                "/test/audited/{how}",
                "-",
                "investigator-1",
            )
            assert record.input_sha256 == hashlib.sha256(b'{"a":1}' if how != "invalid" else b"[1]").hexdigest()
    assert log.verify().ok


# --- hostile bodies against the model endpoints, with the champion models served by uvicorn ------------------


def _nested_extension(levels: int) -> str:
    """JSON text of a valid extension holding ``levels`` nested extensions (``json.dumps`` would itself recurse)."""
    text = '{"url":"http://example.org/fhir/StructureDefinition/x","valueString":"v"}'
    for _ in range(levels):
        text = '{"url":"http://example.org/fhir/StructureDefinition/x","extension":[' + text + "]}"
    return text


def _with_extension(resource_json: str, levels: int) -> str:
    """A resource's JSON text with an ``extension`` nested ``levels`` deep."""
    return '{"extension":[' + _nested_extension(levels) + "]," + resource_json[1:]


def _mutated(rng: random.Random, value: Any, changes: int) -> Any:
    """A copy of ``value`` with ``changes`` leaves, chosen at random, replaced by weird values (seeded)."""
    out = copy.deepcopy(value)
    leaves: list[tuple[Any, Any]] = []  # (container, key) of every leaf
    stack = [out]
    while stack:
        node = stack.pop()
        for key, child in node.items() if isinstance(node, dict) else enumerate(node):
            if isinstance(child, dict | list):
                stack.append(child)
            else:
                leaves.append((node, key))
    for container, key in rng.sample(leaves, min(changes, len(leaves))):
        container[key] = _random_value(rng, 3)
    return out


def _fraud_bodies(claim: dict[str, Any], bundle: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(name, body) of hostile fraud requests: deep valid FHIR, limits, numbers, strings, keys, bytes."""
    claim_json, bundle_json = json.dumps(claim), json.dumps(bundle)
    first = json.dumps(bundle["entry"][0]["resource"])
    bodies = [(f"claim-extensions-{n}", _with_extension(claim_json, n)) for n in (30, 31, 100, 200, 1000)]
    bodies += [
        (f"bundle-extensions-{n}", bundle_json.replace(first, _with_extension(first, n), 1)) for n in (100, 200, 1000)
    ]
    bodies += [(f"arrays-{n}", "[" * n + "]" * n) for n in (64, 65, 1100)]
    bodies += [(f"objects-{n}", '{"a":' * n + "1" + "}" * n) for n in (64, 65)]
    bodies += [
        ("too-many-values", "[" + "0," * 1_000_001 + "0]"),
        ("huge-total", json.dumps({**claim, "total": {"value": 1e308, "currency": "KZT"}})),
        ("large-total", json.dumps({**claim, "total": {"value": 999_999_999_999_999, "currency": "KZT"}})),
        ("tiny-total", json.dumps({**claim, "total": {"value": 1e-300, "currency": "KZT"}})),
        ("huge-int", json.dumps({**claim, "total": {"value": 10**30, "currency": "KZT"}})),
        ("huge-sequence", json.dumps({**claim, "insurance": [{"sequence": 2**70, "focal": True}]})),
        ("negative-total", json.dumps({**claim, "total": {"value": -1.7976931348623157e308, "currency": "KZT"}})),
        ("out-of-double", claim_json.replace('"created":', '"x": 1e400, "created":', 1)),
        ("nan", claim_json.replace('"created":', '"x": NaN, "created":', 1)),
        ("infinity", claim_json.replace('"created":', '"x": -Infinity, "created":', 1)),
        ("long-id", json.dumps({**claim, "id": "a" * 100_000})),
        ("long-text", json.dumps({**claim, "text": {"status": "generated", "div": f"<div>{'x' * 2_000_000}</div>"}})),
        ("long-key", json.dumps({**claim, "k" * 100_000: 1})),
        ("duplicate-keys", claim_json.replace('"id":', '"id": "x", "resourceType": "Patient", "id":', 1)),
        ("duplicate-type", '{"resourceType":"Patient",' + claim_json[1:]),
        ("empty", ""),
        ("bom", "\ufeff" + claim_json),
        ("lone-surrogate", claim_json.replace('"created":', '"x": "\\ud800", "created":', 1)),
    ]
    out = [(name, text.encode("utf-8", "surrogatepass")) for name, text in bodies]
    out += [
        ("invalid-utf8", claim_json.encode().replace(b'"created":', b'"x": "\xff\xfe\xc0", "created":', 1)),
        ("latin1", json.dumps({**claim, "id": "é"}, ensure_ascii=False).encode("latin-1")),
    ]
    rng = random.Random(SEED)
    out += [(f"mutated-claim-{i}", json.dumps(_mutated(rng, claim, 1 + i % 3)).encode()) for i in range(60)]
    out += [(f"mutated-bundle-{i}", json.dumps(_mutated(rng, bundle, 1 + i % 3)).encode()) for i in range(20)]
    return out


def _dicom_mutants(dicom: bytes, count: int) -> list[tuple[str, bytes]]:
    """A seeded corpus of damaged DICOM files: bytes flipped, runs zeroed or maxed, truncated, duplicated."""
    rng = random.Random(SEED + 1)
    out = []
    for i in range(count):
        data = bytearray(dicom)
        kind = i % 4
        if kind == 0:  # flip bytes in the header, where lengths and tags are
            for _ in range(rng.randrange(1, 16)):
                data[rng.randrange(128, min(len(data), 2048))] = rng.randrange(256)
        elif kind == 1:  # a run of 0xFF (lengths of 4 GiB) somewhere
            at = rng.randrange(132, len(data) - 8)
            data[at : at + 4] = b"\xff\xff\xff\xff"
        elif kind == 2:
            data = data[: rng.randrange(132, len(data))]
        else:
            for _ in range(rng.randrange(1, 64)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        out.append((f"dicom-{i}-kind-{kind}", bytes(data)))
    return out


def _audit_count(service: Service) -> int:
    return sum(1 for _ in service.app.state.audit_log.iter_all())


def _assert_outcome(name: str, response: httpx.Response, secrets: tuple[str, ...]) -> None:
    assert response.status_code < 500, (name, response.status_code, response.text[:300])
    if response.status_code >= 400:
        body = response.json()
        assert body["resourceType"] == "OperationOutcome", (name, response.text[:300])
        assert body["issue"] and all(i["diagnostics"] for i in body["issue"]), name
    for secret in secrets:
        assert secret not in response.text, name


def test_hostile_fhir_never_5xx_and_every_request_audited(service: Service, case: Case) -> None:
    claim = next(r for r in case.resources if r["resourceType"] == "Claim")
    bodies = _fraud_bodies(claim, case.bundle(shared=True))
    headers = {**auth(service.tokens["investigator"]), "Content-Type": "application/fhir+json"}
    before = _audit_count(service)
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=service.base, timeout=120) as client:
        for name, body in bodies:
            response = client.post("/fraud/score?format=json", content=body, headers=headers)
            _assert_outcome(name, response, (case.iin,))
            statuses[name] = response.status_code
    assert _audit_count(service) - before == len(bodies)
    too_costly = {n: s for n, s in statuses.items() if n.split("-")[-1] in ("31", "65", "100", "200", "1000", "1100")}
    assert set(too_costly.values()) == {422}, too_costly
    assert statuses["claim-extensions-30"] == 200  # the deepest extension under the limit is scored
    assert statuses["arrays-64"] == statuses["objects-64"] == 422  # within the depth limit: not a resource
    assert statuses["too-many-values"] == 413
    assert statuses["huge-total"] == statuses["huge-int"] == 422 and statuses["large-total"] == 200
    not_json = ("nan", "infinity", "out-of-double", "invalid-utf8", "lone-surrogate", "empty")
    assert {statuses[n] for n in not_json} == {400}
    mutated = {s for n, s in statuses.items() if n.startswith("mutated")}
    assert {200, 422} <= mutated, mutated


def test_hostile_diagnosis_bundles_and_dicom_never_5xx_and_every_request_audited(service: Service, case: Case) -> None:
    dicom = case.dicom.read_bytes()
    bundle = _dx_bundle(case)
    bundle_json = json.dumps(bundle)
    patient = json.dumps(case.patient)
    assert patient in bundle_json
    parts: list[tuple[str, bytes, bytes | None]] = [
        (f"bundle-extensions-{n}", dicom, bundle_json.replace(patient, _with_extension(patient, n), 1).encode())
        for n in (100, 200, 1000)
    ]
    parts += [
        ("bundle-nan", dicom, bundle_json.replace('"type":', '"x": NaN, "type":', 1).encode()),
        ("bundle-invalid-utf8", dicom, bundle_json.encode().replace(b'"type":', b'"x": "\xff", "type":', 1)),
        ("bundle-arrays-65", dicom, b"[" * 65 + b"]" * 65),
        ("bundle-duplicate-type", dicom, ('{"resourceType":"Patient",' + bundle_json[1:]).encode()),
        ("bundle-huge-number", dicom, bundle_json.replace('"type":', '"x": 1e308, "type":', 1).encode()),
        ("empty-dicom", b"", None),
    ]
    parts += [(name, data, None) for name, data in _dicom_mutants(dicom, 40)]
    headers = auth(service.tokens["clinician"])
    before = _audit_count(service)
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=service.base, timeout=120) as client:
        for name, data, bundle_bytes in parts:
            files: dict[str, Any] = {"file": ("study.dcm", data, "application/dicom")}
            if bundle_bytes is not None:
                files["bundle"] = ("bundle.json", bundle_bytes, "application/fhir+json")
            response = client.post("/diagnosis/pneumonia", files=files, headers=headers)
            _assert_outcome(name, response, (case.iin,))
            statuses[name] = response.status_code
        missing_file = client.post("/diagnosis/pneumonia", files={"bundle": ("b.json", b"{}")}, headers=headers)
        _assert_outcome("missing-file", missing_file, ())
    assert _audit_count(service) - before == len(parts) + 1
    assert {statuses[f"bundle-extensions-{n}"] for n in (100, 200, 1000)} == {422}
    assert statuses["bundle-arrays-65"] == 422 and statuses["bundle-nan"] == statuses["bundle-invalid-utf8"] == 400
    assert missing_file.status_code == 422
    dicom_statuses = {s for n, s in statuses.items() if n.startswith("dicom-")}
    assert {400, 422} <= dicom_statuses, dicom_statuses  # refused at parsing and past it (here also 200s)
    record = list(service.app.state.audit_log.iter_all())[-1]
    assert (record.outcome, record.output) == ("4", {"error": "invalid", "status": 422})

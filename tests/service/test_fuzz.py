"""Seeded random requests against every OpenAPI operation: never a 5xx, every error an OperationOutcome.

This plain seeded fuzz covers the app without models (headers, tokens, content types and bodies the spec does not
describe); the spec-driven schemathesis fuzz of the app with its models is in ``test_model_endpoints.py``.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from pipelines.service.deps import InvestigatorPrincipal, RequestAuditDep

from .helpers import FAKE_IIN, auth

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

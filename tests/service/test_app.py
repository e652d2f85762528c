"""The app through FastAPI's TestClient: role matrix, OperationOutcome errors, limits, CORS, readiness, audit reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from pipelines.predictionlog.roles import Role

from .helpers import FAKE_IIN, StaticProvider, auth, build_app, make_settings

PATIENT = "a" * 32
SCORE_BODY = {"patient": PATIENT, "claims": [{"claim_id": "c1", "amount": 125000.0}]}

# endpoint -> roles that may call it (None: public). admin passes every role check.
MATRIX: dict[tuple[str, str], set[Role] | None] = {
    ("GET", "/health"): None,
    ("GET", "/ready"): set(Role),
    ("GET", "/models"): set(Role),
    ("POST", "/admin/reload"): {Role.admin},
    ("GET", "/audit/events"): {Role.auditor, Role.admin},
    ("GET", "/audit/verify"): {Role.auditor, Role.admin},
    ("POST", "/test/score"): {Role.investigator, Role.admin},
}


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    if method == "POST":
        return client.post(path, json=SCORE_BODY if path == "/test/score" else None, headers=headers)
    return client.get(path, headers=headers)


def assert_outcome(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    OperationOutcome.model_validate(body)  # a real R4B OperationOutcome
    assert body["issue"][0]["code"] == code
    assert body["issue"][0]["severity"] == "error"
    assert body["issue"][0]["diagnostics"]
    return body


@pytest.mark.parametrize(("method", "path"), list(MATRIX))
def test_role_matrix(client: TestClient, tokens: dict[str, str], method: str, path: str) -> None:
    allowed = MATRIX[(method, path)]
    anonymous = call(client, method, path, {})
    wrong = call(client, method, path, auth("shipa_not-a-real-token"))
    if allowed is None:
        assert anonymous.status_code == 200
        assert wrong.status_code == 200
    else:
        assert_outcome(anonymous, 401, "login")
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert_outcome(wrong, 401, "login")
    for role in Role:
        response = call(client, method, path, auth(tokens[role.value]))
        if allowed is None or role in allowed:
            assert response.status_code == 200, (role, response.text)
        else:
            body = assert_outcome(response, 403, "forbidden")
            assert "role" in body["issue"][0]["diagnostics"]


def test_malformed_and_revoked_tokens_get_401(client: TestClient, app: Any, tokens: dict[str, str]) -> None:
    assert_outcome(client.get("/ready", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "login")
    assert_outcome(client.get("/ready", headers={"Authorization": "Bearer"}), 401, "login")
    assert client.get("/ready", headers=auth(tokens["clinician"])).status_code == 200
    app.state.tokens.revoke("clinician-1")
    assert_outcome(client.get("/ready", headers=auth(tokens["clinician"])), 401, "login")


def test_body_over_limit_is_413(client: TestClient, tokens: dict[str, str]) -> None:
    big = b'{"patient": "' + b"a" * 5000 + b'"}'
    response = client.post(
        "/test/score", content=big, headers={**auth(tokens["investigator"]), "Content-Type": "application/json"}
    )
    body = assert_outcome(response, 413, "too-long")
    assert "4096" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None, "multipart/form-data; boundary=x"])
def test_unsupported_content_type_is_415(client: TestClient, tokens: dict[str, str], content_type: str | None) -> None:
    headers = auth(tokens["investigator"])
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post("/test/score", content=b'{"patient": "x"}', headers=headers)
    assert_outcome(response, 415, "not-supported")


def test_fhir_json_content_type_is_accepted(client: TestClient, tokens: dict[str, str]) -> None:
    import json

    headers = {**auth(tokens["investigator"]), "Content-Type": "application/fhir+json; charset=utf-8"}
    response = client.post("/test/score", content=json.dumps(SCORE_BODY).encode(), headers=headers)
    assert response.status_code == 200, response.text


def test_invalid_json_is_400_structure(client: TestClient, tokens: dict[str, str]) -> None:
    headers = {**auth(tokens["investigator"]), "Content-Type": "application/json"}
    response = client.post("/test/score", content=b'{"patient": "abc", "claims": [', headers=headers)
    body = assert_outcome(response, 400, "structure")
    assert "not valid JSON" in body["issue"][0]["diagnostics"]


def test_invalid_fields_are_422_naming_each_field_without_echoing_values(
    client: TestClient, tokens: dict[str, str]
) -> None:
    payload = {"patient": FAKE_IIN, "claims": [{"claim_id": "c1", "amount": -5}, {"amount": 3}]}
    response = client.post("/test/score", json=payload, headers=auth(tokens["investigator"]))
    body = assert_outcome(response, 422, "invalid")
    expressions = sorted(e for i in body["issue"] for e in i["expression"])
    assert expressions == ["claims[0].amount", "claims[1].claim_id", "patient"]
    assert all(i["diagnostics"].startswith("body field '") for i in body["issue"])
    assert FAKE_IIN not in response.text


def test_fhir_validation_error_names_the_fhir_field(client: TestClient, tokens: dict[str, str]) -> None:
    patient = {"resourceType": "Patient", "birthDate": "1988-13-45", "identifier": [{"system": 3, "value": FAKE_IIN}]}
    response = client.post("/test/fhir", json=patient, headers=auth(tokens["investigator"]))
    body = assert_outcome(response, 422, "invalid")
    expressions = {e for i in body["issue"] for e in i["expression"]}
    assert expressions == {"Patient.birthDate", "Patient.identifier[0].system"}
    assert FAKE_IIN not in response.text


def test_rate_limit_is_per_token_and_answers_429(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path, rate_per_s=0.01, burst=3), StaticProvider())
    first = app.state.tokens.add("fast", "clinician")
    second = app.state.tokens.add("other", "clinician")
    with TestClient(app) as client:
        statuses = [client.get("/ready", headers=auth(first)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        response = client.get("/ready", headers=auth(first))
        assert_outcome(response, 429, "throttled")
        assert int(response.headers["retry-after"]) >= 1
        assert client.get("/ready", headers=auth(second)).status_code == 200
        assert client.get("/health").status_code == 200  # no token, no bucket


def test_unhandled_error_is_generic_500_without_trace_or_phi(
    client: TestClient, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.service"):
        response = client.post("/test/boom", headers=auth(tokens["investigator"]))
    body = assert_outcome(response, 500, "exception")
    text = response.text
    for leak in ("Traceback", "RuntimeError", "/srv/secret", ".py", FAKE_IIN, "weights"):
        assert leak not in text
    error_id = body["issue"][0]["diagnostics"].split("error id ")[1].split()[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert error_id in logged and "RuntimeError" in logged
    assert FAKE_IIN not in logged and "/srv/secret" not in logged


def test_cors_closed_by_default(client: TestClient) -> None:
    simple = client.get("/health", headers={"Origin": "https://evil.example"})
    assert not any(h.startswith("access-control-") for h in simple.headers)
    preflight = client.options(
        "/ready", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code >= 400
    assert not any(h.startswith("access-control-") for h in preflight.headers)


def test_cors_open_only_to_configured_origins(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path, cors_origins=("https://ehr.example",)), StaticProvider())
    with TestClient(app) as client:
        ok = client.get("/health", headers={"Origin": "https://ehr.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ehr.example"
        other = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_ready_models_and_reload(tmp_path: Path) -> None:
    provider = StaticProvider(ready=False)
    app = build_app(make_settings(tmp_path), provider)
    admin = app.state.tokens.add("root", "admin")
    with TestClient(app) as client:
        body = assert_outcome(client.get("/ready", headers=auth(admin)), 503, "transient")
        assert "still loading" in body["issue"][0]["diagnostics"]
        reloaded = client.post("/admin/reload", headers=auth(admin))
        assert reloaded.status_code == 200 and provider.reloads == 1
        ready = client.get("/ready", headers=auth(admin)).json()
        assert ready == {
            "ready": True,
            "models": [
                {"name": "shipa-pneumonia", "version": "3", "alias": "champion"},
                {"name": "shipa-fraud", "version": "7", "alias": "champion"},
            ],
        }
        cards = client.get("/models", headers=auth(admin)).json()["models"]
        assert [c["name"] for c in cards] == ["shipa-pneumonia", "shipa-fraud"]


def test_without_provider_model_endpoints_answer_503(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path), None)
    admin = app.state.tokens.add("root", "admin")
    with TestClient(app) as client:
        for method, path in (("GET", "/ready"), ("GET", "/models"), ("POST", "/admin/reload")):
            assert_outcome(client.request(method, path, headers=auth(admin)), 503, "transient")


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/health", "/ready", "/models", "/admin/reload", "/audit/events", "/audit/verify"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_unknown_path_and_method(client: TestClient, tokens: dict[str, str]) -> None:
    assert_outcome(client.get(f"/Patient/{FAKE_IIN}", headers=auth(tokens["admin"])), 404, "not-found")
    assert_outcome(client.delete("/ready", headers=auth(tokens["admin"])), 405, "not-supported")


def test_model_requests_are_audited_and_served_as_fhir_bundle(client: TestClient, tokens: dict[str, str]) -> None:
    for amount in (10.0, 500000.0, 2e6):
        body = {"patient": PATIENT, "claims": [{"claim_id": "c9", "amount": amount}]}
        assert client.post("/test/score", json=body, headers=auth(tokens["investigator"])).status_code == 200
    assert client.post("/test/score", json=SCORE_BODY, headers=auth(tokens["admin"])).status_code == 200
    auditor = auth(tokens["auditor"])

    response = client.get("/audit/events", headers=auditor)
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and bundle["total"] == 4
    newest = bundle["entry"][0]["resource"]
    assert newest["agent"][0]["who"]["display"] == "admin-1"
    assert {"reference": f"Patient/{PATIENT}"} in [e.get("what") for e in newest["entity"]]

    page = client.get("/audit/events?role=investigator&page_size=2&format=json", headers=auditor).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert [i["output"]["scores"]["c9"] for i in page["items"]] == [1.0, 0.5]
    assert all(i["role"] == "investigator" and i["purpose_of_use"] == "FRAUD" for i in page["items"])
    assert all(i["model_name"] == "shipa-fraud" and i["model_version"] == "7" for i in page["items"])

    paged = client.get("/audit/events?page_size=3", headers=auditor).json()
    assert [link["relation"] for link in paged["link"]] == ["self", "next"]
    assert "page=2" in paged["link"][1]["url"]
    assert client.get("/audit/events?model=other&format=json", headers=auditor).json()["total"] == 0
    assert client.get("/audit/events?outcome=success&format=json", headers=auditor).json()["total"] == 4
    assert client.get("/audit/events?outcome=12&format=json", headers=auditor).json()["total"] == 0
    future = client.get("/audit/events?start=2999-01-01T00:00:00Z&format=json", headers=auditor).json()
    assert future["total"] == 0
    assert client.get("/audit/verify", headers=auditor).json()["ok"] is True
    bad = client.get("/audit/events?outcome=maybe&page_size=501", headers=auditor)
    body = assert_outcome(bad, 422, "invalid")
    assert {e for i in body["issue"] for e in i["expression"]} == {"outcome", "page_size"}


def test_request_log_has_template_status_token_but_no_query_or_body(
    client: TestClient, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pipelines.service.access"):
        client.post("/test/score", json={**SCORE_BODY, "note": FAKE_IIN}, headers=auth(tokens["investigator"]))
        client.get(f"/audit/events?model={FAKE_IIN}", headers=auth(tokens["auditor"]))
        client.get(f"/Patient/{FAKE_IIN}")
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.service.access"]
    assert len(lines) == 3
    assert lines[0].startswith("POST /test/score 200 ") and lines[0].endswith("token=investigator-1")
    assert lines[1].startswith("GET /audit/events 200 ") and lines[1].endswith("token=auditor-1")
    assert lines[2].startswith("GET <unmatched> 404 ") and lines[2].endswith("token=-")
    assert not any(FAKE_IIN in line or "?" in line for line in lines)


class BrokenProvider(StaticProvider):
    """A provider whose registry is unreachable, with a path in its error message."""

    def ready(self) -> dict[str, Any]:
        raise ConnectionError("cannot reach sqlite:////srv/mlflow/mlflow.db")

    def cards(self) -> list[dict[str, Any]]:
        raise ConnectionError("cannot reach sqlite:////srv/mlflow/mlflow.db")


def test_failing_provider_gives_503_without_its_message(tmp_path: Path) -> None:
    app = build_app(make_settings(tmp_path), BrokenProvider())
    admin = app.state.tokens.add("root", "admin")
    with TestClient(app) as client:
        for path in ("/ready", "/models"):
            response = client.get(path, headers=auth(admin))
            assert_outcome(response, 503, "transient")
            assert "/srv" not in response.text and "sqlite" not in response.text


def test_numeric_versions_from_a_provider_are_served_as_strings(tmp_path: Path) -> None:
    provider = StaticProvider()
    provider.models = [{"name": "shipa-fraud", "version": 7, "alias": "champion", "run_id": "abc"}]
    app = build_app(make_settings(tmp_path), provider)
    admin = app.state.tokens.add("root", "admin")
    with TestClient(app) as client:
        models = client.get("/ready", headers=auth(admin)).json()["models"]
    assert models == [{"name": "shipa-fraud", "version": "7", "alias": "champion", "run_id": "abc"}]

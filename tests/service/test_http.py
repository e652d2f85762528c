"""The app behind a real uvicorn on 127.0.0.1, over HTTP with httpx: auth, streamed bodies, errors, concurrency."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi import FastAPI

from .helpers import FAKE_IIN, auth

PATIENT = "b" * 32


def test_health_auth_and_roles_over_http(live_server: str, tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=live_server) as client:
        health = client.get("/health")
        assert health.status_code == 200 and "server" not in health.headers
        anonymous = client.get("/ready")
        assert anonymous.status_code == 401 and anonymous.json()["issue"][0]["code"] == "login"
        assert client.get("/ready", headers=auth(tokens["clinician"])).status_code == 200
        forbidden = client.get("/audit/verify", headers=auth(tokens["clinician"]))
        assert forbidden.status_code == 403 and forbidden.json()["issue"][0]["code"] == "forbidden"


def test_streamed_body_over_limit_is_413(live_server: str, tokens: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"patient": "'
        for _ in range(10):
            yield b"a" * 1000  # 10 kB, without a Content-Length: chunked transfer
        yield b'"}'

    headers = {**auth(tokens["investigator"]), "Content-Type": "application/json"}
    with httpx.Client(base_url=live_server) as client:
        response = client.post("/test/score", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-long"


def test_forced_500_over_http_has_no_trace(live_server: str, tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=live_server) as client:
        response = client.post("/test/boom", headers=auth(tokens["investigator"]))
    assert response.status_code == 500
    assert response.json()["issue"][0]["code"] == "exception"
    assert "Traceback" not in response.text and FAKE_IIN not in response.text and ".py" not in response.text


def test_concurrent_model_requests_keep_the_audit_chain(live_server: str, tokens: dict[str, str], app: FastAPI) -> None:
    def one(i: int) -> int:
        body = {"patient": PATIENT, "claims": [{"claim_id": f"c{i}", "amount": float(i)}]}
        with httpx.Client(base_url=live_server) as client:
            return client.post("/test/score", json=body, headers=auth(tokens["investigator"])).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(one, range(60)))
    assert statuses == [200] * 60
    with httpx.Client(base_url=live_server) as client:
        verified = client.get("/audit/verify", headers=auth(tokens["auditor"])).json()
    assert (verified["ok"], verified["checked"]) == (True, 60)
    outputs = {r.output["scores"].popitem()[0] for r in app.state.audit_log.iter_all()}
    assert outputs == {f"c{i}" for i in range(60)}

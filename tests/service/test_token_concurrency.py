"""A token with ``MAX_CONCURRENT_PER_TOKEN`` requests in flight gets 429 for the next; other tokens are unaffected,
and a finished request frees its slot. Requests held open by sending their body slowly, over raw sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from .helpers import StaticProvider, auth, build_app, make_settings, served

LIMIT = 2


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    settings = make_settings(tmp_path, max_concurrent_per_token=LIMIT)
    app = build_app(settings, StaticProvider())
    with served(app, settings, start_timeout=10) as base:
        yield base, app


def _hold(base: str, token: str) -> socket.socket:
    """A request whose body is still being sent: it stays in flight until the socket closes."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    head = (
        "POST /test/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: 500\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"patient": ')
    return sock


def _score(base: str, token: str) -> httpx.Response:
    body = {"patient": "a" * 32, "claims": [{"claim_id": "c1", "amount": 10}]}
    return httpx.post(f"{base}/test/score", json=body, headers=auth(token), timeout=10)


def test_a_token_over_its_concurrent_requests_is_throttled_and_others_are_not(limited: tuple[str, FastAPI]) -> None:
    base, app = limited
    busy, other = app.state.tokens.add("busy", "investigator"), app.state.tokens.add("other", "investigator")
    held = [_hold(base, busy) for _ in range(LIMIT)]
    try:
        time.sleep(0.3)  # both requests have reached the app
        refused = _score(base, busy)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        body = refused.json()
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "throttled"
        assert f"already has {LIMIT} requests in progress" in body["issue"][0]["diagnostics"]
        assert _score(base, other).status_code == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while (status := _score(base, busy).status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.1)  # the server notices the closed connections
    assert status == 200

"""Read deadlines: a client that goes silent while sending headers or a body is disconnected; a slow but steady
upload is not. Raw sockets against a real uvicorn on 127.0.0.1 with the service's protocol."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from pipelines.service.settings import ServiceSettings

from .helpers import StaticProvider, auth, build_app, make_settings, served

DEADLINE_S = 0.6


@pytest.fixture
def timed(tmp_path: Path) -> Iterator[tuple[str, FastAPI]]:
    settings: ServiceSettings = make_settings(tmp_path, header_timeout_s=DEADLINE_S, body_timeout_s=DEADLINE_S)
    app = build_app(settings, StaticProvider())
    with served(app, settings, start_timeout=10) as base:
        yield base, app


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``sock`` (fails if it answered or kept it open longer)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    data = sock.recv(65536)
    assert data == b"", data[:200]
    return time.monotonic() - started


def test_silence_before_the_headers_end_closes_the_connection(timed: tuple[str, FastAPI]) -> None:
    base, _ = timed
    for first_bytes in (b"", b"POST /test/score HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        with _connect(base) as sock:
            sock.sendall(first_bytes)
            assert DEADLINE_S * 0.5 < _closed_within(sock, 10) < DEADLINE_S + 5


def test_silence_inside_the_body_closes_the_connection(timed: tuple[str, FastAPI]) -> None:
    base, app = timed
    token = app.state.tokens.add("inv", "investigator")
    head = (
        f"POST /test/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth(token)['Authorization']}\r\nContent-Length: 200\r\n\r\n"
    )
    with _connect(base) as sock:
        sock.sendall(head.encode() + b'{"patient": ')
        assert _closed_within(sock, 10) < DEADLINE_S + 5


def test_a_slow_but_steady_body_is_answered(timed: tuple[str, FastAPI]) -> None:
    base, app = timed
    token = app.state.tokens.add("inv", "investigator")
    body = json.dumps({"patient": "a" * 32, "claims": [{"claim_id": "c1", "amount": 5000}]}).encode()
    head = (
        f"POST /test/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth(token)['Authorization']}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with _connect(base) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        step = max(1, len(body) // 8)
        for i in range(0, len(body), step):  # in all longer than the deadline, each pause shorter
            time.sleep(DEADLINE_S / 3)
            sock.sendall(body[i : i + step])
        assert time.monotonic() - started > DEADLINE_S
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"c1"' in answer

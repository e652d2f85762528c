"""Pure ASGI middleware: request logging, a catch-all for exceptions and unaudited answers, body size and
content-type checks, and a limit on each token's requests in flight.

Pure ASGI (not ``BaseHTTPMiddleware``) keeps each layer to a few microseconds a request.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
import uuid
from pathlib import Path
from typing import Protocol

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.service.errors import FhirHTTPError
from pipelines.service.outcome import error_response

access_log = logging.getLogger("pipelines.service.access")
error_log = logging.getLogger("pipelines.service.errors")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
STATE_TOKEN_NAME = "token_name"
STATE_STARTED = "started"
STATE_AUDIT = "audit"  # the request's audit, set by pipelines.service.deps.audit_of_request


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/audit/events``), never the raw path (it could hold an identifier)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


class RequestLogMiddleware:
    """Logs one line per request: method, path template, status, latency and token name; never bodies or queries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        state[STATE_STARTED] = start
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            access_log.info(
                "%s %s %d %.1fms token=%s",
                scope["method"],
                route_template(scope),
                status,
                (time.perf_counter() - start) * 1000,
                state.get(STATE_TOKEN_NAME, "-"),
            )


class PendingAudit(Protocol):
    """A request's audit (``pipelines.service.deps.RequestAudit``), as this module sees it in the request state."""

    async def settle(self, status: int, code: str | None = None) -> None:
        """Write the request's record if the route did not (the request is answered ``status``, issue ``code``)."""


# Exceptions that only an input can cause here (every decoder and validator is bounded before, so they mean a
# limit is missing): answered as a refusal of that input, not as a fault of the service.
_INPUT_FAULTS: dict[type[BaseException], tuple[int, str]] = {
    RecursionError: (422, "the request is nested too deeply to be processed"),
    MemoryError: (413, "the request needs more memory than the service gives one request"),
}


class CatchAllMiddleware:
    """Turns any unhandled exception into an OperationOutcome, and sees that every audited request is audited.

    A ``RecursionError`` or ``MemoryError`` becomes a 422 or 413 ``too-costly`` (only an input can cause them), any
    other exception a generic 500. The log line names the exception type, the route template, an error id (also in
    the response) and the code locations, but not the exception message, which could quote personal data from the
    request.

    A request whose route registered an audit (``STATE_AUDIT``: a model endpoint called with a token of its role)
    and answers without having written its record, whatever the status, gets it written before the answer's first
    byte leaves (:meth:`PendingAudit.settle`).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                audit: PendingAudit | None = scope.get("state", {}).get(STATE_AUDIT)
                if audit is not None:
                    await audit.settle(message["status"])
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception as exc:
            error_id = uuid.uuid4().hex[:12]
            frames = traceback.extract_tb(exc.__traceback__)[-8:]
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in reversed(frames))
            error_log.error(
                "unhandled %s on %s %s (error id %s) at %s",
                type(exc).__name__,
                scope.get("method"),
                route_template(scope),
                error_id,
                where,
            )
            if started:
                return
            fault = next((v for t, v in _INPUT_FAULTS.items() if isinstance(exc, t)), None)
            status, code = (fault[0], "too-costly") if fault else (500, "exception")
            text = (
                f"{fault[1]} (error id {error_id})"
                if fault
                else f"internal error; quote error id {error_id} to the service operator"
            )
            audit: PendingAudit | None = scope.get("state", {}).get(STATE_AUDIT)
            if audit is not None:
                await audit.settle(status, code)
            await error_response(status, text, code)(scope, receive, send_tracking)


class BodyLimitMiddleware:
    """Answers 413 for a body over ``max_bytes``: at once from Content-Length, or while a streamed body is read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await error_response(400, "Content-Length is not a number", "structure")(scope, receive, send)
                return
            if size > self.max_bytes:
                await error_response(413, self._message(), "too-long")(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes FastAPI's body parsing untouched and reaches our handler.
                    raise FhirHTTPError(413, "too-long", self._message())
            return message

        await self.app(scope, limited_receive, send)

    def _message(self) -> str:
        return f"request body is larger than the limit of {self.max_bytes} bytes"


class ContentTypeMiddleware:
    """Answers 415 when a request with a body does not declare one of the allowed media types."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = frozenset(a.lower() for a in allowed)
        self._hint = ", ".join(sorted(self.allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        has_body = headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers
        media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if has_body and media_type not in self.allowed:
            response = error_response(415, f"unsupported content type; send one of: {self._hint}", "not-supported")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class TokenConcurrencyMiddleware:
    """Answers 429 when one bearer token already has ``limit`` requests in flight in this process.

    The rate limit (a token bucket) bounds requests per second, not their cost: a token could hold many slow
    requests open at once (large uploads, read slowly) and starve everyone else. Counted by the Authorization
    header's hash before the token is looked up (so an unknown token is limited too, and no database is asked);
    a request without one is not counted (it is refused as 401 anyway). Per worker process, like the rate limit.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self._in_flight: dict[bytes, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is None:
            await self.app(scope, receive, send)
            return
        key = hashlib.blake2b(header, digest_size=16).digest()
        count = self._in_flight.get(key, 0)
        if count >= self.limit:
            message = f"this token already has {self.limit} requests in progress; retry when one has finished"
            await error_response(429, message, "throttled", headers={"Retry-After": "1"})(scope, receive, send)
            return
        self._in_flight[key] = count + 1
        try:
            await self.app(scope, receive, send)
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]

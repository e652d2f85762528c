"""Typed dependencies: the current token (``CurrentPrincipal``), role checks, settings, provider, audit log.

Routes declare what they need in their signature, in the manner of full-stack-fastapi-template's ``deps.py``::

    @router.post("/diagnosis")
    def diagnose(principal: ClinicianPrincipal, audit: RequestAuditDep, provider: ModelSourceDep, ...): ...
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Required, TypedDict, Unpack

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipelines.predictionlog.entry import LogEntry
from pipelines.predictionlog.log import AuditOutcome, PredictionLog, PredictionRecord, sha256_hex
from pipelines.predictionlog.roles import Role, role_allows
from pipelines.service.errors import FhirHTTPError
from pipelines.service.middleware import STATE_AUDIT, STATE_STARTED, route_template
from pipelines.service.model_source import ModelSource
from pipelines.service.outcome import CODE_BY_STATUS
from pipelines.service.ratelimit import TokenBucketLimiter
from pipelines.service.settings import ServiceSettings
from pipelines.service.tokens import TokenStore

log = logging.getLogger(__name__)
_EMPTY_SHA256 = sha256_hex(b"")

bearer_scheme = HTTPBearer(auto_error=False, description="a service token from `shipa tokens add`")


@dataclass(frozen=True)
class Principal:
    """The caller: the token's name and role."""

    name: str
    role: Role


async def get_settings(request: Request) -> ServiceSettings:
    """The settings the app was created with."""
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_audit_log(request: Request) -> PredictionLog:
    """The app's audit log."""
    return request.app.state.audit_log  # type: ignore[no-any-return]


async def get_provider(request: Request) -> ModelSource:
    """The app's model provider; 503 when the service was started without one."""
    provider = request.app.state.provider
    if provider is None:
        raise FhirHTTPError(503, "transient", "no model provider is configured")
    return provider  # type: ignore[no-any-return]


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
PredictionLogDep = Annotated[PredictionLog, Depends(get_audit_log)]
ModelSourceDep = Annotated[ModelSource, Depends(get_provider)]


def authenticate_request(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """Authenticate the bearer token and take one request from its rate-limit bucket.

    Runs on the event loop: the indexed lookup takes about 0.1 ms, less than a hop to the thread pool would.

    Raises:
        FhirHTTPError: 401 (login) without a valid active token; 429 (throttled) over the token's rate.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise FhirHTTPError(401, "login", "a bearer token is required", headers=challenge)
    tokens: TokenStore = request.app.state.tokens
    info = tokens.authenticate(credentials.credentials)
    if info is None:
        raise FhirHTTPError(401, "login", "the bearer token is unknown or revoked", headers=challenge)
    request.state.token_name = info.name  # read by RequestLogMiddleware (STATE_TOKEN_NAME)
    limiter: TokenBucketLimiter = request.app.state.limiter
    wait = limiter.acquire(info.name)
    if wait > 0:
        raise FhirHTTPError(
            429, "throttled", "rate limit exceeded for this token", headers={"Retry-After": str(math.ceil(wait))}
        )
    return Principal(info.name, info.role)


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


async def current_principal(request: Request, credentials: BearerCredentials) -> Principal:
    """The caller of this request (see :func:`authenticate_request`)."""
    return authenticate_request(request, credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def checked_role(principal: Principal, needed: tuple[Role, ...]) -> Principal:
    """``principal`` when its role is one of ``needed`` (``admin`` always is).

    Raises:
        FhirHTTPError: 403 (forbidden) for a token of another role.
    """
    if not role_allows(principal.role, needed):
        raise FhirHTTPError(403, "forbidden", f"this endpoint needs the {' or '.join(r.value for r in needed)} role")
    return principal


def require_role(*roles: Role | str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through tokens holding any of ``roles`` (``admin`` always passes).

    Raises (from the dependency):
        FhirHTTPError: 403 (forbidden) for a token of another role.
    """
    needed = tuple(Role(r) for r in roles)
    if not needed:
        raise ValueError("require_role needs at least one role")

    async def check_role(principal: CurrentPrincipal) -> Principal:
        return checked_role(principal, needed)

    check_role.__name__ = f"require_{'_or_'.join(r.value for r in needed)}"
    return check_role


ClinicianPrincipal = Annotated[Principal, Depends(require_role(Role.clinician))]
InvestigatorPrincipal = Annotated[Principal, Depends(require_role(Role.investigator))]
AuditorPrincipal = Annotated[Principal, Depends(require_role(Role.auditor))]
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.admin))]


class AuditFields(TypedDict, total=False):
    """What a route adds to a request's audit record (see :meth:`RequestAudit.record`)."""

    model_name: Required[str]
    model_version: Required[str]
    model_alias: Required[str]
    output: Required[Any]
    patient_pseudonym: str | None
    outcome: AuditOutcome | str
    outcome_desc: str | None
    purpose_of_use: str
    input_sha256: str | None


UNRESOLVED_MODEL = ("-", "-", "-")


@dataclass
class RequestAudit:
    """Everything about the current request the audit record needs; the route adds the model and its answer.

    Every request that reaches a model endpoint with a token of its role gets exactly one record: the route
    writes it (:meth:`record`), and a request answered without one (refused by FastAPI's validation, a missing
    model, an exception) gets it from :meth:`settle`, which ``CatchAllMiddleware`` calls before the answer leaves.

    Attributes:
        model: (name, version, alias) of the model the request was for, once the route knows it (for
            :meth:`settle`); ``("-", "-", "-")`` before.
        recorded: the request's record is written.
    """

    audit_log: PredictionLog
    principal: Principal
    endpoint: str
    input_sha256: str | None
    started: float
    model: tuple[str, str, str] = UNRESOLVED_MODEL
    recorded: bool = False

    def record(self, **fields: Unpack[AuditFields]) -> LogEntry:
        """Append this request's audit record (latency measured from the start of the request).

        ``input_sha256`` overrides the hash of the raw body; a route whose body was streamed (multipart uploads)
        must pass it, e.g. ``sha256_hex(upload_bytes)``.

        Raises:
            ValueError: no input hash is known, or a value the audit log refuses (see ``PredictionLog.append``).
        """
        entry = self.audit_log.append(self._record(**fields))
        self.recorded = True
        return entry

    async def record_on_loop(self, **fields: Unpack[AuditFields]) -> LogEntry:
        """:meth:`record` from the event loop, committed with the other requests of the same turn
        (``PredictionLog.append_on_loop``)."""
        entry = await self.audit_log.append_on_loop(self._record(**fields))
        self.recorded = True
        return entry

    async def settle(self, status: int, code: str | None = None) -> None:
        """Write the record of a request about to be answered ``status`` without one; nothing if it has one.

        The record names the model if the route had resolved it (:attr:`model`), the status and the FHIR issue
        ``code`` (by default the status's usual one) as the output, and the hash of the body (of no bytes when the
        body was never read, e.g. a multipart form that could not be parsed). A failure to write is logged, never
        raised: the answer is on its way.
        """
        if self.recorded:
            return
        name, version, alias = self.model
        code = code or CODE_BY_STATUS.get(status, "processing")
        try:
            await self.record_on_loop(
                model_name=name,
                model_version=version,
                model_alias=alias,
                output={"error": code, "status": status},
                outcome=AuditOutcome.minor_failure if status < 500 else AuditOutcome.serious_failure,
                outcome_desc=f"answered {status} ({code}) without a model answer",
                input_sha256=self.input_sha256 or _EMPTY_SHA256,
            )
        except Exception as exc:  # the answer goes out regardless; the operator sees the gap in the log
            log.error("no audit record for a %d answer on %s: %s", status, self.endpoint, type(exc).__name__)

    def _record(
        self,
        *,
        model_name: str,
        model_version: str,
        model_alias: str,
        output: Any,
        patient_pseudonym: str | None = None,
        outcome: AuditOutcome | str = AuditOutcome.success,
        outcome_desc: str | None = None,
        purpose_of_use: str = "",
        input_sha256: str | None = None,
    ) -> PredictionRecord:
        digest = input_sha256 or self.input_sha256
        if digest is None:
            raise ValueError("the request body was streamed: pass input_sha256 to record()")
        return PredictionRecord(
            token_name=self.principal.name,
            role=self.principal.role.value,
            endpoint=self.endpoint,
            model_name=model_name,
            model_version=model_version,
            model_alias=model_alias,
            input_sha256=digest,
            output=output,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            outcome=outcome,
            purpose_of_use=purpose_of_use,
            patient_pseudonym=patient_pseudonym,
            outcome_desc=outcome_desc,
        )


async def request_audit(request: Request, principal: CurrentPrincipal, audit_log: PredictionLogDep) -> RequestAudit:
    """A :class:`RequestAudit` for this request; the input hash is sha256 of the raw request body."""
    return await audit_of_request(request, principal, audit_log)


async def audit_of_request(request: Request, principal: Principal, audit_log: PredictionLog) -> RequestAudit:
    """The :class:`RequestAudit` of ``request`` by ``principal`` (see :func:`request_audit`).

    It is registered in the request's state (``STATE_AUDIT``) before the body is read, so that a request refused
    from here on (a body over the limit, FastAPI's validation, an exception) still gets its record.
    """
    started = request.scope.get("state", {}).get(STATE_STARTED, time.perf_counter())
    audit = RequestAudit(audit_log, principal, route_template(request.scope), None, started)
    setattr(request.state, STATE_AUDIT, audit)
    with contextlib.suppress(RuntimeError):  # RuntimeError: the body was consumed as a stream (form parsing)
        audit.input_sha256 = sha256_hex(await request.body())  # JSON bodies: already read and cached by FastAPI
    return audit


RequestAuditDep = Annotated[RequestAudit, Depends(request_audit)]

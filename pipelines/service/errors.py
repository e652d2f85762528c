"""Named errors of the service: configuration errors for the CLI, and HTTP errors that become OperationOutcomes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException

from pipelines.errors import ShipaError


class ServiceConfigError(ShipaError):
    """Service settings that cannot be used (a placeholder secret, a bad value); names the variable, not its value."""


class TokenError(ShipaError):
    """A token command that cannot be done (unknown role, name taken, name not found)."""


class FhirHTTPError(HTTPException):
    """An HTTP error answered with a FHIR OperationOutcome.

    Args:
        status_code: the HTTP status.
        code: the FHIR issue type (``login``, ``forbidden``, ``too-long``, ``not-supported``, ``invalid``,
            ``structure``, ``throttled``, ``transient``, ``exception`` ...).
        diagnostics: a short message for the client; never personal data, paths or stack traces.
        expression: the fields at fault, if any.
        headers: extra response headers (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        diagnostics: str,
        expression: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=diagnostics, headers=dict(headers) if headers else None)
        self.code = code
        self.diagnostics = diagnostics
        self.expression = list(expression) if expression else None

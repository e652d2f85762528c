"""Named errors of the auditors' tools: one-line messages naming the event, model or file at fault."""

from __future__ import annotations

from pipelines.errors import ShipaError


class AuditToolError(ShipaError):
    """Base class of expected errors of ``shipa audit report`` and ``shipa audit trace``."""


class AuditEventNotFoundError(AuditToolError):
    """An audit event id or sequence number that is not in the audit log."""


class AuditLogNotFoundError(AuditToolError):
    """An audit log database that does not exist (it is never created by a read)."""

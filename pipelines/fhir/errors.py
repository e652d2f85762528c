"""Named errors of the ingest for problems a user can fix; each message is one line naming the path or setting.

They derive from ``pipelines.errors.ShipaError``, so the CLI prints the message and exits non-zero.
"""

from __future__ import annotations

from pipelines.errors import InputError, ShipaError


class IngestError(ShipaError):
    """Base of the ingest's user errors."""


class InputNotFoundError(IngestError, InputError):
    """The input folder does not exist or holds no FHIR or DICOM files."""


class DemoKeyRefusedError(IngestError):
    """The documented demo pseudonymisation key was used on data that is not the built-in synthetic cohort."""


class PseudonymKeyError(IngestError):
    """The pseudonymisation key is unusable (too short)."""

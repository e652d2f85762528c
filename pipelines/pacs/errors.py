"""Named errors of the PACS package; none carries a UID, a patient name or a credential."""

from __future__ import annotations

from pipelines.errors import ShipaError


class PacsError(ShipaError):
    """A DICOMweb exchange with the PACS failed."""


class PacsUnavailable(PacsError):
    """The PACS could not be reached, timed out, or answered a server error: try again later."""


class PacsRefused(PacsError):
    """The PACS answered a client error (a 4xx other than 404): a credential or a request it will not take."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class StudyNotFound(PacsError):
    """The PACS holds no instance of the study."""


class StudyTooLarge(PacsError):
    """The study is over the retrieval bounds (its bytes, or its instances before one a model may read)."""


class NoUsableInstance(PacsError):
    """No instance of the study is inside the model's input domain; ``reason`` names the first one's problem."""

    def __init__(self, reason: str, instances: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.instances = instances

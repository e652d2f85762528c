"""Named errors of the training engine (user-facing: the CLI prints the message and exits non-zero)."""

from __future__ import annotations

from pipelines.errors import InputError, ShipaError

__all__ = ["CheckpointMismatchError", "InputError", "ModelingError"]


class ModelingError(ShipaError):
    """Training or loading a model cannot proceed."""


class CheckpointMismatchError(ModelingError):
    """A checkpoint exists but was written for other options, columns, seed or data."""

"""Named errors of the tracking library: one-line messages naming the model, version, run or path at fault."""

from __future__ import annotations

from pipelines.errors import ShipaError


class TrackingError(ShipaError):
    """Base class of expected tracking and registry errors."""


class ModelVersionNotFoundError(TrackingError):
    """A registered model, version or alias that does not exist in the registry."""


class UnknownCommitError(TrackingError):
    """A model's lineage names a git commit that is unknown (not recorded, or not in the repository)."""


class ReproductionError(TrackingError):
    """A reproduction step (git worktree, dvc) failed or cannot be run faithfully."""


class GateError(TrackingError):
    """A promotion or override that cannot be recorded (missing person or reason, bad thresholds)."""


class ModelCardError(TrackingError):
    """A model card input that must not be published (it looks like personal data)."""


class MlflowServerError(TrackingError):
    """An ``mlflow server`` subprocess that did not start or answer its health check in time."""

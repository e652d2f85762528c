"""Named errors of the evaluation library."""

from __future__ import annotations


class UndefinedMetricError(ValueError):
    """A metric has no value on this data (for example AUROC when ``y_true`` holds one class only)."""

"""Stage ``evaluate``: test-set evaluation per DVC ``foreach`` item, written as DVC metrics and plots.

One module per item (``diagnosis.py``, ``fraud.py``), each with a ``run`` function, so that each item's DVC deps
list only the code that item imports. This module holds what both items share: the test-set fingerprint the
promotion gate compares on, and the plots.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.evaluation import plots
from pipelines.evaluation.metrics import confusion_at
from pipelines.io import write_json


def test_data_md5(ids: list[str], labels: list[int]) -> str:
    """Fingerprint of a test set (ids and labels, in id order): the gate compares models only on equal ones."""
    digest = hashlib.md5(usedforsecurity=False)
    for i, y in sorted(zip(ids, labels, strict=True)):
        digest.update(f"{i}\t{y}\n".encode())
    return digest.hexdigest()


def write_plots(out: Path, y: np.ndarray, p: np.ndarray, report: dict[str, Any], n_bins: int) -> None:
    """ROC, PR, reliability and confusion PNGs plus their data as JSON for DVC plots."""
    out.mkdir(parents=True, exist_ok=True)
    plots.plot_roc(y, p, out / "roc.png")
    plots.plot_pr(y, p, out / "pr.png")
    plots.plot_reliability(y, p, out / "reliability.png", n_bins=n_bins)
    plots.plot_confusion(confusion_at(y, p, report["threshold"]), out / "confusion.png")
    write_json(out / "roc.json", plots.roc_points(y, p))
    write_json(out / "pr.json", plots.pr_points(y, p))
    write_json(out / "calibration.json", plots.calibration_points(y, p, n_bins))

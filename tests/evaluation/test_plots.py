"""Plots: valid, deterministic PNG files; DVC-plots data."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pipelines.evaluation.metrics import confusion_at
from pipelines.evaluation.plots import (
    calibration_points,
    plot_confusion,
    plot_pr,
    plot_reliability,
    plot_roc,
    pr_points,
    roc_points,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    return y, np.round(np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1), 2)


def test_pngs_are_valid_and_deterministic(tmp_path: Path, sample: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = sample
    writers = {
        "roc.png": lambda path: plot_roc(y, p, path),
        "pr.png": lambda path: plot_pr(y, p, path),
        "reliability.png": lambda path: plot_reliability(y, p, path, n_bins=10),
        "confusion.png": lambda path: plot_confusion(confusion_at(y, p, 0.5), path),
    }
    for name, write in writers.items():
        first = write(tmp_path / "a" / name)
        second = write(tmp_path / "b" / name)
        data = first.read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        image = imread(first)
        assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 300, name
        assert image.std() > 0.01, name  # something was drawn
        assert data == second.read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(writers)  # no temporary files left


def test_plot_data_for_dvc(sample: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = sample
    roc = roc_points(y, p)
    assert roc[0] == {"fpr": 0.0, "tpr": 0.0} and roc[-1] == {"fpr": 1.0, "tpr": 1.0}
    assert all(a["fpr"] <= b["fpr"] and a["tpr"] <= b["tpr"] for a, b in itertools.pairwise(roc))
    pr = pr_points(y, p)
    assert pr[0] == {"recall": 0.0, "precision": 1.0} and pr[-1]["recall"] == 1.0
    assert pr[-1]["precision"] == pytest.approx(y.mean())
    cal = calibration_points(y, p, n_bins=5)
    assert sum(row["count"] for row in cal) == y.shape[0]
    assert set(cal[0]) == {"bin_lower", "bin_upper", "mean_predicted", "observed", "count"}
    json.dumps({"roc": roc, "pr": pr, "calibration": cal}, allow_nan=False)

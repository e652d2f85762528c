"""Evaluation figures as PNG files (matplotlib's Agg canvas, no display) and DVC-plots data (lists of dicts).

Figures are built on a bare :class:`~matplotlib.figure.Figure` rather than pyplot, so nothing global (backend,
current figure) changes. The PNG carries no software or date metadata, so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.evaluation.calibration import reliability_bins
from pipelines.evaluation.curves import precision_recall_curve, roc_curve
from pipelines.evaluation.metrics import Confusion, auroc, average_precision

_SIZE = (5.0, 5.0)
_DPI = 100


def roc_points(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> list[dict[str, float]]:
    """ROC curve as ``[{"fpr": ..., "tpr": ...}, ...]`` from (0, 0) to (1, 1), for DVC plots."""
    curve = roc_curve(y_true, scores)
    return [{"fpr": float(x), "tpr": float(y)} for x, y in zip(curve.x, curve.y, strict=True)]


def pr_points(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> list[dict[str, float]]:
    """Precision-recall curve as ``[{"recall": ..., "precision": ...}, ...]``, recall increasing."""
    curve = precision_recall_curve(y_true, scores)
    return [{"recall": float(x), "precision": float(y)} for x, y in zip(curve.x[::-1], curve.y[::-1], strict=True)]


def calibration_points(y_true: npt.ArrayLike, probs: npt.ArrayLike, n_bins: int = 10) -> list[dict[str, float | int]]:
    """Reliability bins as ``[{"bin_lower", "bin_upper", "mean_predicted", "observed", "count"}, ...]``."""
    return [
        {
            "bin_lower": b.lower,
            "bin_upper": b.upper,
            "mean_predicted": b.mean_predicted,
            "observed": b.observed,
            "count": b.count,
        }
        for b in reliability_bins(y_true, probs, n_bins)
    ]


def _save(fig: Figure, path: Path) -> Path:
    """Write the figure as PNG atomically: a killed stage never leaves a half-written file under ``path``."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _square_axes(fig: Figure, title: str, xlabel: str, ylabel: str) -> Axes:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return ax


def plot_roc(y_true: npt.ArrayLike, scores: npt.ArrayLike, path: str | Path, *, title: str = "ROC curve") -> Path:
    """Write the ROC curve, with its AUROC in the legend, to ``path`` (PNG); returns the path."""
    curve = roc_curve(y_true, scores)
    fig = Figure(figsize=_SIZE)
    ax = _square_axes(fig, title, "False-positive rate (1 - specificity)", "True-positive rate (sensitivity)")
    ax.plot(curve.x, curve.y, label=f"AUROC = {auroc(y_true, scores):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.legend(loc="lower right")
    return _save(fig, Path(path))


def plot_pr(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, path: str | Path, *, title: str = "Precision-recall curve"
) -> Path:
    """Write the precision-recall curve, with AUPRC and prevalence, to ``path`` (PNG); returns the path."""
    curve = precision_recall_curve(y_true, scores)
    prevalence = float(np.mean(np.asarray(y_true, dtype=np.float64)))
    fig = Figure(figsize=_SIZE)
    ax = _square_axes(fig, title, "Recall (sensitivity)", "Precision (PPV)")
    ax.step(curve.x, curve.y, where="post", label=f"AUPRC = {average_precision(y_true, scores):.3f}")
    ax.axhline(prevalence, linestyle="--", color="grey", linewidth=1, label=f"prevalence = {prevalence:.3f}")
    ax.legend(loc="lower left")
    return _save(fig, Path(path))


def plot_reliability(
    y_true: npt.ArrayLike,
    probs: npt.ArrayLike,
    path: str | Path,
    *,
    n_bins: int = 10,
    title: str = "Reliability diagram",
) -> Path:
    """Write the reliability diagram (observed rate against mean predicted probability) to ``path``."""
    bins = reliability_bins(y_true, probs, n_bins)
    fig = Figure(figsize=_SIZE)
    ax = _square_axes(fig, title, "Mean predicted probability", "Observed positive rate")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.plot(
        [b.mean_predicted for b in bins],
        [b.observed for b in bins],
        marker="o",
        label=f"{n_bins} equal-width bins",
    )
    for b in bins:
        ax.annotate(
            str(b.count),
            (b.mean_predicted, b.observed),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
        )
    ax.legend(loc="upper left")
    return _save(fig, Path(path))


def plot_confusion(
    confusion: Confusion,
    path: str | Path,
    *,
    labels: tuple[str, str] = ("negative", "positive"),
    title: str = "Confusion matrix",
) -> Path:
    """Write the confusion matrix (rows: true class, columns: predicted class) with counts to ``path``."""
    matrix = np.array([[confusion.tn, confusion.fp], [confusion.fn, confusion.tp]])
    fig = Figure(figsize=(4.5, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax)
    ax.set_xticks([0, 1], labels=list(labels))
    ax.set_yticks([0, 1], labels=list(labels))
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    middle = matrix.max() / 2.0
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > middle else "black"
        ax.text(col, row, str(count), ha="center", va="center", color=colour)
    fig.tight_layout()
    return _save(fig, Path(path))

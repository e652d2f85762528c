"""The report's figures, on bare matplotlib Figures (Agg canvas; pyplot and its global state are never used).

Each builder returns None when it has nothing to draw, so the report says so in words instead.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipelines.audit.drift import PSI_MAJOR, PSI_MODERATE, DriftRow
from pipelines.evaluation.calibration import reliability_bins

Series = Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]
_MAX_BOX_DAYS = 60


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, without software or date metadata (same figure, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def training_figure(series: Series) -> Figure | None:
    """Losses (left) and validation metrics (right) per epoch, one line per mode and metric."""
    if not series:
        return None
    fig = _new(9.0, 3.6)
    loss_ax, val_ax = fig.subplots(1, 2)
    for mode, metrics in sorted(series.items()):
        for metric, points in sorted(metrics.items()):
            steps, values = zip(*points, strict=True)
            ax = loss_ax if "loss" in metric else val_ax
            ax.plot(steps, values, marker=".", label=f"{mode} {metric}".strip())
    for ax, title in ((loss_ax, "Loss per epoch"), (val_ax, "Validation metrics per epoch")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "none recorded", ha="center", va="center", transform=ax.transAxes)
    return fig


def calibration_figure(labels: npt.ArrayLike, scores: npt.ArrayLike, n_bins: int = 10) -> Figure | None:
    """Reliability diagram (observed rate against mean predicted probability) and the score histogram."""
    p = np.asarray(scores, dtype=np.float64)
    if p.size == 0 or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        return None
    bins = reliability_bins(labels, p, n_bins)
    fig = _new(5.5, 5.5)
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    ax.plot([b.mean_predicted for b in bins], [b.observed for b in bins], marker="o", label=f"{n_bins} bins")
    for b in bins:
        ax.annotate(
            str(b.count), (b.mean_predicted, b.observed), textcoords="offset points", xytext=(4, -10), fontsize=7
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("observed positive rate")
    ax.set_title("Calibration on the test set")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.hist(p, bins=n_bins, range=(0, 1), color="#4c72b0")
    hist.set_xlabel("predicted probability")
    hist.set_ylabel("studies")
    return fig


def usage_figure(per_day: Mapping[str, int]) -> Figure | None:
    """Predictions per day."""
    if not per_day:
        return None
    days = sorted(per_day)
    fig = _new(9.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(days)), [per_day[d] for d in days], color="#4c72b0")
    _day_ticks(ax, days)
    ax.set_ylabel("predictions")
    ax.set_title("Predictions per day (UTC)")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _day_ticks(ax: Axes, days: Sequence[str]) -> None:
    step = max(1, len(days) // 12)
    ticks = list(range(0, len(days), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([days[i] for i in ticks], rotation=45, ha="right", fontsize=7)


def drift_figure(
    baseline: npt.ArrayLike | None, scores_by_day: Mapping[str, Sequence[float]], rows: Sequence[DriftRow]
) -> Figure | None:
    """Served outputs per day (box plots) beside the test-set distribution, and PSI per day."""
    days = sorted(scores_by_day)[-_MAX_BOX_DAYS:]
    if not days:
        return None
    fig = _new(9.0, 6.0)
    dist, psi_ax = fig.subplots(2, 1, height_ratios=(3, 2))
    data = [np.asarray(scores_by_day[d], dtype=np.float64) for d in days]
    dist.boxplot(data, positions=list(range(len(days))), widths=0.6, showfliers=False)
    if baseline is not None and np.asarray(baseline).size:
        low, mid, high = np.quantile(np.asarray(baseline, dtype=np.float64), [0.25, 0.5, 0.75])
        dist.axhspan(low, high, color="#dd8452", alpha=0.2, label="test set, 25-75 %")
        dist.axhline(mid, color="#dd8452", linewidth=1.5, label="test set, median")
        dist.legend(loc="upper right", fontsize=7)
    _day_ticks(dist, days)
    dist.set_ylabel("model output")
    dist.set_title("Served outputs per day against the test-set distribution")
    dist.grid(True, axis="y", alpha=0.3)
    by_day = {r.period: r for r in rows}
    values = [by_day[d].psi if d in by_day and by_day[d].psi is not None else np.nan for d in days]
    psi_ax.plot(range(len(days)), values, marker="o", color="#4c72b0", label="PSI")
    psi_ax.axhline(PSI_MODERATE, color="#c44e52", linestyle=":", linewidth=1, label=f"moderate ({PSI_MODERATE})")
    psi_ax.axhline(PSI_MAJOR, color="#c44e52", linestyle="--", linewidth=1, label=f"major ({PSI_MAJOR})")
    _day_ticks(psi_ax, days)
    psi_ax.set_ylabel("PSI vs test set")
    psi_ax.grid(True, alpha=0.3)
    psi_ax.legend(loc="upper left", fontsize=7)
    for ax in (dist, psi_ax):
        ax.set_xlim(-0.5, len(days) - 0.5)
    return fig

"""The report's model sections: training curves, test metrics, calibration and subgroups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.audit import figures, titles
from pipelines.audit.common import (
    METRICS_TABLE_ID,
    NA,
    ReportOptions,
    baseline_notes,
    estimate,
    fmt,
    primary_metric,
    value_ci,
)
from pipelines.audit.document import Block, FigureBlock, KeyValues, Mark, Paragraph, Preformatted, Section, Table
from pipelines.audit.evidence import VersionEvidence
from pipelines.tracking import tags as names

TOP_GAPS = 3
CALIBRATION_METRICS = ("ece", "brier", "calibration_slope", "calibration_intercept")
SUBGROUP_METRICS = ("sensitivity", "specificity", "ppv", "npv", "ece")
# Gaps are ranked only among metrics on the same 0-1 scale (calibration slope and intercept are not).
UNRANKED_GAPS = ("calibration_slope", "calibration_intercept")


def training_section(ev: VersionEvidence) -> Section:
    """Loss and validation metrics per epoch, with their source."""
    fig = figures.training_figure(ev.curves.series)
    if fig is None:
        return Section(
            "training",
            titles.TRAINING,
            [
                Paragraph(
                    "No per-epoch training curves were found for this version (no train run in its pipeline run, "
                    "and no history files whose hashes match).",
                    "warn",
                )
            ],
        )
    return Section(
        "training",
        titles.TRAINING,
        [
            Paragraph(f"Source: {ev.curves.source}."),
            FigureBlock(fig, "Training curves: loss and validation metrics per epoch"),
        ],
    )


def metrics_section(ev: VersionEvidence) -> Section:
    """Test metrics with their CIs (table ``#metrics-table``), confusion and compared variants."""
    report = ev.evaluation
    if not report:
        text = ev.info.tags.get(names.METRICS)
        blocks: list[Block] = [Paragraph("No evaluation report is attached to this version.", "warn")]
        if text:
            blocks.append(Preformatted(text))
        return Section("metrics", titles.METRICS, blocks)
    boot = report.get("bootstrap") or {}
    level = boot.get("level")
    primary = primary_metric(ev)
    metrics = report.get("metrics") or {}
    order = ([primary] if primary in metrics else []) + sorted(k for k in metrics if k != primary)
    rows = [
        [
            m,
            fmt(estimate(metrics[m]).get("value")),
            fmt(estimate(metrics[m]).get("low")),
            fmt(estimate(metrics[m]).get("high")),
        ]
        for m in order
    ]
    marks: dict[tuple[int, int], Mark] = {(0, 0): "ok"} if primary in metrics else {}
    ci = f"{float(level) * 100:g}% CI" if isinstance(level, int | float) else "CI"
    blocks = [
        KeyValues(
            [
                ("test samples", fmt(report.get("n"))),
                ("positives", fmt(report.get("n_positive"))),
                ("prevalence", fmt(report.get("prevalence"))),
                ("decision threshold", fmt(report.get("threshold"))),
                (
                    "confidence intervals",
                    f"{ci}, {boot.get('n_boot', NA)} bootstrap resamples by {boot.get('unit', NA)}",
                ),
                ("test data md5", str(report.get("test_data_md5") or NA)),
                ("evaluated model", str(report.get("model") or NA)),
            ]
        ),
        Table(["metric", "value", f"{ci} low", f"{ci} high"], rows, "Test metrics", marks, css_id=METRICS_TABLE_ID),
    ]
    confusion = report.get("confusion") or {}
    if confusion:
        blocks.append(
            Table(
                ["tp", "fp", "tn", "fn"],
                [[fmt(confusion.get(k)) for k in ("tp", "fp", "tn", "fn")]],
                "Confusion at the threshold",
            )
        )
    comparison = report.get("comparison") or {}
    if comparison:
        cols = sorted({m for v in comparison.values() if isinstance(v, Mapping) for m in v})
        crow = [[variant, *(value_ci(v.get(c)) for c in cols)] for variant, v in sorted(comparison.items())]
        blocks.append(Table(["model", *cols], crow, "Compared models on the same test set"))
    return Section("metrics", titles.METRICS, blocks)


def calibration_section(ev: VersionEvidence, options: ReportOptions) -> Section:
    """The reliability plot from the version's test-set predictions, and the calibration metrics."""
    metrics = (ev.evaluation or {}).get("metrics") or {}
    rows = [[m, value_ci(metrics[m])] for m in CALIBRATION_METRICS if m in metrics]
    blocks: list[Block] = []
    b = ev.baseline
    fig = None
    if b.scores is not None and b.labels is not None:
        fig = figures.calibration_figure(b.labels, b.scores, options.calibration_bins)
    if fig is not None:
        blocks.append(FigureBlock(fig, "Calibration plot: observed rate against predicted probability on the test set"))
    else:
        blocks.append(
            Paragraph("No calibration plot: the test-set probabilities of this version are not available.", "warn")
        )
    blocks += baseline_notes(ev)
    if rows:
        blocks.append(Table(["calibration metric", "value [CI]"], rows, "Calibration metrics (evaluation report)"))
    return Section("calibration", titles.CALIBRATION, blocks)


def _gaps(subgroups: Mapping[str, Any]) -> list[tuple[float, str, str, str, str]]:
    out = []
    for column, table in subgroups.items():
        for metric, gap in ((table or {}).get("gaps") or {}).items():
            if metric not in UNRANKED_GAPS and isinstance(gap, Mapping) and fmt(gap.get("gap")) != NA:
                out.append((float(gap["gap"]), column, metric, str(gap.get("max_group")), str(gap.get("min_group"))))
    return sorted(out, key=lambda g: -g[0])


def subgroups_section(ev: VersionEvidence) -> Section:
    """Subgroup tables with the largest gaps ranked and highlighted."""
    subgroups = (ev.evaluation or {}).get("subgroups") or {}
    if not subgroups:
        return Section(
            "subgroups", titles.SUBGROUPS, [Paragraph("The evaluation reports no subgroups for this model.")]
        )
    gaps = _gaps(subgroups)
    top = {(g[1], g[2]) for g in gaps[:TOP_GAPS]}
    primary = primary_metric(ev)
    blocks: list[Block] = [
        Paragraph(
            f"The {TOP_GAPS} largest gaps between subgroups are highlighted: the group with the highest value in "
            "orange, the lowest in blue (for ece and brier the highest is the worst). Gaps of calibration slope and "
            "intercept are not on the same scale and are not ranked."
        ),
        Table(
            ["subgroup column", "metric", "gap", "highest group", "lowest group"],
            [[c, m, fmt(g), hi, lo] for g, c, m, hi, lo in gaps],
            "Largest gaps, largest first",
            {(i, 2): "alert" for i in range(min(TOP_GAPS, len(gaps)))},
        ),
    ]
    for column, table in sorted(subgroups.items()):
        groups = (table or {}).get("groups") or {}
        gap_info = (table or {}).get("gaps") or {}
        shown = [
            m
            for m in (primary, *SUBGROUP_METRICS)
            if m in gap_info or any((g.get("metrics") or {}).get(m) for g in groups.values() if isinstance(g, Mapping))
        ]
        shown = list(dict.fromkeys(shown))
        rows: list[list[str]] = []
        marks: dict[tuple[int, int], Mark] = {}
        for r, (value, group) in enumerate(sorted(groups.items())):
            group_metrics = (group or {}).get("metrics") or {}
            cells = [value_ci(group_metrics.get(m)) if group_metrics else "too few samples" for m in shown]
            rows.append(
                [value, fmt(group.get("n")), fmt(group.get("n_positive")), fmt(group.get("prevalence")), *cells]
            )
            for c, m in enumerate(shown):
                gap = gap_info.get(m)
                if (column, m) in top and isinstance(gap, Mapping):
                    if value == str(gap.get("max_group")):
                        marks[(r, 4 + c)] = "high"
                    elif value == str(gap.get("min_group")):
                        marks[(r, 4 + c)] = "low"
        blocks.append(Table(["group", "n", "positives", "prevalence", *shown], rows, f"Subgroups by {column}", marks))
    return Section("subgroups", titles.SUBGROUPS, blocks)

"""The report's usage sections: predictions from the audit log, and drift of the served outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipelines.audit import figures, titles
from pipelines.audit.common import NA, ReportOptions, banner, baseline_notes, fmt
from pipelines.audit.document import Block, FigureBlock, KeyValues, Mark, Paragraph, Section, Table
from pipelines.audit.drift import KS_ALPHA, PSI_MAJOR, PSI_MODERATE, DriftRow, drift_table
from pipelines.audit.evidence import VersionEvidence
from pipelines.audit.usage import Usage
from pipelines.predictionlog.log import VerifyResult

MAX_DAY_ROWS = 60


def _count_table(title: str, counts: Mapping[str, int]) -> Table:
    return Table([title, "predictions"], [[k, str(v)] for k, v in counts.items()], f"Predictions per {title}")


def usage_section(usage: Usage | None, verify: VerifyResult | None, audit_source: str) -> Section:
    """Predictions per day, role, alias, outcome and endpoint, under the audit log's integrity banner."""
    if usage is None:
        return Section("usage", titles.USAGE, [Paragraph(f"No service audit log was read ({audit_source}).", "warn")])
    blocks: list[Block] = [banner(verify, audit_source)]
    blocks.append(
        KeyValues(
            [
                ("audit log", audit_source),
                ("predictions", str(usage.total)),
                ("first", usage.first or NA),
                ("last", usage.last or NA),
            ]
        )
    )
    fig = figures.usage_figure(usage.per_day)
    if fig is not None:
        blocks.append(FigureBlock(fig, "Predictions per day"))
    blocks += [
        _count_table("role", usage.per_role),
        _count_table("alias", usage.per_alias),
        _count_table("outcome", usage.per_outcome),
        _count_table("endpoint", usage.per_endpoint),
    ]
    days = list(usage.per_day.items())[-MAX_DAY_ROWS:]
    if days:
        blocks.append(_count_table("day", dict(days)))
    return Section("usage", titles.USAGE, blocks)


def _drift_rows(rows: Sequence[DriftRow]) -> tuple[list[list[str]], dict[tuple[int, int], Mark]]:
    out: list[list[str]] = []
    marks: dict[tuple[int, int], Mark] = {}
    for i, r in enumerate(rows):
        out.append([r.period, str(r.n), fmt(r.mean), fmt(r.psi), fmt(r.by_chance), fmt(r.ks), fmt(r.ks_p, 4), r.label])
        if r.label == "major shift":
            marks[(i, 3)] = "alert"
        elif r.label == "moderate shift":
            marks[(i, 3)] = "high"
    return out, marks


def drift_section(ev: VersionEvidence, usage: Usage | None, options: ReportOptions) -> tuple[Section, DriftRow | None]:
    """Served outputs against the test-set distribution (PSI, KS) per day; also returns the overall row."""
    b = ev.baseline
    if usage is None or not usage.scores_by_day:
        text = "No served outputs with scores were recorded for this version." if usage else "No audit log was read."
        return Section("drift", titles.DRIFT, [Paragraph(text)]), None
    if b.scores is None:
        return Section(
            "drift",
            titles.DRIFT,
            [Paragraph("No test-set distribution to compare with.", "warn"), *baseline_notes(ev)],
        ), None
    overall, per_day = drift_table(b.scores, usage.scores_by_day, options.drift_min_n)
    rows, marks = _drift_rows([overall, *per_day[-MAX_DAY_ROWS:]])
    blocks: list[Block] = [
        Paragraph(
            f"Served outputs ({usage.n_scores} scores) against the {b.scores.size} test-set predictions of this "
            f"version. PSI below {PSI_MODERATE} reads as stable, {PSI_MODERATE} to {PSI_MAJOR} as a moderate shift, "
            f"above {PSI_MAJOR} as a major shift; KS is the two-sample Kolmogorov-Smirnov statistic with its p-value. "
            f"A shift is read only when the KS test also rejects equal distributions (p < {KS_ALPHA}), since PSI "
            "on small samples is high by chance alone ('PSI by chance' is about what two samples of these sizes "
            f"from one distribution give). Days with fewer than {options.drift_min_n} outputs get no statistic."
        ),
        *baseline_notes(ev),
        Table(
            ["period", "outputs", "mean", "PSI", "PSI by chance", "KS", "KS p", "reading"],
            rows,
            "Drift against the test set",
            marks,
        ),
    ]
    fig = figures.drift_figure(b.scores, usage.scores_by_day, per_day)
    if fig is not None:
        blocks.append(FigureBlock(fig, "Distribution of served outputs over time, and PSI per day"))
    return Section("drift", titles.DRIFT, blocks), overall

"""The report's registry sections: the gate's decision, the promotion history and the model card."""

from __future__ import annotations

from collections.abc import Mapping

from pipelines.audit import titles
from pipelines.audit.common import NA, flat
from pipelines.audit.document import Block, Bullets, KeyValues, Paragraph, Preformatted, Section, Table, Tone
from pipelines.audit.evidence import VersionEvidence
from pipelines.tracking import tags as names


def gate_section(ev: VersionEvidence) -> Section:
    """The gate's latest decision, its reasons and thresholds."""
    tags = ev.info.tags
    decision = tags.get(names.GATE_DECISION)
    if not decision:
        return Section("gate", titles.GATE, [Paragraph("The promotion gate has not decided on this version.", "warn")])
    tone: Tone = "ok" if decision == "promote" else "warn"
    blocks: list[Block] = [
        Paragraph(f"Decision: {decision} (by {tags.get(names.GATE_BY, NA)} at {tags.get(names.GATE_AT, NA)}).", tone),
        Bullets([r for r in tags.get(names.GATE_REASONS, "").splitlines() if r.strip()] or ["no reasons recorded"]),
        KeyValues(
            [
                ("champion before", tags.get(names.GATE_PREVIOUS_CHAMPION, NA)),
                ("override reason", tags.get(names.GATE_OVERRIDE_REASON, "none")),
            ]
        ),
    ]
    thresholds = (ev.gate_reports[-1].get("thresholds") or {}) if ev.gate_reports else {}
    if thresholds:
        blocks.append(
            Table(["rule", "threshold"], [[k, str(v)] for k, v in sorted(thresholds.items())], "Gate thresholds")
        )
    return Section("gate", titles.GATE, blocks)


def promotion_section(ev: VersionEvidence) -> Section:
    """Who made the version champion and when, every gate or override record, the description."""
    reports = ev.gate_reports
    blocks: list[Block] = [Paragraph(f"Current aliases: {', '.join(ev.info.aliases) or 'none'}.")]
    promoted = [
        r
        for r in reports
        if str(r.get("champion_after")) == ev.info.version and r.get("decision") in ("promote", "override")
    ]
    if promoted:
        last = promoted[-1]
        blocks.append(
            Paragraph(f"Made champion by {last.get('by')} at {last.get('at')} ({last.get('decision')}).", "ok")
        )
    else:
        blocks.append(Paragraph("This version was never made champion."))
    if reports:
        rows = [
            [
                str(r.get(k) if r.get(k) is not None else "none")
                for k in ("at", "decision", "by", "champion_before", "champion_after")
            ]
            + [str(r.get("override_reason") or "")]
            for r in reports
        ]
        blocks.append(
            Table(
                ["at", "decision", "by", "champion before", "champion after", "override reason"],
                rows,
                "Gate and override records",
            )
        )
    if ev.info.description.strip():
        blocks.append(Preformatted(ev.info.description.strip()))
    return Section("promotion", titles.PROMOTION, blocks)


def model_card_section(ev: VersionEvidence) -> Section:
    """The model card's intended use, users, scope, inputs and outputs, data and limitations."""
    card = ev.model_card
    if not card:
        return Section(
            "model-card", titles.MODEL_CARD, [Paragraph("No model card was logged for this version.", "warn")]
        )
    blocks: list[Block] = [
        KeyValues([("task", str(card.get("task", NA))), ("intended use", str(card.get("intended_use", NA)))]),
    ]
    for label, key in (
        ("Intended users", "intended_users"),
        ("Out of scope", "out_of_scope_uses"),
        ("Limitations", "limitations"),
        ("Known failure modes", "failure_modes"),
    ):
        items = [str(i) for i in card.get(key) or []]
        if items:
            blocks += [Paragraph(f"{label}:"), Bullets(items)]
    io_rows = [[kind, k, str(v)] for kind in ("inputs", "outputs") for k, v in sorted((card.get(kind) or {}).items())]
    if io_rows:
        blocks.append(Table(["", "name", "description"], io_rows, "Inputs and outputs"))
    data = card.get("training_data") or {}
    if isinstance(data, Mapping) and data:
        blocks.append(
            Table(
                ["field", "value"], [[k, str(v)] for k, v in sorted(flat(data).items())], "Training data (aggregates)"
            )
        )
    return Section("model-card", titles.MODEL_CARD, blocks)

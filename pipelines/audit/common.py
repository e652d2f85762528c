"""Shared pieces of the report's sections: options, number formatting, the primary metric, notes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.audit.document import Block, Paragraph
from pipelines.audit.evidence import VersionEvidence
from pipelines.predictionlog.log import VerifyResult

NA = "n/a"
METRICS_TABLE_ID = "metrics-table"


@dataclass(frozen=True)
class ReportOptions:
    """Choices of the report: calibration bins and the fewest outputs a day needs for a drift statistic."""

    calibration_bins: int = 10
    drift_min_n: int = 20


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, ``n/a`` for None, NaN or non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return NA
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def estimate(value: Any) -> Mapping[str, Any]:
    """A metric estimate (``{"value", "low", "high", ...}``) or an empty mapping for anything else."""
    return value if isinstance(value, Mapping) else {}


def value_ci(value: Any) -> str:
    """``value [low, high]`` of an estimate (just the value when it has no CI)."""
    e = estimate(value)
    if fmt(e.get("low")) == NA:
        return fmt(e.get("value"))
    return f"{fmt(e.get('value'))} [{fmt(e.get('low'))}, {fmt(e.get('high'))}]"


def primary_metric(ev: VersionEvidence) -> str:
    """The gate's primary metric for this version (``auroc`` when none was recorded)."""
    reports = ev.gate_reports
    primary = (reports[-1].get("thresholds") or {}).get("primary_metric") if reports else None
    return str(primary or (ev.model_card or {}).get("evaluation", {}).get("primary_metric") or "auroc")


def flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping's scalar leaves as ``{dotted key: value}`` (lists left out)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flat(value, name))
        elif not isinstance(value, list):
            out[name] = value
    return out


def baseline_notes(ev: VersionEvidence) -> list[Block]:
    """What was checked about the test-set predictions (ok), and why they may not be the version's (warn)."""
    b = ev.baseline
    blocks: list[Block] = []
    if b.verified:
        blocks.append(
            Paragraph(
                f"Test-set predictions from {b.source}: " + "; ".join(b.verified) + ".",
                "ok" if not b.problems else "normal",
            )
        )
    if b.problems:
        blocks.append(Paragraph(f"Test-set predictions ({b.source}): " + "; ".join(b.problems) + ".", "warn"))
    return blocks


def banner(verify: VerifyResult | None, audit_source: str) -> Paragraph:
    """The audit log's state in one paragraph: verified (ok), altered (alert) or not read (warn)."""
    if verify is None:
        return Paragraph(
            f"No service audit log was read ({audit_source}): usage and its integrity are not reported.", "warn"
        )
    if verify.ok:
        return Paragraph(
            f"Audit log chain verified: {verify.checked} records intact (PredictionLog.verify), "
            f"head hash {verify.head_hash}.",
            "ok",
        )
    return Paragraph(
        f"AUDIT LOG ALTERED: the hash chain breaks at record {verify.first_bad_id}: {verify.reason}. "
        f"{verify.checked} records verified before it. Usage figures in this report come from a log that failed "
        "verification and cannot be trusted.",
        "alert",
    )

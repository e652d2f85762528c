"""``ingest_report.json``: what was read, kept, quarantined and merged, per resource type, and why.

The report is a DVC metrics file, so it holds counts only (no timings): the same input gives the same report.
``read == accepted + quarantined + duplicates_merged + superseded`` holds per resource type, with ``accepted``
counted independently from the accepted chunks; ``reconciles`` says whether it does. ``accepted_with_findings``
counts the kept resources that have data-quality findings (a part of ``accepted``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipelines.fhir.finalize import SecondPassResult
from pipelines.fhir.pipeline import FirstPassResult

TOP_REASONS = 10


def _top(reasons: Counter[tuple[str, str, str]], n: int) -> list[dict[str, Any]]:
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"defect": d, "resource_type": t, "expression": e, "count": c} for (d, t, e), c in ranked[:n]]


def fhir_report(first: FirstPassResult, second: SecondPassResult, files: int) -> dict[str, Any]:
    """The FHIR part of the report (resources per type, defects, top reasons, references, tables)."""
    by_type: dict[str, dict[str, int]] = {}
    reconciles = True
    for rtype in sorted(first.read):
        read = first.read[rtype]
        quarantined = first.quarantined[rtype] + second.quarantined[rtype]
        merged = second.merged[rtype]
        superseded = second.superseded[rtype]
        accepted = second.accepted[rtype]
        reconciles &= read == accepted + quarantined + merged + superseded
        by_type[rtype] = {
            "read": read,
            "accepted": accepted,
            "accepted_with_findings": second.with_findings[rtype],
            "quarantined": quarantined,
            "duplicates_merged": merged,
            "superseded": superseded,
        }
    reasons = first.reasons + second.reasons
    defects: Counter[str] = Counter()
    for (defect, _, _), count in reasons.items():
        defects[defect] += count
    keys = ("read", "accepted", "accepted_with_findings", "quarantined", "duplicates_merged", "superseded")
    totals = {k: sum(v[k] for v in by_type.values()) for k in keys}
    findings: Counter[str] = Counter()
    for (defect, _, _), count in second.findings.items():
        findings[defect] += count
    return {
        "files": files,
        "resources": totals,
        "by_resource_type": by_type,
        "defects": dict(sorted(defects.items())),
        "top_reasons": _top(reasons, TOP_REASONS),
        "findings": dict(sorted(findings.items())),
        "top_findings": _top(second.findings, TOP_REASONS),
        "references": {
            "checked": first.references,
            "conditional": first.conditional_references,
            "unresolved_in_tables": second.unresolved_conditional,
            "nulled_in_tables": second.nulled_references,
        },
        "tables": dict(sorted(second.table_rows.items())),
        "reconciles": reconciles,
    }

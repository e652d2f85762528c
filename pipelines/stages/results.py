"""``shipa results``: the headline numbers of the last pipeline run, read from the stages' metrics files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _ci(est: dict[str, Any] | None) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    if est.get("low") is None:
        return f"{est['value']:.3f}"
    return f"{est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}]"


def summary_lines(root: Path) -> list[str]:
    """One line per headline figure; stages that have not run yet are skipped."""
    lines: list[str] = []
    ingest = _read(root / "data" / "interim" / "ingest_report.json")
    if ingest:
        r = ingest["fhir"]["resources"]
        lines.append(
            f"ingest: {r['read']} resources read = {r['accepted']} accepted ({r.get('accepted_with_findings', 0)}"
            f" with findings) + {r['quarantined']} quarantined + {r['duplicates_merged']} duplicates merged"
            f" + {r.get('superseded', 0)} superseded; DICOM {ingest['dicom']['images']} images,"
            f" {ingest['dicom']['quarantined']} quarantined"
        )
    dx = _read(root / "models" / "diagnosis" / "metrics.json")
    if dx:
        for mode, m in dx["comparison"].items():
            lines.append(f"diagnosis {mode:<6} test AUROC {_ci(m.get('auroc'))}  AUPRC {_ci(m.get('auprc'))}")
    fraud = _read(root / "models" / "fraud" / "metrics.json")
    if fraud:
        k = fraud["k"]
        for name, m in fraud["comparison"].items():
            lines.append(
                f"fraud {name:<6} PR-AUC {_ci(m.get('auprc'))}  precision@{k} {_ci(m.get(f'precision_at_{k}'))}"
                f"  money@{k} {m.get(f'money_at_{k}', {}).get('value', 0):,.0f} KZT"
            )
        lines.append(f"fraud unlabelled recall@{k}: {_ci(fraud['unlabelled_recall_at_k'])}")
    return lines

"""Stage ``features@fraud``: one row per claim under ``data/processed/fraud/``, features known on its date."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import FraudFeaturesParams
from pipelines.features.fraud import FraudFeatureOptions, build_claim_features
from pipelines.features.fraud_labels import label_claims, load_fund_findings, override_labels
from pipelines.features.fraud_splits import split_column
from pipelines.fraud.decisions import DEFAULT_DECISIONS, decision_labels, read_decisions
from pipelines.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def _decisions_file(decisions: Path | None) -> Path | None:
    """The decisions file to read: ``decisions`` (which must exist), else the default one if it exists."""
    if decisions is not None:
        return decisions
    return DEFAULT_DECISIONS if DEFAULT_DECISIONS.is_file() else None


def run(params: FraudFeaturesParams, interim: Path, out_dir: Path, decisions: Path | None = None) -> dict[str, Any]:
    """Build one row per claim with features computed only from what was known on the claim's date.

    Adds the label (``label``: confirmed by the Fund's audit findings, or by an investigator's decision, which
    overrides the findings for its claim) and the split. Writes ``dataset.parquet``, ``splits.csv`` (claim_id,
    split) and ``summary.json`` under ``out_dir``.

    Args:
        params: the ``features.fraud`` section.
        interim: ingest output folder (``tables/``).
        out_dir: ``data/processed/fraud``.
        decisions: the investigators' decisions file (``shipa fraud decide``); None means
            ``decisions/fraud_decisions.csv`` under the working folder when it exists, else no decisions.

    Raises:
        InputError: the audit findings table is missing, or the decisions file is missing or malformed (the
            message names its file, line and field).
    """
    tables = interim / "tables"
    decisions_file = _decisions_file(decisions)
    # Read first: a malformed decisions file should fail before minutes of feature building.
    decided = decision_labels(read_decisions(decisions_file) if decisions_file is not None else [])
    options = FraudFeatureOptions(**params.model_dump(exclude={"split"}))
    df = build_claim_features(tables, options)
    split = params.split
    split_args: dict[str, Any] = (
        {"test_months": split.test_months, "val_months": split.val_months, "gap_days": split.gap_days}
        if split.kind == "temporal"
        else {}
    )
    findings_label = label_claims(df["claim_id"], load_fund_findings(tables))
    # The split is drawn on the findings' labels alone: a decision changes its claim's label, never which split
    # any claim is in (a provider split stratified on labels would otherwise reshuffle at every decision).
    df = df.with_columns(findings_label)
    df = df.with_columns(split_column(df, kind=split.kind, seed=split.seed, labels=df["label"], **split_args))
    label, from_decision = override_labels(df["claim_id"], findings_label, decided)
    df = df.with_columns(label)
    summary: dict[str, Any] = {
        "claims": df.height,
        "providers": df["provider_id"].n_unique(),
        "decisions": _decisions_summary(decisions_file, decided, findings_label, label, from_decision),
    }
    for name in ("train", "val", "test"):
        mask = df["split"] == name
        part = df.filter(mask)
        created = part["created"].drop_nulls()
        summary[name] = {
            "claims": part.height,
            "audit_labelled": int(part["label"].sum()),
            "decision_labelled": int(from_decision.filter(mask).sum()),
            "date_range": [str(created.min())[:10], str(created.max())[:10]] if created.len() else None,
        }
    with atomic_dir(out_dir) as tmp:
        df.write_parquet(tmp / "dataset.parquet")
        df.select("claim_id", "split").sort("claim_id").write_csv(tmp / "splits.csv")
        write_json(tmp / "summary.json", summary)
    log.info(
        "fraud features: %d claims, %d labelled fraud, %d labels from investigators' decisions",
        df.height,
        int(df["label"].sum()),
        int(from_decision.sum()),
    )
    return summary


def _decisions_summary(
    file: Path | None, decided: pl.DataFrame, findings: pl.Series, label: pl.Series, from_decision: pl.Series
) -> dict[str, Any]:
    """How many labels came from decisions, how many of those changed a finding's label, and unmatched claims."""
    applied = int(from_decision.sum())
    changed = int((from_decision & (label != findings)).sum())
    unmatched = decided.height - applied
    if unmatched:
        log.warning("%d decided claims are not in the feature frame (another cohort, or a mistyped id)", unmatched)
    return {
        "file": str(file) if file is not None else None,
        "claims_decided": decided.height,
        "labels_from_decisions": applied,
        "confirmed": int((from_decision & (label == 1)).sum()),
        "cleared": int((from_decision & (label == 0)).sum()),
        "changed_finding_labels": changed,
        "unmatched_claims": unmatched,
    }

"""Fraud labels from the Fund audit findings: a claim is positive when the Fund's audit confirmed it as fraud.

"Fund audit findings" (``fund_findings`` in code) are the insurer's labels; they are neither the prediction log
(``pipelines.predictionlog``) nor the auditors' reports (``pipelines.audit``). The table and file keep their
names (``audit_findings``): they are the documented raw-data format.

Investigators' decisions (``shipa fraud decide``, read by ``pipelines.fraud.decisions``) override the findings for
the claims they name: :func:`override_labels`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from pipelines.errors import InputError

LABEL = "label"


def load_fund_findings(tables: Path) -> pl.DataFrame:
    """The Fund audit findings: the ingest's ``audit_findings`` table (claim_id, provider_id, pattern, finding_date).

    Raises:
        InputError: the table is missing.
    """
    file = Path(tables) / "audit_findings.parquet"
    if not file.exists():
        raise InputError(f"{file}: audit findings table not found (labels/audit_findings.csv at ingest)")
    df = pl.read_parquet(file, columns=["claim_id", "provider_id", "pattern", "finding_date"])
    return df.filter(pl.col("claim_id").is_not_null())


def label_claims(claim_ids: pl.Series, findings: pl.DataFrame, *, as_of: dt.date | None = None) -> pl.Series:
    """1 for each claim with an audit finding (dated on or before ``as_of`` when given), else 0.

    Args:
        claim_ids: claim pseudonyms (the feature frame's ``claim_id``).
        findings: the audit findings table.
        as_of: only findings known by this date count (simulates training at that date).
    """
    f = findings
    if as_of is not None:
        f = f.filter(pl.col("finding_date").cast(pl.Date) <= as_of)
    known = set(f["claim_id"].drop_nulls().to_list())
    return pl.Series(LABEL, [int(c in known) for c in claim_ids.to_list()], dtype=pl.Int8)


def finding_patterns(claim_ids: pl.Series, findings: pl.DataFrame) -> pl.Series:
    """The confirmed pattern of each claim (null when none), e.g. to check reasons against labels."""
    first = findings.unique("claim_id", keep="first", maintain_order=True).select("claim_id", "pattern")
    return pl.DataFrame({"claim_id": claim_ids}).join(first, on="claim_id", how="left", maintain_order="left")[
        "pattern"
    ]


def override_labels(claim_ids: pl.Series, labels: pl.Series, decided: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """The labels with each decided claim's label replaced by its decision's, and which rows were replaced.

    Args:
        claim_ids: claim pseudonyms (the feature frame's ``claim_id``).
        labels: their labels from the audit findings (:func:`label_claims`), in the same order.
        decided: one row per decided claim: ``claim_id`` and ``label`` (1 confirmed, 0 cleared).

    Returns:
        ``label`` (Int8) and ``from_decision`` (Boolean: the label came from an investigator's decision).
    """
    frame = pl.DataFrame({"claim_id": claim_ids, LABEL: labels.cast(pl.Int8)})
    joined = frame.join(
        decided.unique("claim_id", keep="last", maintain_order=True).select(
            "claim_id", pl.col(LABEL).cast(pl.Int8).alias("decided")
        ),
        on="claim_id",
        how="left",
        maintain_order="left",
    )
    from_decision = joined["decided"].is_not_null().alias("from_decision")
    label = joined.select(pl.coalesce("decided", LABEL).alias(LABEL))[LABEL]
    return label, from_decision

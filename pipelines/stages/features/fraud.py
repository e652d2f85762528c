"""Stage ``features@fraud``: one row per claim under ``data/processed/fraud/``, features known on its date."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import FraudFeaturesParams
from pipelines.features.fraud import FraudFeatureOptions, build_claim_features
from pipelines.features.fraud_labels import label_claims, load_fund_findings
from pipelines.features.fraud_splits import split_column
from pipelines.io import atomic_dir, write_json

log = logging.getLogger(__name__)


def run(params: FraudFeaturesParams, interim: Path, out_dir: Path) -> dict[str, Any]:
    """Build one row per claim with features computed only from what was known on the claim's date.

    Adds the audit label (``label``: confirmed by the Fund's findings) and the split. Writes
    ``dataset.parquet``, ``splits.csv`` (claim_id, split) and ``summary.json`` under ``out_dir``.
    """
    tables = interim / "tables"
    options = FraudFeatureOptions(**params.model_dump(exclude={"split"}))
    df = build_claim_features(tables, options)
    split = params.split
    split_args: dict[str, Any] = (
        {"test_months": split.test_months, "val_months": split.val_months, "gap_days": split.gap_days}
        if split.kind == "temporal"
        else {}
    )
    df = df.with_columns(label_claims(df["claim_id"], load_fund_findings(tables)))
    df = df.with_columns(split_column(df, kind=split.kind, seed=split.seed, labels=df["label"], **split_args))
    summary: dict[str, Any] = {"claims": df.height, "providers": df["provider_id"].n_unique()}
    for name in ("train", "val", "test"):
        part = df.filter(pl.col("split") == name)
        created = part["created"].drop_nulls()
        summary[name] = {
            "claims": part.height,
            "audit_labelled": int(part["label"].sum()),
            "date_range": [str(created.min())[:10], str(created.max())[:10]] if created.len() else None,
        }
    with atomic_dir(out_dir) as tmp:
        df.write_parquet(tmp / "dataset.parquet")
        df.select("claim_id", "split").sort("claim_id").write_csv(tmp / "splits.csv")
        write_json(tmp / "summary.json", summary)
    log.info("fraud features: %d claims, %d audit-labelled", df.height, int(df["label"].sum()))
    return summary

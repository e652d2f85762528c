"""Ground truth of the built-in cohort (``manifest/fraud_truth.csv``) keyed by the tables' claim pseudonyms.

For evaluation only: it lists every injected fraudulent claim, including those no audit found, so a model can
be scored on the fraud it was never told about. It must never feed training or features.
"""

from __future__ import annotations

import csv
from pathlib import Path

import polars as pl

from pipelines.errors import InputError
from pipelines.fhir.pseudonym import Pseudonymizer

TRUTH_FILE = Path("manifest") / "fraud_truth.csv"


def load_truth(raw_dir: Path, pseudonymizer: Pseudonymizer) -> pl.DataFrame:
    """Every injected fraudulent claim with its pattern and whether an audit labelled it.

    Args:
        raw_dir: the raw data folder written by ``shipa synthesize`` (with ``manifest/fraud_truth.csv``).
        pseudonymizer: the ingest's keyed pseudonymizer (same key), so that ids match ``claims.claim_id``.

    Returns:
        Columns claim_id (pseudonym, as ingest writes ``Pseudonymizer.id("Claim", id)``), pattern, labelled.

    Raises:
        InputError: the truth file is missing (real data has none) or lacks a column.
    """
    file = Path(raw_dir) / TRUTH_FILE
    if not file.exists():
        raise InputError(f"{file}: fraud ground truth not found (only the built-in cohort has one)")
    ids: list[str] = []
    patterns: list[str] = []
    labelled: list[bool] = []
    with file.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"claim_id", "pattern", "labelled"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{file}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            ids.append(pseudonymizer.id("Claim", row["claim_id"]))
            patterns.append(row["pattern"])
            labelled.append(row["labelled"].strip().lower() == "true")
    return pl.DataFrame(
        {"claim_id": ids, "pattern": patterns, "labelled": labelled},
        schema={"claim_id": pl.String, "pattern": pl.String, "labelled": pl.Boolean},
    ).unique("claim_id", keep="first", maintain_order=True)

"""The worklists of every day of the test months, scanned: no placeholder, no unpluralised form, in kk, ru and en, and
no reason whose feature is below its threshold.

Run on the tiny cohort (always) and on the default cohort when ``make run`` has built it. Each day's list is built
twice: as the investigators get it (every rule hit, then the model's claims at or above the moderate band) and with
no cut-off (the day's 20 most probable claims), so that many more reasons are scanned than a quiet day shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.fraud.reason_texts import LANGUAGES, REFERENCE_COLUMNS, passes_threshold, placeholder_problems
from pipelines.fraud.rules import evaluate_rules
from pipelines.fraud.worklist import RiskBands, build_worklist
from pipelines.modeling.fraud_attribution import explain
from pipelines.modeling.fraud_model import load_fraud_model, score

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATASET = REPO / "data" / "processed" / "fraud" / "dataset.parquet"
DEFAULT_MODEL = REPO / "models" / "fraud" / "train" / "model"
TEXT_COLUMNS = [f"{kind}_{lang}" for kind in ("rules", "reasons") for lang in LANGUAGES]


def scan_worklists(records: pl.DataFrame, model: Any) -> dict[str, Any]:
    """Build every test-month day's worklist (with and without the cut-off) and list what is wrong in them."""
    test = records.filter(pl.col("split") == "test")
    probabilities = score(model, test)
    reasons = explain(model, test)
    hits = evaluate_rules(test)
    saved = getattr(model, "reference", None) or {}
    reference = {c: float(saved[c]) for c in REFERENCE_COLUMNS if c in saved}
    by_id = {row["claim_id"]: row for row in test.iter_rows(named=True)}
    days = test["asof"].to_numpy()
    problems: list[str] = []
    listed = scanned = 0
    for day in sorted(set(test["asof"].to_list())):
        rows = np.flatnonzero(days == np.datetime64(day))
        part = test[rows]
        for cutoff in (RiskBands().moderate, 0.0):
            wl = build_worklist(
                part,
                probabilities[rows],
                [reasons[i] for i in rows],
                date=day,
                k=20,
                cutoff=cutoff,
                rule_hits=[hits[i] for i in rows],
            )
            listed += wl.height
            for row in wl.iter_rows(named=True):
                for column in TEXT_COLUMNS:
                    text = row[column]
                    scanned += bool(text)
                    problems += [
                        f"{day} {row['claim_id']} {column}: {p}" for p in placeholder_problems(text, column[-2:])
                    ]
                for code in filter(None, row["reason_codes"].split(" | ")):
                    if not passes_threshold(code, by_id[row["claim_id"]], reference):
                        problems.append(f"{day} {row['claim_id']}: reason {code} is below its threshold")
    return {"days": len(set(test["asof"].to_list())), "listed": listed, "texts": scanned, "problems": problems}


def test_tiny_cohort_worklists_have_no_placeholder_and_only_findings(tiny_fraud: dict[str, Any]) -> None:
    out = scan_worklists(tiny_fraud["records"], tiny_fraud["model"])
    assert out["days"] > 100 and out["listed"] > 300 and out["texts"] > 150, out
    assert out["problems"] == []


@pytest.mark.skipif(
    not (DEFAULT_DATASET.exists() and DEFAULT_MODEL.exists()), reason="the default cohort is built by `make run`"
)
def test_default_cohort_worklists_have_no_placeholder_and_only_findings() -> None:
    out = scan_worklists(pl.read_parquet(DEFAULT_DATASET), load_fraud_model(DEFAULT_MODEL))
    assert out["days"] > 60 and out["listed"] > 1000, out
    assert out["problems"] == []

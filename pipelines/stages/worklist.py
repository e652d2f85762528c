"""``shipa fraud worklist``: the investigators' ranked list of one day's claims, with reasons they can check."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.errors import InputError

log = logging.getLogger(__name__)


def run(date: dt.date, k: int, processed: Path, model_dir: Path, out: Path) -> dict[str, Any]:
    """Score and explain the claims created on ``date``; write the top ``k`` as Parquet and CSV.

    Raises:
        InputError: no features or model yet, or no claim on that day.
    """
    from pipelines.fraud.worklist import build_worklist, write_worklist
    from pipelines.modeling.fraud_attribution import explain
    from pipelines.modeling.fraud_model import load_fraud_model, score

    dataset = processed / "dataset.parquet"
    if not dataset.exists():
        raise InputError(f"{dataset}: not found (run `shipa features fraud` first)")
    if not model_dir.exists():
        raise InputError(f"{model_dir}: not found (run `shipa train fraud` first)")
    day = pl.read_parquet(dataset).filter(pl.col("asof") == date)
    if day.height == 0:
        raise InputError(f"{dataset}: no claim was created on {date.isoformat()}")
    model = load_fraud_model(model_dir)
    scores = score(model, day)
    worklist = build_worklist(day, scores, explain(model, day), date=date, k=k)
    parquet, csv = write_worklist(worklist, out, name=f"worklist-{date.isoformat()}")
    log.info("worklist %s: %d of %d claims", date.isoformat(), worklist.height, day.height)
    return {"date": date.isoformat(), "rows": worklist.height, "claims_that_day": day.height,
            "parquet": str(parquet), "csv": str(csv)}  # fmt: skip

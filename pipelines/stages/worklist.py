"""``shipa fraud worklist``: the investigators' list of one day's claims, with the evidence they can check.

Every rule hit of the day, then the model's most probable claims at or above the cut-off (at most ``k``), each
with its probability, risk band, money at stake and reasons in Kazakh, Russian and English; and a summary per
provider beside it (see docs/fraud-worklist.md).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import RiskBandsParams
from pipelines.errors import InputError

log = logging.getLogger(__name__)


def run(
    date: dt.date,
    k: int,
    processed: Path,
    model_dir: Path,
    out: Path,
    *,
    cutoff: float | None = None,
    bands: RiskBandsParams | None = None,
) -> dict[str, Any]:
    """Score and explain the claims created on ``date``; write the worklist and its provider summary.

    Writes ``out/worklist-DATE.{parquet,csv}`` and ``out/worklist-DATE-providers.{parquet,csv}``; a day with
    no case gets both files with their header only.

    Args:
        date: the day whose claims are reviewed.
        k: the most cases the model adds beyond the rule hits.
        processed: ``data/processed/fraud`` (``dataset.parquet``).
        model_dir: the trained model folder (``models/fraud/train/model``).
        out: the folder for the files.
        cutoff: the lowest probability the model lists; None: the ``moderate`` band.
        bands: the risk bands (``register.fraud.risk_bands``); None: the built-in defaults (0.1 and 0.5).

    Raises:
        InputError: no features or model yet, a date outside the claims' days, or a cut-off outside [0, 1].
    """
    from pipelines.fraud.rules import evaluate_rules
    from pipelines.fraud.worklist import RiskBands, build_worklist, provider_summary, write_worklist
    from pipelines.modeling.fraud_attribution import explain
    from pipelines.modeling.fraud_model import load_fraud_model, score

    dataset = processed / "dataset.parquet"
    if not dataset.exists():
        raise InputError(f"{dataset}: not found (run `shipa features fraud` first)")
    if not model_dir.exists():
        raise InputError(f"{model_dir}: not found (run `shipa train fraud` first)")
    params = bands or RiskBandsParams()
    risk = RiskBands(moderate=params.moderate, high=params.high)
    threshold = risk.moderate if cutoff is None else cutoff
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--cutoff {threshold}: must be within [0, 1]")
    days = pl.scan_parquet(dataset).select(pl.col("asof").min().alias("lo"), pl.col("asof").max().alias("hi"))
    first, last = days.collect().row(0)
    if first is None or not first <= date <= last:
        raise InputError(f"{dataset}: no claim was created on {date.isoformat()} (claims run {first} to {last})")
    day = pl.read_parquet(dataset).filter(pl.col("asof") == date)
    model = load_fraud_model(model_dir)
    probabilities = score(model, day)
    hits = evaluate_rules(day)
    worklist = build_worklist(
        day, probabilities, explain(model, day), date=date, k=k, cutoff=threshold, bands=risk, rule_hits=hits
    )
    summary = provider_summary(worklist)
    name = f"worklist-{date.isoformat()}"
    parquet, csv = write_worklist(worklist, out, name=name)
    summary_parquet, summary_csv = write_worklist(summary, out, name=f"{name}-providers")
    n_rules = int((worklist["rule_hits"].str.len_chars() > 0).sum())
    log.info(
        "worklist %s: %d cases (%d rule hits, %d from the model at probability >= %g) of %d claims",
        date.isoformat(), worklist.height, n_rules, worklist.height - n_rules, threshold, day.height,
    )  # fmt: skip
    return {
        "date": date.isoformat(),
        "rows": worklist.height,
        "rule_hits": n_rules,
        "model_cases": worklist.height - n_rules,
        "cutoff": threshold,
        "bands": risk.as_dict(),
        "claims_that_day": day.height,
        "providers": summary.height,
        "parquet": str(parquet),
        "csv": str(csv),
        "providers_parquet": str(summary_parquet),
        "providers_csv": str(summary_csv),
    }

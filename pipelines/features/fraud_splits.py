"""Splits of the fraud claims: temporal (train on earlier months, test on later ones) or grouped by provider.

Both return one split name per claim (``train``, ``val``, ``test``, or ``gap`` for claims left out between
training and test), so the stage can save the column beside the features as an artifact.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

SPLIT = "split"


def _shift_months(day: dt.date, months: int) -> dt.date:
    """The first day of the month ``months`` after (negative: before) the month of ``day``."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def temporal_split(
    dates: pl.Series,
    *,
    test_months: int = 6,
    val_months: int = 3,
    gap_days: int = 30,
    test_start: dt.date | None = None,
) -> pl.Series:
    """Split claims by their created date.

    Test holds the last ``test_months`` calendar months of the data (or everything from ``test_start``); the
    ``gap_days`` before the test start are left out (``gap``), so that no claim whose outcome overlaps the
    test period trains the model; validation runs from the first day of the month ``val_months`` before the
    gap's start; the rest is train.

    Args:
        dates: a claim's created date (Date or Datetime), one per claim.
        test_months: months of test data at the end (ignored when ``test_start`` is given).
        val_months: months of validation before the gap.
        gap_days: days left out before the test start.
        test_start: first test day (default: the first day of the last ``test_months`` months).

    Returns:
        A ``split`` column aligned with ``dates``.

    Raises:
        ValueError: no dates, or a split would be empty.
    """
    day = dates.cast(pl.Date)
    if day.drop_nulls().is_empty():
        raise ValueError("no claim dates to split")
    last = day.max()
    assert isinstance(last, dt.date)
    start = test_start or _shift_months(last, -(test_months - 1))
    cut = start - dt.timedelta(days=gap_days)
    val_start = _shift_months(cut, -val_months)
    out = (
        pl.DataFrame({"d": day})
        .select(
            pl.when(pl.col("d") >= start)
            .then(pl.lit("test"))
            .when(pl.col("d") >= cut)
            .then(pl.lit("gap"))
            .when(pl.col("d") >= val_start)
            .then(pl.lit("val"))
            .otherwise(pl.lit("train"))
            .alias(SPLIT)
        )
        .to_series()
    )
    for name in ("train", "test"):
        if not (out == name).any():
            raise ValueError(f"temporal split leaves '{name}' empty (test from {start}, gap {gap_days} days)")
    return out


def provider_split(
    provider_ids: pl.Series,
    *,
    val: float = 0.15,
    test: float = 0.25,
    seed: int = 0,
    labels: pl.Series | None = None,
) -> pl.Series:
    """Assign whole providers to train/val/test (for provider-level scores), seeded and optionally stratified.

    Args:
        provider_ids: provider pseudonym per claim.
        val: share of providers for validation.
        test: share of providers for test.
        seed: the split's seed.
        labels: 0/1 label per claim; providers with any positive are spread over the splits separately.

    Returns:
        A ``split`` column aligned with ``provider_ids`` (claims without a provider go to train).
    """
    df = pl.DataFrame({"p": provider_ids.cast(pl.String), "y": labels if labels is not None else 0})
    per = df.group_by("p").agg(pl.col("y").max()).drop_nulls("p").sort("p")
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for stratum in sorted(per["y"].unique().to_list()):
        ids = per.filter(pl.col("y") == stratum)["p"].to_list()
        order = rng.permutation(len(ids))
        n_test, n_val = round(len(ids) * test), round(len(ids) * val)
        for rank, i in enumerate(order):
            assign[ids[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return pl.Series(SPLIT, [assign.get(p, "train") if p is not None else "train" for p in df["p"].to_list()])


def split_column(
    features: pl.DataFrame,
    *,
    kind: str = "temporal",
    seed: int = 0,
    labels: pl.Series | None = None,
    **kwargs: Any,  # the chosen split's own options (from params): that function checks them when called
) -> pl.Series:
    """The split column of a fraud feature frame: ``kind`` is ``temporal`` (by ``created``) or ``provider``.

    Extra keyword arguments go to :func:`temporal_split` or :func:`provider_split`.

    Raises:
        ValueError: an unknown kind.
    """
    if kind == "temporal":
        return temporal_split(features["created"], **kwargs)
    if kind == "provider":
        return provider_split(features["provider_id"], seed=seed, labels=labels, **kwargs)
    raise ValueError(f"unknown split kind {kind!r}; use 'temporal' or 'provider'")

"""Look-ahead-free history: aggregates of everything known before the first day of each claim's month.

Peer medians, provider baselines and the provider graphs are statistics of many claims. Recomputing them for
every claim would be exact but slow, so each month gets one snapshot built only from records dated before that
month began (within a trailing window). A claim then joins the snapshot of its own month, which can only hold
information older than the claim itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import polars as pl

MONTH = "month"


def month_start(col: str) -> pl.Expr:
    """The first day of the month of a date column (named ``month``)."""
    return pl.col(col).dt.truncate("1mo").alias(MONTH)


def months_of(dates: pl.Series) -> list[dt.date]:
    """Sorted distinct month starts of a date series."""
    return sorted(d for d in dates.dt.truncate("1mo").unique().to_list() if d is not None)


def monthly(
    events: pl.DataFrame,
    date_col: str,
    months: Sequence[dt.date],
    build: Callable[[pl.DataFrame], pl.DataFrame],
    *,
    window_days: int | None = None,
) -> pl.DataFrame:
    """Apply ``build`` to the events known before each month start; the results carry a ``month`` column.

    Args:
        events: rows with a date column.
        date_col: when each event became known (a claim's created date, a referral's authored date...).
        months: month starts to build snapshots for.
        build: aggregates the events of one snapshot (must return the same schema every time).
        window_days: keep only events within this many days before the month start (None: all history).

    Returns:
        The concatenated snapshots; empty (with the schema of ``build`` on no events) when there are no
        months.
    """
    parts = []
    for m in months:
        cond = pl.col(date_col) < m
        if window_days is not None:
            cond = cond & (pl.col(date_col) >= m - dt.timedelta(days=window_days))
        parts.append(build(events.filter(cond)).with_columns(pl.lit(m, dtype=pl.Date).alias(MONTH)))
    if not parts:
        return build(events.clear()).with_columns(pl.lit(None, dtype=pl.Date).alias(MONTH))
    return pl.concat(parts, how="vertical_relaxed")


def peer_median(
    claims: pl.DataFrame,
    events: pl.DataFrame,
    value: str,
    levels: Sequence[Sequence[str]],
    *,
    min_count: int,
    window_days: int | None = None,
) -> pl.Series:
    """Median of ``value`` among earlier peers of each claim, from the most to the least specific peer group.

    Args:
        claims: rows to look up (with ``month`` and every key column of ``levels``).
        events: the peer rows (with ``asof``, ``value`` and the key columns).
        value: column whose median is taken.
        levels: key sets, most specific first (e.g. code+region+kind, then code+kind, then code).
        min_count: a peer group needs at least this many earlier rows to be used.
        window_days: trailing window of the snapshots.

    Returns:
        The median per row of ``claims`` (null when no level has enough history), in row order.
    """
    months = months_of(claims["month"]) if claims.height else []
    out = pl.Series(value, [None] * claims.height, dtype=pl.Float64)
    for keys in levels:
        keys = list(keys)

        def build(df: pl.DataFrame, keys: list[str] = keys) -> pl.DataFrame:
            return (
                df.group_by(keys)
                .agg(pl.col(value).median().alias("_median"), pl.len().alias("_n"))
                .filter(pl.col("_n") >= min_count)
                .select(*keys, "_median")
            )

        snap = monthly(events.select("asof", value, *keys), "asof", months, build, window_days=window_days)
        found = claims.select(*keys, MONTH).join(snap, on=[*keys, MONTH], how="left", maintain_order="left")
        out = out.fill_null(found["_median"])
    return out

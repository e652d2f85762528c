"""FHIR date and dateTime values as ingest needs them: UTC timestamps for tables, YYYYMMDD integers for checks.

FHIR allows partial dates (``2023``, ``2023-05``). For plausibility checks a partial date is a range: its low end
is the first day it can mean and its high end the last, so that "before birth" is only flagged when it is certain.
The integer form YYYYMMDD makes whole-year ages exact: ``(event - birth) // 10000``.
"""

from __future__ import annotations

import calendar
import datetime as dt

UTC = dt.UTC


def ymd_bounds(value: object) -> tuple[int, int] | None:
    """Return (low, high) as YYYYMMDD integers for a FHIR date/dateTime string, or None when it does not parse.

    The calendar date is the one written (the local date of a dateTime), not its UTC date.
    """
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        year = int(value[0:4])
        if len(value) == 4:
            return year * 10000 + 101, year * 10000 + 1231
        month = int(value[5:7])
        if len(value) == 7:
            last = calendar.monthrange(year, month)[1]
            return year * 10000 + month * 100 + 1, year * 10000 + month * 100 + last
        day = int(value[8:10])
        dt.date(year, month, day)
    except (ValueError, IndexError):
        return None
    ymd = year * 10000 + month * 100 + day
    return ymd, ymd


def to_utc(value: object) -> dt.datetime | None:
    """Parse a FHIR date/dateTime/instant to an aware UTC datetime (partial dates: their first instant)."""
    if not isinstance(value, str):
        return None
    try:
        if len(value) == 4:
            return dt.datetime(int(value), 1, 1, tzinfo=UTC)
        if len(value) == 7:
            return dt.datetime(int(value[0:4]), int(value[5:7]), 1, tzinfo=UTC)
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_date(value: object) -> dt.date | None:
    """The calendar date written in a FHIR date/dateTime (partial dates: their first day)."""
    bounds = ymd_bounds(value)
    if bounds is None:
        return None
    low = bounds[0]
    return dt.date(low // 10000, low // 100 % 100, low % 100)


def year_month(value: object) -> str | None:
    """``YYYY-MM`` of a FHIR date (None for a year-only or unparseable date)."""
    if isinstance(value, str) and len(value) >= 7 and ymd_bounds(value) is not None:
        return value[0:7]
    return None

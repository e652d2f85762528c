"""Plain helpers that turn nested dicts into MLflow-safe keys and values (no MLflow import)."""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any

_UNSAFE = re.compile(r"[^/\w.\- :]")


def safe_key(key: str) -> str:
    """An MLflow metric/param/tag key: characters MLflow refuses become ``_``, and path tricks are removed.

    MLflow accepts letters, digits, ``_ - . / : space`` and refuses keys that are not a normalised relative
    path.
    """
    cleaned = _UNSAFE.sub("_", key)
    if posixpath.normpath(cleaned) != cleaned or cleaned.startswith(("/", "..")) or cleaned in ("", "."):
        cleaned = cleaned.replace("/", "_").strip(".") or "_"
    return cleaned[:250]


def flatten(data: Mapping[str, Any], prefix: str = "", sep: str = ".") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted key, leaf value)`` for every leaf of a nested mapping, in insertion order."""
    for key, value in data.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from flatten(value, name, sep)
        else:
            yield name, value


def metric_items(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as ``{safe dotted key: float}``; None, text and lists skipped.

    Booleans become 0/1. NaN and infinities are kept: MLflow stores them and they show that a metric was
    undefined.
    """
    out: dict[str, float] = {}
    for key, value in flatten(data, prefix):
        if isinstance(value, bool | int | float):
            out[safe_key(key)] = float(value)
    return out


def param_items(data: Mapping[str, Any], prefix: str = "", max_len: int = 6000) -> dict[str, str]:
    """Leaves of a nested mapping as ``{safe dotted key: str}``; lists become JSON, None becomes ``"None"``.

    Values longer than ``max_len`` (MLflow's limit) are cut and marked, so a long list never fails a run.
    """
    out: dict[str, str] = {}
    for key, value in flatten(data, prefix):
        text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, list | tuple) else str(value)
        if len(text) > max_len:
            text = text[: max_len - 14] + "...[truncated]"
        out[safe_key(key)] = text
    return out


def evaluation_metrics(report: Mapping[str, Any], prefix: str = "test") -> dict[str, float]:
    """The headline numbers of an ``evaluate_binary`` report as flat MLflow metrics.

    ``<prefix>.<metric>`` is the point estimate, ``<prefix>.<metric>.low`` / ``.high`` the CI bounds, plus
    ``<prefix>.n``, ``<prefix>.n_positive``, ``<prefix>.prevalence`` and ``<prefix>.gap.<column>.<metric>``
    for subgroup gaps. Undefined values are left out.
    """
    out: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[safe_key(key)] = float(value)

    for field in ("n", "n_positive", "prevalence", "threshold"):
        put(f"{prefix}.{field}", report.get(field))
    for name, est in (report.get("metrics") or {}).items():
        put(f"{prefix}.{name}", est.get("value"))
        put(f"{prefix}.{name}.low", est.get("low"))
        put(f"{prefix}.{name}.high", est.get("high"))
    for column, table in (report.get("subgroups") or {}).items():
        for name, gap in (table.get("gaps") or {}).items():
            if gap is not None:
                put(f"{prefix}.gap.{column}.{name}", gap.get("gap"))
    return out

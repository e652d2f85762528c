"""How a model version was used, from the service's audit log: counts per day, role, alias, outcome, and outputs.

Only aggregates leave this module: token names, patient pseudonyms and input hashes are never summarised.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from pipelines.predictionlog.entry import LogEntry
from pipelines.predictionlog.log import AuditOutcome, PredictionLog, events_table

SCORE_KEYS = frozenset({"probability", "probabilities", "probabilityDecimal", "score", "scores", "risk"})
"""Output keys whose numbers are the model's scores (numbers and lists of numbers directly under them)."""


@dataclass(frozen=True)
class Usage:
    """Aggregated use of one model version.

    Attributes:
        total: requests recorded for the version.
        first: time of the first request ("" when none); last likewise.
        per_day: ``YYYY-MM-DD`` (UTC) -> requests.
        per_role / per_alias / per_outcome / per_endpoint: counts by that field (outcome by name).
        scores_by_day: ``YYYY-MM-DD`` -> every score the version returned that day (successful requests).
    """

    total: int
    first: str = ""
    last: str = ""
    per_day: dict[str, int] = field(default_factory=dict)
    per_role: dict[str, int] = field(default_factory=dict)
    per_alias: dict[str, int] = field(default_factory=dict)
    per_outcome: dict[str, int] = field(default_factory=dict)
    per_endpoint: dict[str, int] = field(default_factory=dict)
    scores_by_day: dict[str, list[float]] = field(default_factory=dict)

    @property
    def n_scores(self) -> int:
        """Scores extracted over all days."""
        return sum(len(v) for v in self.scores_by_day.values())


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def extract_scores(output: Any) -> list[float]:
    """The scores in a recorded output: numbers under a key in :data:`SCORE_KEYS`, at any depth.

    Under a score key, the numbers of a list count, and so do those of an object keyed by id (one with no score
    key of its own). So ``{"probability": 0.7, "threshold": 0.4}`` gives ``[0.7]``, the fraud route's
    ``{"scores": {"c1": [0.2, "high", ["R1"]]}}`` gives ``[0.2]``, and ``{"scores": [{"claim": "c1", "score": 0.2,
    "amount": 5000}]}`` gives ``[0.2]``; other numbers (amounts, counts, thresholds) are ignored, and so are
    truncated outputs that keep only the top claims (``top``), which would bias the distribution.
    """
    found: list[float] = []

    def walk(value: Any, under_score_key: bool) -> None:
        number = _number(value)
        if number is not None:
            if under_score_key:
                found.append(number)
        elif isinstance(value, Mapping):
            own = any(str(key) in SCORE_KEYS for key in value)
            for key, item in value.items():
                walk(item, str(key) in SCORE_KEYS or (under_score_key and not own))
        elif isinstance(value, list | tuple):
            for item in value:
                # A list nested in a scored list holds codes or the like, not scores.
                walk(item, under_score_key and not isinstance(item, list | tuple))

    walk(output, False)
    return found


def outcome_name(code: str) -> str:
    """``success``, ``minor_failure`` ... for a stored outcome code (the code itself when unknown)."""
    try:
        return AuditOutcome(code).name
    except ValueError:
        return code


def summarize(records: Iterable[LogEntry]) -> Usage:
    """Aggregate audit records (of one model version) into counts and scores per day."""
    per_day: Counter[str] = Counter()
    per_role: Counter[str] = Counter()
    per_alias: Counter[str] = Counter()
    per_outcome: Counter[str] = Counter()
    per_endpoint: Counter[str] = Counter()
    scores: defaultdict[str, list[float]] = defaultdict(list)
    first, last, total = "", "", 0
    for rec in records:
        total += 1
        day = rec.recorded[:10]
        first = rec.recorded if not first or rec.recorded < first else first
        last = max(last, rec.recorded)
        per_day[day] += 1
        per_role[rec.role] += 1
        per_alias[rec.model_alias] += 1
        per_outcome[outcome_name(rec.outcome)] += 1
        per_endpoint[rec.endpoint] += 1
        if rec.outcome == AuditOutcome.success.value:
            try:
                scores[day] += extract_scores(json.loads(rec.output_json))
            except json.JSONDecodeError:
                continue
    return Usage(
        total=total,
        first=first,
        last=last,
        per_day=dict(sorted(per_day.items())),
        per_role=dict(per_role.most_common()),
        per_alias=dict(per_alias.most_common()),
        per_outcome=dict(per_outcome.most_common()),
        per_endpoint=dict(per_endpoint.most_common()),
        scores_by_day={d: v for d, v in sorted(scores.items()) if v},
    )


def version_records(audit_log: PredictionLog, name: str, version: str) -> list[LogEntry]:
    """Every audit record of one model version, in chain order."""
    c = events_table.c
    query = select(events_table).where(c.model_name == name, c.model_version == str(version)).order_by(c.seq)
    with audit_log.engine.connect() as conn:
        return [LogEntry(**dict(row)) for row in conn.execute(query).mappings()]


def read_usage(audit_log: PredictionLog, name: str, version: str) -> Usage:
    """The aggregated use of ``name`` version ``version`` recorded in ``audit_log``."""
    return summarize(version_records(audit_log, name, version))

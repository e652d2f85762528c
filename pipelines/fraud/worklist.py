"""The investigators' daily worklist: every rule hit of the day, then the model's most probable claims above a
cut-off, with the money at stake, the reasons and a summary per provider.

How a day's list is made (see docs/fraud-worklist.md):

- Every claim of the day that a rule hits (:mod:`pipelines.fraud.rules`: a service after death, an unbundled
  package, an encounter billed that is not the claim's own) is listed, whatever its probability.
- Then the model's claims: those with probability at least ``cutoff`` (default: the ``moderate`` risk band),
  highest first, at most ``k`` of them. ``k`` bounds only these; rule hits come on top of it. A day with fewer
  claims above the cut-off lists fewer, and a day with none lists only its rule hits, or nothing (an empty list
  with its header, never padding).
- Rule hits rank first (by probability among themselves), then the model's claims. ``probability`` is the
  model's own calibrated probability, unchanged by any rule; ``band`` reads it against the risk bands.

A worklist holds pseudonymous ids only (claim, provider, patient), never a name, IIN or address: every id is
checked to be a 32-hex-digit pseudonym before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.fraud.reason_texts import Reason
from pipelines.fraud.rules import RuleHit, evaluate_rules

ID_COLUMNS = ("claim_id", "provider_id", "patient_id")
SEPARATOR = " | "
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
BANDS = ("low", "moderate", "high")
WORKLIST_COLUMNS = (
    "rank",
    "date",
    "claim_id",
    "provider_id",
    "patient_id",
    "rule_hits",
    "probability",
    "band",
    "amount_kzt",
    "reason_codes",
    "rules_kk",
    "rules_ru",
    "rules_en",
    "reasons_kk",
    "reasons_ru",
    "reasons_en",
)
SUMMARY_COLUMNS = (
    "date",
    "provider_id",
    "cases",
    "rule_hits",
    "amount_kzt",
    "max_probability",
    "cases_high",
    "cases_moderate",
    "cases_low",
)
_SCHEMA: dict[str, pl.DataType] = {
    "rank": pl.Int32(),
    "date": pl.Date(),
    "claim_id": pl.String(),
    "provider_id": pl.String(),
    "patient_id": pl.String(),
    "rule_hits": pl.String(),
    "probability": pl.Float64(),
    "band": pl.String(),
    "amount_kzt": pl.Float64(),
    "reason_codes": pl.String(),
    "rules_kk": pl.String(),
    "rules_ru": pl.String(),
    "rules_en": pl.String(),
    "reasons_kk": pl.String(),
    "reasons_ru": pl.String(),
    "reasons_en": pl.String(),
}


@dataclass(frozen=True)
class RiskBands:
    """Cut-offs of the qualitative risk of a probability: ``low`` below ``moderate``, ``moderate`` from
    ``moderate``, ``high`` from ``high`` on (``register.fraud.risk_bands`` in params.yaml: 0.1 and 0.5)."""

    moderate: float = 0.1
    high: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.moderate < self.high <= 1.0:
            raise ValueError(f"risk bands need 0 < moderate < high <= 1, got {self.moderate} and {self.high}")

    def band(self, probability: float) -> str:
        """``low``, ``moderate`` or ``high`` for one probability."""
        if probability >= self.high:
            return "high"
        return "moderate" if probability >= self.moderate else "low"

    def bands(self, probabilities: npt.ArrayLike) -> list[str]:
        """The band of each probability."""
        return [self.band(float(p)) for p in np.asarray(probabilities, dtype=np.float64).ravel()]

    def as_dict(self) -> dict[str, float]:
        """JSON-ready cut-offs."""
        return {"moderate": self.moderate, "high": self.high}


class NotPseudonymousError(ValueError):
    """An id column holds a value that is not a pseudonym (the value itself is never echoed)."""


def check_pseudonymous(df: pl.DataFrame, columns: Sequence[str] = ID_COLUMNS) -> None:
    """Refuse id columns holding anything but 32-hex-digit pseudonyms (nulls allowed).

    Raises:
        NotPseudonymousError: naming the column and row number, not the value.
    """
    for col in columns:
        if col not in df.columns:
            continue
        values = df[col].cast(pl.String)
        bad = values.is_not_null() & ~values.str.contains(_PSEUDONYM.pattern)
        if bad.any():
            row = int(bad.arg_max() or 0)
            raise NotPseudonymousError(f"worklist column '{col}' row {row}: value is not a pseudonym")


def claim_days(features_df: pl.DataFrame) -> pl.Series:
    """The day of each claim record: ``asof`` (the local calendar day of ``created``), else the UTC day."""
    return features_df["asof"] if "asof" in features_df.columns else features_df["created"].cast(pl.Date)


def select_cases(
    features_df: pl.DataFrame,
    probabilities: npt.ArrayLike,
    hit: npt.ArrayLike,
    *,
    date: dt.date,
    k: int,
    cutoff: float,
) -> list[int]:
    """Row numbers of the day's cases in list order: rule hits first, then at most ``k`` claims at or above
    ``cutoff``; within each part by probability, then amount (larger first), then claim id.

    Raises:
        ValueError: arrays do not match the records, ``k`` < 1 or ``cutoff`` outside [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    h = np.asarray(hit, dtype=bool)
    if p.ndim != 1 or p.shape[0] != features_df.height or h.shape != p.shape:
        raise ValueError(f"probabilities and rule hits must have one entry per record ({features_df.height})")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0.0 <= cutoff <= 1.0:
        raise ValueError(f"cutoff must be within [0, 1], got {cutoff}")
    frame = pl.DataFrame(
        {
            "_row": np.arange(features_df.height),
            "_day": claim_days(features_df),
            "_hit": h,
            "_p": p,
            "_amount": features_df["total"].cast(pl.Float64).fill_null(0.0),
            "_id": features_df["claim_id"].cast(pl.String),
        }
    ).filter(pl.col("_day") == date)
    order = ["_p", "_amount", "_id"]
    desc = [True, True, False]
    rules = frame.filter(pl.col("_hit")).sort(order, descending=desc)
    model = frame.filter(~pl.col("_hit") & (pl.col("_p") >= cutoff)).sort(order, descending=desc).head(k)
    return [*rules["_row"].to_list(), *model["_row"].to_list()]


def empty_worklist() -> pl.DataFrame:
    """A worklist with no case: the header only."""
    return pl.DataFrame(schema=_SCHEMA)


def build_worklist(
    features_df: pl.DataFrame,
    probabilities: npt.ArrayLike,
    reasons: Sequence[Sequence[Reason]],
    *,
    date: dt.date,
    k: int,
    cutoff: float = 0.0,
    bands: RiskBands | None = None,
    rule_hits: Sequence[Sequence[RuleHit]] | None = None,
) -> pl.DataFrame:
    """The worklist of one day: its rule hits, then at most ``k`` claims with probability >= ``cutoff``.

    Args:
        features_df: claim feature records (claim_id, provider_id, patient_id, created or asof, total, and the
            columns the rules read).
        probabilities: the model's calibrated probability per record (row order of ``features_df``).
        reasons: reasons per record (from :func:`pipelines.modeling.fraud_attribution.explain`), same order.
        date: the day whose new claims are reviewed (a claim's created date, the features' ``asof``).
        k: the most cases the model adds beyond the rule hits.
        cutoff: the lowest probability the model lists (0 lists the ``k`` most probable; the stage passes
            the ``moderate`` risk band).
        bands: risk bands of the ``band`` column (default :class:`RiskBands`).
        rule_hits: rule hits per record (default: :func:`pipelines.fraud.rules.evaluate_rules` of the records).

    Returns:
        Columns :data:`WORKLIST_COLUMNS`: rank (1..), date, claim_id, provider_id, patient_id (pseudonyms),
        rule_hits (codes), probability (the model's own), band, amount_kzt (the claim total: money at stake),
        reason_codes, the rule sentences and the model's reasons in Kazakh, Russian and English (each joined
        with `` | ``; rules in their order, reasons strongest first). No row when the day has no case.

    Raises:
        ValueError: ``probabilities``, ``reasons`` or ``rule_hits`` do not match the records, ``k`` < 1 or
            ``cutoff`` outside [0, 1].
        NotPseudonymousError: an id is not a pseudonym.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if len(reasons) != features_df.height:
        raise ValueError(f"reasons must have one entry per record ({features_df.height})")
    check_pseudonymous(features_df)
    hits = evaluate_rules(features_df) if rule_hits is None else rule_hits
    if len(hits) != features_df.height:
        raise ValueError(f"rule hits must have one entry per record ({features_df.height})")
    rows = select_cases(features_df, p, np.array([bool(h) for h in hits], dtype=bool), date=date, k=k, cutoff=cutoff)
    if not rows:
        return empty_worklist()
    bands = bands or RiskBands()
    picked = features_df[rows]

    def joined(items: Sequence[Sequence[Reason]] | Sequence[Sequence[RuleHit]], attr: str) -> list[str]:
        return [SEPARATOR.join(getattr(x, attr) for x in items[i]) for i in rows]

    return pl.DataFrame(
        {
            "rank": np.arange(1, len(rows) + 1, dtype=np.int32),
            "date": [date] * len(rows),
            "claim_id": picked["claim_id"],
            "provider_id": picked["provider_id"],
            "patient_id": picked["patient_id"],
            "rule_hits": joined(hits, "code"),
            "probability": p[rows],
            "band": bands.bands(p[rows]),
            "amount_kzt": picked["total"].cast(pl.Float64).fill_null(0.0),
            "reason_codes": joined(reasons, "code"),
            "rules_kk": joined(hits, "kk"),
            "rules_ru": joined(hits, "ru"),
            "rules_en": joined(hits, "en"),
            "reasons_kk": joined(reasons, "kk"),
            "reasons_ru": joined(reasons, "ru"),
            "reasons_en": joined(reasons, "en"),
        },
        schema=_SCHEMA,
    )


def provider_summary(worklist: pl.DataFrame) -> pl.DataFrame:
    """The day's cases per provider: count, rule hits, money at stake, highest probability, cases per band.

    Sorted by rule hits, then cases, then highest probability (all descending), then provider id. An empty
    worklist gives an empty summary (header only).
    """
    schema: dict[str, pl.DataType] = {
        "date": pl.Date(),
        "provider_id": pl.String(),
        "cases": pl.Int64(),
        "rule_hits": pl.Int64(),
        "amount_kzt": pl.Float64(),
        "max_probability": pl.Float64(),
        "cases_high": pl.Int64(),
        "cases_moderate": pl.Int64(),
        "cases_low": pl.Int64(),
    }
    if worklist.height == 0:
        return pl.DataFrame(schema=schema)
    out = (
        worklist.group_by("date", "provider_id")
        .agg(
            pl.len().cast(pl.Int64).alias("cases"),
            (pl.col("rule_hits").str.len_chars() > 0).sum().cast(pl.Int64).alias("rule_hits"),
            pl.col("amount_kzt").sum().alias("amount_kzt"),
            pl.col("probability").max().alias("max_probability"),
            *((pl.col("band") == b).sum().cast(pl.Int64).alias(f"cases_{b}") for b in reversed(BANDS)),
        )
        .sort(["rule_hits", "cases", "max_probability", "provider_id"], descending=[True, True, True, False])
    )
    return out.select(SUMMARY_COLUMNS).cast(schema)  # type: ignore[arg-type]


def write_worklist(df: pl.DataFrame, out_dir: Path, name: str = "worklist") -> tuple[Path, Path]:
    """Write the worklist as ``<name>.parquet`` and ``<name>.csv`` (UTF-8) in ``out_dir``, each atomically.

    Raises:
        NotPseudonymousError: an id is not a pseudonym (nothing is written).
    """
    check_pseudonymous(df)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("parquet", "csv"):
        final = out_dir / f"{name}.{ext}"
        tmp = out_dir / f".{name}.{ext}.tmp-{os.getpid()}"
        if ext == "parquet":
            df.write_parquet(tmp)
        else:
            df.write_csv(tmp)
        os.replace(tmp, final)
        paths.append(final)
    return paths[0], paths[1]

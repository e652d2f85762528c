"""The investigators' daily worklist: the day's k highest-scoring claims, with the money at stake and the
reasons.

A worklist holds pseudonymous ids only (claim, provider, patient), never a name, IIN or address: every id is
checked to be a 32-hex-digit pseudonym before anything is written.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from pipelines.fraud.reason_texts import Reason

ID_COLUMNS = ("claim_id", "provider_id", "patient_id")
SEPARATOR = " | "
_PSEUDONYM = re.compile(r"^[0-9a-f]{32}$")
WORKLIST_COLUMNS = (
    "rank",
    "date",
    "claim_id",
    "provider_id",
    "patient_id",
    "score",
    "amount_kzt",
    "reason_codes",
    "reasons_kk",
    "reasons_ru",
    "reasons_en",
)


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


def build_worklist(
    features_df: pl.DataFrame,
    scores: npt.ArrayLike,
    reasons: Sequence[Sequence[Reason]],
    *,
    date: dt.date,
    k: int,
) -> pl.DataFrame:
    """The worklist of one day: claims created on ``date``, highest score first, at most ``k`` rows.

    Exactly ``k`` rows when the day has at least ``k`` claims, otherwise every claim of the day (fewer rows,
    none padded). Ties in score go to the larger amount, then the claim id, so the list is deterministic.

    Args:
        features_df: claim feature records (claim_id, provider_id, patient_id, created, total).
        scores: fraud score per record (row order of ``features_df``).
        reasons: reasons per record (from :func:`pipelines.modeling.fraud_attribution.explain`), same order.
        date: the day whose new claims are reviewed (a claim's created date, the features' ``asof``).
        k: reviews the investigators can do that day.

    Returns:
        Columns :data:`WORKLIST_COLUMNS`: rank (1..), date, claim_id, provider_id, patient_id (pseudonyms),
        score,
        amount_kzt (the claim total: money at stake), reason_codes and the reasons in Kazakh, Russian and
        English (joined with `` | ``, strongest first).

    Raises:
        ValueError: ``scores`` or ``reasons`` do not match the records, or ``k`` < 1.
        NotPseudonymousError: an id is not a pseudonym.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != features_df.height or len(reasons) != features_df.height:
        raise ValueError(f"scores and reasons must have one entry per record ({features_df.height})")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    check_pseudonymous(features_df)
    # ``asof`` is the local calendar day of ``created`` (see the features); fall back on the UTC day.
    day = features_df["asof"] if "asof" in features_df.columns else features_df["created"].cast(pl.Date)
    frame = pl.DataFrame(
        {
            "_row": np.arange(features_df.height),
            "_day": day,
            "claim_id": features_df["claim_id"],
            "provider_id": features_df["provider_id"],
            "patient_id": features_df["patient_id"],
            "score": s,
            "amount_kzt": features_df["total"].cast(pl.Float64).fill_null(0.0),
        }
    )
    top = (
        frame.filter(pl.col("_day") == date)
        .sort(["score", "amount_kzt", "claim_id"], descending=[True, True, False])
        .head(k)
    )
    rows = top["_row"].to_list()

    def joined(attr: str) -> list[str]:
        return [SEPARATOR.join(getattr(r, attr) for r in reasons[i]) for i in rows]

    return top.select(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).alias("rank"),
        pl.lit(date, dtype=pl.Date).alias("date"),
        "claim_id",
        "provider_id",
        "patient_id",
        "score",
        "amount_kzt",
    ).with_columns(
        pl.Series("reason_codes", joined("code"), dtype=pl.String),
        pl.Series("reasons_kk", joined("kk"), dtype=pl.String),
        pl.Series("reasons_ru", joined("ru"), dtype=pl.String),
        pl.Series("reasons_en", joined("en"), dtype=pl.String),
    )


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

"""The ingest tables the fraud features read, loaded once with only the columns they need.

Every timestamp becomes a local calendar date (Kazakhstan time by default), because claims carry local
service dates and a claim's information horizon is its ``created`` day: a record counts for a claim only when
it is dated on or before that day. All ids are the ingest's pseudonyms.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import polars as pl

from pipelines.errors import InputError

# table -> columns read (a column the file lacks is added as null, so older or partial exports still load).
_COLUMNS: dict[str, tuple[str, ...]] = {
    "claims": (
        "claim_id",
        "patient_id",
        "provider_id",
        "encounter_id",
        "type_code",
        "created",
        "billable_start",
        "billable_end",
        "total",
        "primary_diagnosis",
        "referral_id",
    ),
    "claim_items": ("claim_id", "tariff_code", "quantity", "unit_price", "net", "serviced_date"),
    "encounters": ("encounter_id", "patient_id", "organization_id", "class_code", "period_start"),
    "observations": ("observation_id", "encounter_id", "patient_id", "loinc_code", "value", "effective"),
    "procedures": ("procedure_id", "encounter_id", "patient_id", "tariff_code", "performed_start"),
    "conditions": ("encounter_id", "icd10_code", "onset", "recorded_date", "condition_id"),
    "patients": ("patient_id", "deceased_date", "region"),
    "organizations": ("organization_id", "kind", "region"),
    "practitioner_roles": ("organization_id", "practitioner_id", "active"),
    "service_requests": ("service_request_id", "patient_id", "encounter_id", "performer_id", "authored_on"),
}
_REQUIRED = ("claims", "claim_items")


@dataclass(frozen=True)
class FraudTables:
    """The normalised inputs of the fraud features (one polars frame per ingest table).

    Attributes:
        claims: claim_id, patient_id, provider_id, encounter_id, type_code, asof (the created date), created
            (timestamp), service_start, service_end (dates), total, primary_diagnosis, referral_id.
        claim_items: claim_id, tariff_code, quantity, unit_price, net, serviced_date.
        encounters: encounter_id, patient_id, organization_id, class_code, date.
        observations: observation_id, encounter_id, patient_id, loinc_code, value, date.
        procedures: procedure_id, encounter_id, patient_id, tariff_code, date.
        conditions: encounter_id, icd10_code, date, condition_id.
        patients: patient_id, deceased_date, region.
        organizations: organization_id, kind, region.
        practitioner_roles: organization_id, practitioner_id, active.
        service_requests: service_request_id, patient_id, encounter_id, performer_id, date.
    """

    claims: pl.DataFrame
    claim_items: pl.DataFrame
    encounters: pl.DataFrame
    observations: pl.DataFrame
    procedures: pl.DataFrame
    conditions: pl.DataFrame
    patients: pl.DataFrame
    organizations: pl.DataFrame
    practitioner_roles: pl.DataFrame
    service_requests: pl.DataFrame


def _to_dates(df: pl.DataFrame, cols: tuple[str, ...], timezone: str) -> pl.DataFrame:
    """Timestamps become local calendar dates in ``timezone``; date and text columns are parsed as dates."""
    exprs = []
    for col in cols:
        dtype = df.schema[col]
        if isinstance(dtype, pl.Datetime):
            expr = pl.col(col)
            expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr
            exprs.append(expr.dt.convert_time_zone(timezone).dt.date().alias(col))
        elif dtype == pl.String:
            exprs.append(pl.col(col).str.slice(0, 10).str.to_date(strict=False).alias(col))
        else:
            exprs.append(pl.col(col).cast(pl.Date, strict=False).alias(col))
    return df.with_columns(exprs)


def _read(path: Path, name: str) -> pl.DataFrame:
    file = path / f"{name}.parquet"
    cols = _COLUMNS[name]
    if not file.exists():
        if name in _REQUIRED:
            raise InputError(f"{file}: table not found (run the ingest stage first)")
        return pl.DataFrame({c: pl.Series(c, [], dtype=pl.String) for c in cols})
    present = set(pl.read_parquet_schema(file))
    df = pl.read_parquet(file, columns=[c for c in cols if c in present])
    return df.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in cols if c not in present)


_DATE_COLUMNS: dict[str, tuple[str, ...]] = {
    "claims": ("billable_start", "billable_end"),
    "claim_items": ("serviced_date",),
    "encounters": ("period_start",),
    "observations": ("effective",),
    "procedures": ("performed_start",),
    "conditions": ("onset", "recorded_date"),
    "patients": ("deceased_date",),
    "service_requests": ("authored_on",),
}
DEFAULT_TIMEZONE = "+05:00"  # Kazakhstan (one time zone since 2024-03-01)


def normalise(raw: dict[str, pl.DataFrame], timezone: str = DEFAULT_TIMEZONE) -> FraudTables:
    """Turn frames shaped like the ingest tables into :class:`FraudTables` (dates, dtypes, renamed columns).

    Args:
        raw: table name -> frame with (a superset of) the ingest columns listed in ``_COLUMNS``; a missing
            optional table may be absent.
        timezone: time zone of the local calendar (claims carry local service dates; timestamps are UTC).

    Raises:
        InputError: the claims or claim_items table is missing.
    """
    frames = {}
    for name, cols in _COLUMNS.items():
        df = raw.get(name)
        if df is None:
            if name in _REQUIRED:
                raise InputError(f"table '{name}' is required for the fraud features")
            df = pl.DataFrame({c: pl.Series(c, [], dtype=pl.String) for c in cols})
        missing = [c for c in cols if c not in df.columns]
        df = df.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in missing).select(cols)
        frames[name] = _to_dates(df, _DATE_COLUMNS.get(name, ()), timezone)

    raw_claims = frames["claims"].filter(pl.col("claim_id").is_not_null() & pl.col("created").is_not_null())
    raw_claims = raw_claims.with_columns(pl.col("created").alias("asof"))
    raw_claims = _to_dates(raw_claims, ("asof",), timezone)
    claims = (
        raw_claims.with_columns(
            pl.col("created").cast(pl.Datetime("us", "UTC"), strict=False),
            pl.col("billable_start").alias("service_start"),
            pl.col("billable_end").alias("service_end"),
            pl.col("total").cast(pl.Float64, strict=False),
        )
        .filter(pl.col("asof").is_not_null())
        .unique("claim_id", keep="first", maintain_order=True)
    )
    items = frames["claim_items"].with_columns(
        pl.col("quantity").cast(pl.Float64, strict=False).fill_null(1.0),
        pl.col("unit_price").cast(pl.Float64, strict=False),
        pl.col("net").cast(pl.Float64, strict=False),
    )
    # Service dates fall back on each other and, last, on the claim's created date.
    first_item = items.group_by("claim_id").agg(
        pl.col("serviced_date").min().alias("_i_start"), pl.col("serviced_date").max().alias("_i_end")
    )
    claims = (
        claims.join(first_item, on="claim_id", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("service_start", "_i_start", "service_end", "asof").alias("service_start"),
            pl.coalesce("service_end", "_i_end", "service_start", "asof").alias("service_end"),
        )
        .with_columns(pl.col("total").fill_null(0.0))
        .drop("_i_start", "_i_end", "billable_start", "billable_end")
    )
    items = items.join(claims.select("claim_id", "service_start"), on="claim_id", how="inner").with_columns(
        pl.coalesce("serviced_date", "service_start").alias("serviced_date"),
        pl.col("net").fill_null(pl.col("unit_price") * pl.col("quantity")).fill_null(0.0),
        pl.col("unit_price").fill_null(pl.col("net") / pl.col("quantity")).fill_null(0.0),
    )
    items = items.drop("service_start")
    return FraudTables(
        claims=claims,
        claim_items=items,
        encounters=frames["encounters"]
        .rename({"period_start": "date"})
        .unique("encounter_id", keep="first", maintain_order=True),
        observations=frames["observations"]
        .rename({"effective": "date"})
        .with_columns(pl.col("value").cast(pl.Float64, strict=False)),
        procedures=frames["procedures"].rename({"performed_start": "date"}),
        conditions=frames["conditions"]
        .with_columns(pl.coalesce("onset", "recorded_date").alias("date"))
        .drop("onset", "recorded_date"),
        patients=frames["patients"].unique("patient_id", keep="first", maintain_order=True),
        organizations=frames["organizations"].unique("organization_id", keep="first", maintain_order=True),
        practitioner_roles=frames["practitioner_roles"].with_columns(pl.col("active").cast(pl.Boolean, strict=False)),
        service_requests=frames["service_requests"].rename({"authored_on": "date"}),
    )


def load_fraud_tables(tables: Path, timezone: str = DEFAULT_TIMEZONE) -> FraudTables:
    """Read the ingest tables under ``tables`` (``<interim>/tables``) that the fraud features need.

    Args:
        tables: the folder of ingest Parquet tables.
        timezone: time zone of the local calendar (see :func:`normalise`).

    Raises:
        InputError: the folder, ``claims.parquet`` or ``claim_items.parquet`` is missing.
    """
    tables = Path(tables)
    if not tables.is_dir():
        raise InputError(f"{tables}: tables folder not found (run the ingest stage first)")
    return normalise({name: _read(tables, name) for name in _COLUMNS}, timezone)


def table_names() -> tuple[str, ...]:
    """Names of the ingest tables the fraud features read."""
    return tuple(f.name for f in fields(FraudTables))

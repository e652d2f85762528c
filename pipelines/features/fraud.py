"""Claim fraud features: one row per claim, computed only from what was known on the claim's created date.

Feature groups (each group is one kind of reason an investigator can check, see :data:`FEATURE_GROUPS`):

- ``phantom_billing``: is there a clinical trace (encounter, observations, procedures) behind the service?
- ``upcoding``: the claim total and service level against earlier claims with the same diagnosis and care
  setting (region and provider kind), abnormal findings documented, intensive-care days without a low oxygen
  saturation.
- ``price``: unit price and quantity against the earlier peer median of the same tariff code, region and kind.
- ``unbundling``: components of a package tariff (``codes.TARIFFS`` kind ``package``) billed separately to one
  patient by one provider on one day, and what that costs above the package.
- ``duplicate_claim``: an earlier claim of the same patient with the same services within a week, the same
  encounter billed before, an encounter of another provider or on another day.
- ``services_after_death``: services dated after a death recorded by the claim's date.
- ``excessive_volume``: the provider's services on the service day (claims known so far) per staff member and
  against its own earlier daily mean.
- ``collusion_ring``: the provider network (see :mod:`pipelines.features.fraud_graph`).
- ``amount``: the claim total and number of items.

No look-ahead: a claim's order is (created date, claim id); "earlier" claims come before it in that order,
other records count when dated on or before the created date, and peer and provider statistics come from
monthly snapshots of the months before (:mod:`pipelines.features.fraud_history`). Adding records dated after a
claim never changes its features.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from pipelines import codes
from pipelines.features.fraud_graph import (
    CONTEXT_NETWORK_COLUMNS,
    NETWORK_COLUMNS,
    PROVIDER_COLUMNS,
    network_features,
)
from pipelines.features.fraud_history import MONTH, month_start, monthly, months_of, peer_median
from pipelines.features.fraud_tables import DEFAULT_TIMEZONE, FraudTables, load_fraud_tables

log = logging.getLogger(__name__)

ID_COLUMNS = ("claim_id", "provider_id", "patient_id", "created")
CATEGORICAL_FEATURES = ("main_tariff", "provider_kind", "provider_region", "claim_type", "dx", "setting")
# Columns kept for reason texts and worklists; never model inputs.
CONTEXT_COLUMNS = (
    "asof",
    "service_start",
    "service_end",
    "peer_amount_median",
    "price_peer_code",
    "qty_peer_code",
    "unbundled_package",
    "deceased_date",
    "staff",
    "dup_prior_provider_same",
    *CONTEXT_NETWORK_COLUMNS,
)

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "phantom_billing": (
        "has_encounter",
        "encounter_observations",
        "encounter_procedures",
        "records_near_service",
        "no_clinical_trace",
    ),
    "upcoding": (
        "amount_ratio_dx",
        "service_level",
        "service_level_excess",
        "abnormal_findings",
        "spo2_min",
        "temp_max",
        "icu_days",
        "icu_days_unsupported",
    ),
    "price": ("price_ratio_max", "quantity_ratio_max"),
    "unbundling": ("package_component_share", "package_unbundled", "unbundling_excess_kzt"),
    "duplicate_claim": (
        "dup_prior_same_service",
        "dup_prior_same_provider",
        "dup_min_days",
        "dup_prior_same_encounter",
        "encounter_other_provider",
        "encounter_date_gap",
    ),
    "services_after_death": ("after_death", "days_after_death"),
    "excessive_volume": (
        "provider_day_services",
        "services_per_staff",
        "provider_day_patients",
        "volume_vs_baseline",
    ),
    "collusion_ring": NETWORK_COLUMNS,
    "amount": ("total", "item_count"),
}
NUMERIC_FEATURES: tuple[str, ...] = tuple(f for group in FEATURE_GROUPS.values() for f in group)
PROVIDER_FEATURES = PROVIDER_COLUMNS  # provider-level graph statistics: exported, not claim-model inputs
# Which way each feature points: +1 when a larger value is more suspicious, -1 when less, 0 when it depends on
# context (a referral or an intensive-care day is normal in itself). Models may constrain their output to be
# monotone in the signed features, so that stronger evidence, even beyond anything seen in training, never
# lowers a score.
_DECREASING = {
    "has_encounter",
    "encounter_observations",
    "encounter_procedures",
    "records_near_service",
    "abnormal_findings",
    "temp_max",
    "dup_min_days",
}
_CONTEXT = {"service_level", "icu_days", "referral_in", "referral_out", "total", "item_count"}
RISK_DIRECTION: dict[str, int] = {f: -1 if f in _DECREASING else 0 if f in _CONTEXT else 1 for f in NUMERIC_FEATURES}

# Observations that support more intensive care (LOINC -> (comparison, threshold)).
ABNORMAL_FINDINGS: dict[str, tuple[str, float]] = {
    "8310-5": (">=", 38.0),  # body temperature, Cel
    "8867-4": (">", 100.0),  # heart rate
    "9279-1": (">", 22.0),  # respiratory rate
    "59408-5": ("<", 94.0),  # SpO2 %
    "6690-2": (">", 11.0),  # leukocytes
    "1988-5": (">", 20.0),  # CRP mg/L
    "2345-7": (">", 126.0),  # glucose mg/dL
    "4548-4": (">", 6.5),  # HbA1c %
}
SPO2, TEMP = "59408-5", "8310-5"
ICU_SPO2_SUPPORT = 92.0  # an intensive-care day is supported by a documented SpO2 below this


@dataclass(frozen=True)
class FraudFeatureOptions:
    """Windows and thresholds of the fraud features (the defaults suit a national claims stream).

    Attributes:
        duplicate_days: service dates this close (days) make two claims with the same services
            near-duplicates.
        trace_days: clinical records this many days around the service count as its trace.
        peer_min_count: earlier claims a peer group needs before its median is used.
        peer_window_days: trailing window of the peer medians and provider baselines (None: all history).
        graph_window_days: trailing window of the provider graphs.
        near_days: window of a patient's other providers around the service.
        cycle_days: how far back a patient's referrals count for a referral loop.
        min_shared: shared patients for an edge of the community graph.
        timezone: time zone of the local calendar that service dates are written in.
    """

    duplicate_days: int = 7
    trace_days: int = 1
    peer_min_count: int = 5
    peer_window_days: int | None = 365
    graph_window_days: int = 365
    near_days: int = 90
    cycle_days: int = 180
    min_shared: int = 3
    timezone: str = DEFAULT_TIMEZONE


def _service_levels() -> dict[str, int]:
    """Position of each tariff in its upcoding chain (A01 -> A02 -> A03: 1, 2, 3; H01 -> H02: 1, 2)."""
    starts = set(codes.UPCODE_TO) - set(codes.UPCODE_TO.values())
    levels = {}
    for start in starts:
        code: str | None = start
        level = 1
        while code is not None:
            levels[code] = level
            code, level = codes.UPCODE_TO.get(code), level + 1
    return levels


SERVICE_LEVELS = _service_levels()
ICU_CODES = tuple(c for c in codes.UPCODE_TO.values() if codes.TARIFFS[c].kind == "inpatient")


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_days()


def _base(t: FraudTables) -> pl.DataFrame:
    """Claims in information order with provider, patient and diagnosis context."""
    orgs = t.organizations.select(
        pl.col("organization_id").alias("provider_id"),
        pl.col("kind").alias("provider_kind"),
        pl.col("region").alias("provider_region"),
    )
    pats = t.patients.select("patient_id", pl.col("region").alias("patient_region"), "deceased_date")
    claims = (
        t.claims.sort("asof", "claim_id")
        .with_row_index("ord")
        .with_columns(month_start("asof"))
        .join(orgs, on="provider_id", how="left", maintain_order="left")
        .join(pats, on="patient_id", how="left", maintain_order="left")
    )
    # The encounter's first diagnosis when the claim carries a reference instead of a code.
    enc_dx = (
        t.conditions.filter(pl.col("icd10_code").is_not_null() & pl.col("encounter_id").is_not_null())
        .sort("encounter_id", "date", "condition_id", nulls_last=True)
        .group_by("encounter_id", maintain_order=True)
        .agg(pl.col("icd10_code").first().alias("_enc_dx"), pl.col("date").first().alias("_dx_date"))
    )
    enc_class = t.encounters.select("encounter_id", pl.col("class_code").alias("_class"), pl.col("date").alias("_ed"))
    claims = (
        claims.join(enc_dx, on="encounter_id", how="left", maintain_order="left")
        .join(enc_class, on="encounter_id", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce(
                "primary_diagnosis",
                pl.when(pl.col("_dx_date").is_null() | (pl.col("_dx_date") <= pl.col("asof"))).then("_enc_dx"),
                pl.lit("none"),
            ).alias("dx"),
            # The care setting (encounter class: AMB, EMER, IMP...) of the encounter behind the claim.
            pl.when(pl.col("_ed") <= pl.col("asof")).then(pl.col("_class")).fill_null("none").alias("setting"),
        )
    )
    main = (
        t.claim_items.sort("claim_id", "net", "tariff_code", descending=[False, True, False], nulls_last=True)
        .group_by("claim_id", maintain_order=True)
        .agg(pl.col("tariff_code").first().alias("main_tariff"), pl.len().alias("item_count"))
    )
    return claims.join(main, on="claim_id", how="left", maintain_order="left").with_columns(
        pl.col("main_tariff").fill_null("none"),
        pl.col("item_count").fill_null(0).cast(pl.Float64),
        pl.col("provider_kind").fill_null("unknown"),
        pl.col("provider_region").fill_null("unknown"),
        pl.col("type_code").fill_null("unknown").alias("claim_type"),
    )


def _items(t: FraudTables, base: pl.DataFrame) -> pl.DataFrame:
    """Claim items with the claim's order, patient, provider and provider context."""
    kinds = pl.DataFrame({"tariff_code": list(codes.TARIFFS), "tariff_kind": [x.kind for x in codes.TARIFFS.values()]})
    return (
        t.claim_items.join(
            base.select(
                "claim_id",
                "ord",
                "asof",
                MONTH,
                "patient_id",
                "provider_id",
                "provider_kind",
                "provider_region",
            ),
            on="claim_id",
            how="inner",
        )
        .join(kinds, on="tariff_code", how="left")
        .with_columns(pl.col("tariff_kind").fill_null("other"))
    )


def _trace(t: FraudTables, base: pl.DataFrame, opt: FraudFeatureOptions) -> pl.DataFrame:
    """Clinical trace of the service: encounter, its observations and procedures, records near the dates."""
    c = base.select("claim_id", "patient_id", "provider_id", "encounter_id", "asof", "service_start", "service_end")
    enc = t.encounters.select("encounter_id", pl.col("organization_id").alias("_enc_org"), pl.col("date").alias("_ed"))
    with_enc = c.join(enc, on="encounter_id", how="left").with_columns(
        (pl.col("_ed").is_not_null() & (pl.col("_ed") <= pl.col("asof"))).alias("_has")
    )
    obs = (
        c.select("claim_id", "encounter_id", "asof")
        .join(
            t.observations.select("encounter_id", "loinc_code", "value", "date"),
            on="encounter_id",
            how="inner",
        )
        .filter(pl.col("date") <= pl.col("asof"))
    )
    abnormal = pl.lit(False)
    for loinc, (op, thr) in ABNORMAL_FINDINGS.items():
        v = pl.col("value")
        hit = v >= thr if op == ">=" else v > thr if op == ">" else v < thr
        abnormal = abnormal | ((pl.col("loinc_code") == loinc) & hit)
    obs_f = obs.group_by("claim_id").agg(
        pl.len().alias("encounter_observations"),
        abnormal.sum().alias("abnormal_findings"),
        pl.col("value").filter(pl.col("loinc_code") == SPO2).min().alias("spo2_min"),
        pl.col("value").filter(pl.col("loinc_code") == TEMP).max().alias("temp_max"),
    )
    proc_f = (
        c.select("claim_id", "encounter_id", "asof")
        .join(t.procedures.select("encounter_id", "date"), on="encounter_id", how="inner")
        .filter(pl.col("date") <= pl.col("asof"))
        .group_by("claim_id")
        .agg(pl.len().alias("encounter_procedures"))
    )
    records = (
        pl.concat(
            [
                t.encounters.select("patient_id", "date"),
                t.observations.select("patient_id", "date"),
                t.procedures.select("patient_id", "date"),
            ]
        )
        .filter(pl.col("patient_id").is_not_null() & pl.col("date").is_not_null())
        .group_by("patient_id", "date")
        .agg(pl.len().alias("_n"))
    )
    lo = pl.col("service_start") - pl.duration(days=opt.trace_days)
    hi = pl.col("service_end") + pl.duration(days=opt.trace_days)
    near = (
        c.select("claim_id", "patient_id", "asof", "service_start", "service_end")
        .join(records, on="patient_id", how="inner")
        .filter((pl.col("date") >= lo) & (pl.col("date") <= hi) & (pl.col("date") <= pl.col("asof")))
        .group_by("claim_id")
        .agg(pl.col("_n").sum().alias("records_near_service"))
    )
    out = (
        with_enc.join(obs_f, on="claim_id", how="left")
        .join(proc_f, on="claim_id", how="left")
        .join(near, on="claim_id", how="left")
    )
    return out.select(
        "claim_id",
        pl.col("_has").cast(pl.Float64).alias("has_encounter"),
        pl.col("encounter_observations").fill_null(0).cast(pl.Float64),
        pl.col("encounter_procedures").fill_null(0).cast(pl.Float64),
        pl.col("records_near_service").fill_null(0).cast(pl.Float64),
        (~pl.col("_has") & pl.col("records_near_service").fill_null(0).eq(0))
        .cast(pl.Float64)
        .alias("no_clinical_trace"),
        pl.col("abnormal_findings").fill_null(0).cast(pl.Float64),
        pl.col("spo2_min").cast(pl.Float64),
        pl.col("temp_max").cast(pl.Float64),
        (pl.col("_has") & (pl.col("_enc_org") != pl.col("provider_id")).fill_null(False))
        .cast(pl.Float64)
        .alias("encounter_other_provider"),
        pl.when(pl.col("_has"))
        .then(_days(pl.col("service_start") - pl.col("_ed")).abs())
        .otherwise(0)
        .cast(pl.Float64)
        .alias("encounter_date_gap"),
    )


def _upcoding(base: pl.DataFrame, items: pl.DataFrame, trace: pl.DataFrame, opt: FraudFeatureOptions) -> pl.DataFrame:
    """Claim total and service level against earlier claims with the same diagnosis; unsupported ICU days."""
    level_map = pl.DataFrame({"tariff_code": list(SERVICE_LEVELS), "_lvl": list(SERVICE_LEVELS.values())})
    per_claim = (
        items.join(level_map, on="tariff_code", how="left")
        .group_by("claim_id")
        .agg(
            pl.col("_lvl").max().fill_null(0).alias("service_level"),
            pl.col("quantity").filter(pl.col("tariff_code").is_in(ICU_CODES)).sum().alias("icu_days"),
        )
    )
    c = base.select("claim_id", "asof", MONTH, "dx", "setting", "provider_region", "provider_kind", "total").join(
        per_claim, on="claim_id", how="left", maintain_order="left"
    )
    c = c.with_columns(pl.col("service_level").fill_null(0).cast(pl.Float64), pl.col("icu_days").fill_null(0.0))
    events = c.select("asof", "dx", "setting", "provider_region", "provider_kind", "total", "service_level")
    win = opt.peer_window_days
    amount_median = peer_median(
        c,
        events,
        "total",
        (
            ("dx", "setting", "provider_region", "provider_kind"),
            ("dx", "setting", "provider_kind"),
            ("dx", "setting"),
            ("dx",),
        ),
        min_count=opt.peer_min_count,
        window_days=win,
    )
    level_median = peer_median(
        c,
        events,
        "service_level",
        (("dx", "setting", "provider_kind"), ("dx", "setting"), ("dx",)),
        min_count=opt.peer_min_count,
        window_days=win,
    )
    c = c.with_columns(amount_median.alias("peer_amount_median"), level_median.alias("_lvl_med")).join(
        trace.select("claim_id", "spo2_min"), on="claim_id", how="left", maintain_order="left"
    )
    return c.select(
        "claim_id",
        "peer_amount_median",
        (pl.col("total") / pl.col("peer_amount_median"))
        .fill_null(1.0)
        .fill_nan(1.0)
        .clip(0.0, 1000.0)
        .alias("amount_ratio_dx"),
        "service_level",
        (pl.col("service_level") - pl.col("_lvl_med")).fill_null(0.0).alias("service_level_excess"),
        pl.col("icu_days").cast(pl.Float64),
        pl.when(pl.col("spo2_min").is_null() | (pl.col("spo2_min") >= ICU_SPO2_SUPPORT))
        .then(pl.col("icu_days"))
        .otherwise(0.0)
        .cast(pl.Float64)
        .alias("icu_days_unsupported"),
    )


def _price(items: pl.DataFrame, opt: FraudFeatureOptions) -> pl.DataFrame:
    """Largest unit-price and quantity ratios to the earlier peer median of the same tariff code."""
    levels = (
        ("tariff_code", "provider_region", "provider_kind"),
        ("tariff_code", "provider_kind"),
        ("tariff_code",),
    )
    events = items.select("asof", "tariff_code", "provider_region", "provider_kind", "unit_price", "quantity")
    window, min_count = opt.peer_window_days, opt.peer_min_count
    price_med = peer_median(items, events, "unit_price", levels, min_count=min_count, window_days=window)
    qty_med = peer_median(items, events, "quantity", levels, min_count=min_count, window_days=window)
    x = items.select("claim_id", "tariff_code").with_columns(
        (items["unit_price"] / price_med).fill_null(1.0).fill_nan(1.0).clip(0.0, 1000.0).alias("_pr"),
        (items["quantity"] / qty_med).fill_null(1.0).fill_nan(1.0).clip(0.0, 1000.0).alias("_qr"),
    )
    return x.group_by("claim_id").agg(
        pl.col("_pr").max().alias("price_ratio_max"),
        pl.col("tariff_code").sort_by("_pr", "tariff_code", descending=[True, False]).first().alias("price_peer_code"),
        pl.col("_qr").max().alias("quantity_ratio_max"),
        pl.col("tariff_code").sort_by("_qr", "tariff_code", descending=[True, False]).first().alias("qty_peer_code"),
    )


def _package_table() -> pl.DataFrame:
    rows = [
        (p.code, comp, float(p.price_kzt), len(p.components))
        for p in codes.TARIFFS.values()
        if p.kind == "package"
        for comp in p.components
    ]
    return pl.DataFrame(rows, schema=["package", "tariff_code", "package_price", "n_components"], orient="row")


def _unbundling(items: pl.DataFrame) -> pl.DataFrame:
    """Package components billed separately to one patient by one provider on one day (claims so far)."""
    packages = _package_table()
    comp_items = items.join(packages.select("tariff_code").unique(), on="tariff_code", how="semi")
    day_keys = ["patient_id", "provider_id", "serviced_date"]
    claim_days = comp_items.select("claim_id", "ord", *day_keys).unique()
    context = items.select(*day_keys, pl.col("ord").alias("_o"), pl.col("tariff_code"), pl.col("net").alias("_net"))
    ctx = claim_days.join(context, on=day_keys, how="inner").filter(pl.col("_o") <= pl.col("ord"))
    billed_pkg = (
        ctx.join(packages.select(pl.col("package").alias("tariff_code")).unique(), on="tariff_code", how="semi")
        .select("claim_id", "serviced_date", pl.col("tariff_code").alias("package"))
        .unique()
        .with_columns(pl.lit(True).alias("_pkg_billed"))
    )
    per_pkg = (
        ctx.join(packages, on="tariff_code", how="inner")
        .group_by("claim_id", "serviced_date", "package")
        .agg(
            pl.col("tariff_code").n_unique().alias("_k"),
            pl.col("_net").sum().alias("_sum"),
            pl.col("package_price").first(),
            pl.col("n_components").first(),
        )
        .join(billed_pkg, on=["claim_id", "serviced_date", "package"], how="left")
        .with_columns(
            (pl.col("_k") / pl.col("n_components")).alias("_share"),
            ((pl.col("_k") == pl.col("n_components")) & pl.col("_pkg_billed").is_null()).alias("_full"),
        )
        .with_columns(
            pl.when(pl.col("_full"))
            .then((pl.col("_sum") - pl.col("package_price")).clip(0.0))
            .otherwise(0.0)
            .alias("_x")
        )
    )
    return per_pkg.group_by("claim_id").agg(
        pl.col("_share").max().alias("package_component_share"),
        pl.col("_full").any().cast(pl.Float64).alias("package_unbundled"),
        pl.col("_x").max().alias("unbundling_excess_kzt"),
        pl.col("package")
        .sort_by("_full", "_share", "package", descending=[True, True, False])
        .first()
        .alias("unbundled_package"),
    )


def _duplicates(base: pl.DataFrame, items: pl.DataFrame, opt: FraudFeatureOptions) -> pl.DataFrame:
    """Earlier claims of the same patient with the same services close in time, or the same encounter."""
    sig = items.group_by("claim_id").agg(pl.col("tariff_code").drop_nulls().unique().sort().str.join("+").alias("_sig"))
    c = base.select("claim_id", "patient_id", "provider_id", "encounter_id", "ord", "service_start").join(
        sig, on="claim_id", how="left"
    )
    prior = c.select(
        "patient_id",
        "_sig",
        pl.col("provider_id").alias("_p"),
        pl.col("ord").alias("_o"),
        pl.col("service_start").alias("_s"),
    )
    gap = _days(pl.col("_s") - pl.col("service_start")).abs()
    same = (
        c.filter(pl.col("_sig").is_not_null())
        .join(prior, on=["patient_id", "_sig"], how="inner")
        .filter((pl.col("_o") < pl.col("ord")) & (gap <= opt.duplicate_days))
        .group_by("claim_id")
        .agg(
            pl.len().alias("dup_prior_same_service"),
            (pl.col("_p") == pl.col("provider_id")).sum().alias("dup_prior_same_provider"),
            gap.min().alias("dup_min_days"),
        )
    )
    enc = (
        c.filter(pl.col("encounter_id").is_not_null())
        .join(
            c.select("encounter_id", pl.col("ord").alias("_o")).filter(pl.col("encounter_id").is_not_null()),
            on="encounter_id",
            how="inner",
        )
        .filter(pl.col("_o") < pl.col("ord"))
        .group_by("claim_id")
        .agg(pl.len().alias("dup_prior_same_encounter"))
    )
    out = c.select("claim_id").join(same, on="claim_id", how="left").join(enc, on="claim_id", how="left")
    return out.select(
        "claim_id",
        pl.col("dup_prior_same_service").fill_null(0).cast(pl.Float64),
        pl.col("dup_prior_same_provider").fill_null(0).cast(pl.Float64),
        pl.col("dup_min_days").fill_null(opt.duplicate_days + 1).cast(pl.Float64),
        pl.col("dup_prior_same_encounter").fill_null(0).cast(pl.Float64),
        (pl.col("dup_prior_same_provider").fill_null(0) > 0).alias("dup_prior_provider_same"),
    )


def _after_death(base: pl.DataFrame) -> pl.DataFrame:
    """Days between a death recorded by the claim's date and the last service date."""
    known = pl.col("deceased_date").is_not_null() & (pl.col("deceased_date") <= pl.col("asof"))
    days = pl.when(known).then(_days(pl.col("service_end") - pl.col("deceased_date")).clip(0)).otherwise(0)
    return base.select(
        "claim_id",
        (days > 0).cast(pl.Float64).alias("after_death"),
        days.cast(pl.Float64).alias("days_after_death"),
        pl.when(known).then(pl.col("deceased_date")).alias("deceased_date"),
    )


def _volume(t: FraudTables, base: pl.DataFrame, items: pl.DataFrame, opt: FraudFeatureOptions) -> pl.DataFrame:
    """The provider's services on the claim's service days (claims so far) against staff and its own mean."""
    roles = t.practitioner_roles.filter(pl.col("active").fill_null(True))
    staff = roles.group_by(pl.col("organization_id").alias("provider_id")).agg(
        pl.col("practitioner_id").n_unique().alias("staff")
    )
    services = items.filter(pl.col("tariff_kind") != "inpatient").sort("provider_id", "serviced_date", "ord")
    keys = ["provider_id", "serviced_date"]
    cum = services.with_columns(
        pl.int_range(1, pl.len() + 1).over(keys).alias("_cum_items"),
        pl.col("patient_id").is_first_distinct().over(keys).cast(pl.Int64).cum_sum().over(keys).alias("_cum_pat"),
    )
    per_claim_day = cum.group_by("claim_id", *keys).agg(
        pl.col("_cum_items").max().alias("_n"), pl.col("_cum_pat").max().alias("_np"), pl.col("month").first()
    )
    # Each provider's mean services per active day, counted from the claims known before the claim's month.
    months = months_of(base["asof"]) if base.height else []

    def build(df: pl.DataFrame) -> pl.DataFrame:
        daily = df.group_by(*keys).agg(pl.len().alias("_d"))
        return daily.group_by("provider_id").agg(pl.col("_d").mean().cast(pl.Float64).alias("_base"))

    baseline = monthly(services.select("asof", *keys), "asof", months, build, window_days=opt.peer_window_days)
    per_claim = (
        per_claim_day.join(baseline, on=["provider_id", MONTH], how="left")
        .with_columns((pl.col("_n") / pl.col("_base")).alias("_vs"))
        .group_by("claim_id")
        .agg(
            pl.col("_n").max().alias("provider_day_services"),
            pl.col("_np").max().alias("provider_day_patients"),
            pl.col("_vs").max().alias("volume_vs_baseline"),
        )
    )
    median_staff = staff["staff"].median() if staff.height else None
    out = (
        base.select("claim_id", "provider_id")
        .join(staff, on="provider_id", how="left")
        .with_columns(pl.col("staff").cast(pl.Float64).fill_null(median_staff or 1.0).clip(1.0))
        .join(per_claim, on="claim_id", how="left")
    )
    return out.select(
        "claim_id",
        "staff",
        pl.col("provider_day_services").fill_null(0).cast(pl.Float64),
        (pl.col("provider_day_services").fill_null(0) / pl.col("staff")).alias("services_per_staff"),
        pl.col("provider_day_patients").fill_null(0).cast(pl.Float64),
        pl.col("volume_vs_baseline").fill_null(1.0).cast(pl.Float64),
    )


def claim_features(t: FraudTables, options: FraudFeatureOptions | None = None) -> pl.DataFrame:
    """Build the fraud features from loaded tables (see :func:`build_claim_features`)."""
    opt = options or FraudFeatureOptions()
    started = time.perf_counter()
    base = _base(t)
    items = _items(t, base)
    trace = _trace(t, base, opt)
    blocks = [
        trace,
        _upcoding(base, items, trace, opt),
        _price(items, opt),
        _unbundling(items),
        _duplicates(base, items, opt),
        _after_death(base),
        _volume(t, base, items, opt),
        network_features(
            base,
            t.service_requests,
            t.encounters,
            base.select("patient_id", "patient_region").unique("patient_id"),
            base.select("provider_id", "provider_region").unique("provider_id"),
            window_days=opt.graph_window_days,
            near_days=opt.near_days,
            cycle_days=opt.cycle_days,
            min_shared=opt.min_shared,
        ),
    ]
    out = base.select(
        *ID_COLUMNS,
        "asof",
        "service_start",
        "service_end",
        "total",
        "item_count",
        *CATEGORICAL_FEATURES,
    )
    for block in blocks:
        out = out.join(block, on="claim_id", how="left", maintain_order="left")
    out = out.with_columns(
        pl.col("package_component_share").fill_null(0.0),
        pl.col("package_unbundled").fill_null(0.0),
        pl.col("unbundling_excess_kzt").fill_null(0.0),
        pl.col("price_ratio_max").fill_null(1.0),
        pl.col("quantity_ratio_max").fill_null(1.0),
        pl.col("total").cast(pl.Float64),
    )
    ordered = [*ID_COLUMNS, *CATEGORICAL_FEATURES, *NUMERIC_FEATURES, *PROVIDER_FEATURES, *CONTEXT_COLUMNS]
    out = out.select(ordered)
    log.info(
        "fraud features: %d claims, %d features in %.1f s",
        out.height,
        len(NUMERIC_FEATURES),
        time.perf_counter() - started,
    )
    return out


def build_claim_features(tables: Path, options: FraudFeatureOptions | None = None) -> pl.DataFrame:
    """One row of fraud features per claim, from the ingest tables, with no information dated after the claim.

    Args:
        tables: the ingest's ``<interim>/tables`` folder.
        options: windows and thresholds (defaults when None).

    Returns:
        Columns :data:`ID_COLUMNS` (claim_id, provider_id, patient_id, created), :data:`CATEGORICAL_FEATURES`,
        :data:`NUMERIC_FEATURES` (grouped in :data:`FEATURE_GROUPS`) and :data:`CONTEXT_COLUMNS` (for reason
        texts), sorted by created date and claim id. Numeric features have no nulls except ``spo2_min`` and
        ``temp_max`` (not measured).

    Raises:
        InputError: the tables folder, claims or claim items are missing.
    """
    opt = options or FraudFeatureOptions()
    return claim_features(load_fraud_tables(tables, opt.timezone), opt)

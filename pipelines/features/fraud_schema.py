"""The columns, groups, options and thresholds of the claim fraud features (defined in
:mod:`pipelines.features.fraud_engine`; :mod:`pipelines.features.fraud` re-exports every name here).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipelines import codes
from pipelines.features.fraud_graph import CONTEXT_NETWORK_COLUMNS, NETWORK_COLUMNS, PROVIDER_COLUMNS
from pipelines.features.fraud_tables import DEFAULT_TIMEZONE

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


# The records' columns in their order, with their dtypes.
COLUMNS: tuple[str, ...] = (*ID_COLUMNS, *CATEGORICAL_FEATURES, *NUMERIC_FEATURES, *PROVIDER_FEATURES, *CONTEXT_COLUMNS)
_TEXT = {"claim_id", "provider_id", "patient_id", *CATEGORICAL_FEATURES, "price_peer_code", "qty_peer_code"}
_TEXT.add("unbundled_package")
_DATES = {"asof", "service_start", "service_end", "deceased_date"}


def _dtype(column: str) -> pl.DataType:
    if column in _TEXT:
        return pl.String()
    if column in _DATES:
        return pl.Date()
    if column == "created":
        return pl.Datetime("us", "UTC")
    if column == "dup_prior_provider_same":
        return pl.Boolean()
    return pl.Float64()


SCHEMA: dict[str, pl.DataType] = {c: _dtype(c) for c in COLUMNS}

"""Claim fraud features: the public names, and the batch entry points of the features stage.

The features are defined and computed in :mod:`pipelines.features.fraud_engine` (one implementation for the
features stage and the service); their columns, groups, options and thresholds in
:mod:`pipelines.features.fraud_schema`, re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.features.fraud_engine import FraudHistory
from pipelines.features.fraud_schema import (
    ABNORMAL_FINDINGS,
    CATEGORICAL_FEATURES,
    COLUMNS,
    CONTEXT_COLUMNS,
    FEATURE_GROUPS,
    ICU_CODES,
    ICU_SPO2_SUPPORT,
    ID_COLUMNS,
    NUMERIC_FEATURES,
    PROVIDER_FEATURES,
    RISK_DIRECTION,
    SCHEMA,
    SERVICE_LEVELS,
    SPO2,
    TEMP,
    FraudFeatureOptions,
)
from pipelines.features.fraud_tables import FraudTables

__all__ = [
    "ABNORMAL_FINDINGS",
    "CATEGORICAL_FEATURES",
    "COLUMNS",
    "CONTEXT_COLUMNS",
    "FEATURE_GROUPS",
    "ICU_CODES",
    "ICU_SPO2_SUPPORT",
    "ID_COLUMNS",
    "NUMERIC_FEATURES",
    "PROVIDER_FEATURES",
    "RISK_DIRECTION",
    "SCHEMA",
    "SERVICE_LEVELS",
    "SPO2",
    "TEMP",
    "FraudFeatureOptions",
    "FraudHistory",
    "build_claim_features",
    "claim_features",
]


def claim_features(t: FraudTables, options: FraudFeatureOptions | None = None) -> pl.DataFrame:
    """The record of every claim of loaded tables: ``FraudHistory.from_tables(t, options).features()``."""
    return FraudHistory.from_tables(t, options or FraudFeatureOptions()).features()


def build_claim_features(tables: Path, options: FraudFeatureOptions | None = None) -> pl.DataFrame:
    """One row of fraud features per claim, from the ingest tables, with no information dated after the claim.

    Args:
        tables: the ingest's ``<interim>/tables`` folder.
        options: windows and thresholds (defaults when None).

    Returns:
        Columns :data:`ID_COLUMNS` (claim_id, provider_id, patient_id, created), :data:`CATEGORICAL_FEATURES`,
        :data:`NUMERIC_FEATURES` (grouped in :data:`FEATURE_GROUPS`), :data:`PROVIDER_FEATURES` and
        :data:`CONTEXT_COLUMNS` (for reason texts), sorted by created date and claim id (see :data:`SCHEMA`).
        Numeric features have no nulls except ``spo2_min`` and ``temp_max`` (not measured).

    Raises:
        InputError: the tables folder, claims or claim items are missing.
    """
    return FraudHistory.load(tables, options or FraudFeatureOptions()).features()

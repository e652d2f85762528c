"""Settings of the small cohorts the synth tests generate."""

from __future__ import annotations

from typing import Any

from pipelines.synth.spec import DEFECTS, FRAUD_PATTERNS, CohortSpec

# High defect rates so that every defect appears even in a tiny cohort.
DIRTY_RATES = {d: 0.03 for d in DEFECTS} | {
    "iin_checksum": 0.1,
    "iin_mismatch": 0.1,
    "invalid_json": 0.02,
    "dicom_unreadable": 0.3,
    "dicom_not_dicom": 0.3,
    "dicom_no_pixels": 0.3,
}

LARGE_FRAUD_RATE = 0.015
LARGE_N_ORGS = 30
LARGE_PROVIDER_SHARE = 0.2
LARGE_STAFF = 8
LARGE_AUDITED_SHARE = 0.5


def small_spec(**overrides: Any) -> CohortSpec:
    """A fast cohort spec: few patients, tiny images, every defect and fraud pattern present."""
    settings: dict[str, Any] = {
        "seed": 7,
        "n_patients": 60,
        "image_size": 32,
        "imaging_rate": 0.5,
        "deceased_rate": 0.1,
        "months": 12,
        "n_organizations": 12,
        "practitioners_per_organization": 3,
        "fraud_provider_share": 0.34,
        "fraud": dict.fromkeys(FRAUD_PATTERNS, 0.02),
        "dirty": DIRTY_RATES,
    }
    settings.update(overrides)
    return CohortSpec.from_mapping(settings)


def large_spec() -> CohortSpec:
    """2,000 clean patients (no defects) with raised fraud rates: big enough to measure rates and signals.

    Audits keep the default per-pattern labelled shares; record reviews visit half of the providers.
    """
    return CohortSpec.from_mapping(
        {
            "seed": 11,
            "n_patients": 2000,
            "imaging_rate": 0.1,
            "image_size": 32,
            "deceased_rate": 0.06,
            "n_organizations": LARGE_N_ORGS,
            "practitioners_per_organization": LARGE_STAFF,
            "fraud_provider_share": LARGE_PROVIDER_SHARE,
            "audited_provider_share": LARGE_AUDITED_SHARE,
            "fraud": dict.fromkeys(FRAUD_PATTERNS, LARGE_FRAUD_RATE),
            "dirty": {},
        }
    )

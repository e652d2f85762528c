"""The cohort generator's own plain configuration (mirrors the ``synthesize`` section of params.yaml).

Library code never reads params.yaml: the stage turns its validated params into a :class:`CohortSpec`.
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

FRAUD_PATTERNS: tuple[str, ...] = (
    "phantom_billing",
    "upcoding",
    "unbundling",
    "duplicate_claim",
    "services_after_death",
    "excessive_volume",
    "collusion_ring",
)
FHIR_DEFECTS: tuple[str, ...] = (
    "missing_required_field",
    "invalid_code",
    "invalid_date",
    "implausible_date",
    "iin_checksum",
    "iin_mismatch",
    "dangling_reference",
    "duplicate",
    "invalid_json",
)
DICOM_DEFECTS: tuple[str, ...] = ("dicom_unreadable", "dicom_not_dicom", "dicom_no_pixels")
# Patterns the Fund's automated registry checks find at every provider: a service after the death registered in
# the population register, the same services billed twice for a patient. The other patterns need a review of the
# provider's records, which audits do only at some providers (``audited_provider_share``).
REGISTRY_CHECKED: tuple[str, ...] = ("duplicate_claim", "services_after_death")
DEFECTS: tuple[str, ...] = FHIR_DEFECTS + DICOM_DEFECTS


# The same defaults as the params section (the stage always passes every value explicitly).
DEFAULT_FRAUD_RATES: dict[str, float] = {
    "phantom_billing": 0.006,
    "upcoding": 0.006,
    "unbundling": 0.005,
    "duplicate_claim": 0.005,
    "services_after_death": 0.003,
    "excessive_volume": 0.005,
    "collusion_ring": 0.004,
}
# Share of each pattern's fraudulent claims that audits find where they look: registry checks find most
# duplicates and services after death; record reviews find upcoding and unbundling often, phantom billing less
# (there is no record to review), and rarely excessive volume or a collusion ring (each claim looks ordinary alone).
DEFAULT_LABELLED_SHARES: dict[str, float] = {
    "phantom_billing": 0.3,
    "upcoding": 0.6,
    "unbundling": 0.6,
    "duplicate_claim": 0.85,
    "services_after_death": 0.9,
    "excessive_volume": 0.1,
    "collusion_ring": 0.1,
}
DEFAULT_DIRTY_RATES: dict[str, float] = {
    "missing_required_field": 0.002,
    "invalid_code": 0.002,
    "invalid_date": 0.001,
    "implausible_date": 0.001,
    "iin_checksum": 0.003,
    "iin_mismatch": 0.003,
    "dangling_reference": 0.001,
    "duplicate": 0.002,
    "invalid_json": 0.0005,
    "dicom_unreadable": 0.005,
    "dicom_not_dicom": 0.002,
    "dicom_no_pixels": 0.003,
}


class SpecError(ValueError):
    """A cohort specification that cannot be generated; the message names the field."""


@dataclass(frozen=True)
class CohortSpec:
    """Everything that decides the cohort's content; same spec and seed give byte-identical files."""

    seed: int = 20250101
    n_patients: int = 4000
    format: str = "ndjson"
    gzip: bool = False
    start_date: dt.date = dt.date(2023, 1, 1)
    months: int = 24
    n_organizations: int = 40
    practitioners_per_organization: int = 8
    imaging_rate: float = 0.4
    pneumonia_rate: float = 0.35
    image_size: int = 256
    deceased_rate: float = 0.03
    fraud_provider_share: float = 0.15
    labelled_share: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LABELLED_SHARES))
    audited_provider_share: float = 0.6
    fraud: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRAUD_RATES))
    dirty: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DIRTY_RATES))

    def __post_init__(self) -> None:
        if self.format not in ("ndjson", "bundle"):
            raise SpecError(f"format must be 'ndjson' or 'bundle', got {self.format!r}")
        if self.n_patients < 1 or self.months < 1 or self.n_organizations < 3:
            raise SpecError("n_patients and months must be >= 1 and n_organizations >= 3")
        if self.practitioners_per_organization < 1:
            raise SpecError("practitioners_per_organization must be >= 1")
        unknown = (
            sorted(set(self.fraud) - set(FRAUD_PATTERNS))
            + sorted(set(self.labelled_share) - set(FRAUD_PATTERNS))
            + sorted(set(self.dirty) - set(DEFECTS))
        )
        if unknown:
            raise SpecError(f"unknown fraud pattern or defect {unknown[0]!r}")
        if any(not 0.0 <= r <= 1.0 for r in (*self.fraud.values(), *self.dirty.values())):
            raise SpecError("fraud and dirty rates must lie in [0, 1]")
        if any(not 0.0 <= r <= 1.0 for r in (*self.labelled_share.values(), self.audited_provider_share)):
            raise SpecError("labelled_share and audited_provider_share must lie in [0, 1]")
        if sum(self.fraud.values()) >= 0.5:
            raise SpecError("fraud rates must sum to less than 0.5")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> CohortSpec:
        """Build a spec from a plain mapping (e.g. ``SynthesizeParams.model_dump()``).

        Args:
            data: keys as in the ``synthesize`` params section; ``start_date`` may be ISO text or a date;
                ``labelled_share`` a mapping per pattern (missing patterns: 0) or one number for every pattern.

        Raises:
            SpecError: an unknown key or a value out of range.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"unknown cohort setting {unknown[0]!r}")
        values = dict(data)
        start = values.get("start_date")
        if isinstance(start, str):
            try:
                values["start_date"] = dt.date.fromisoformat(start)
            except ValueError as exc:
                raise SpecError(f"start_date {start!r} is not an ISO date") from exc
        share = values.get("labelled_share")
        if isinstance(share, int | float):
            values["labelled_share"] = dict.fromkeys(FRAUD_PATTERNS, float(share))
        for key, names_ in (("fraud", FRAUD_PATTERNS), ("labelled_share", FRAUD_PATTERNS), ("dirty", DEFECTS)):
            if key in values:
                rates = dict(values[key])
                extra = sorted(set(rates) - set(names_))
                if extra:
                    raise SpecError(f"unknown {key} entry {extra[0]!r}")
                values[key] = {name: float(rates.get(name, 0.0)) for name in names_}
        return cls(**values)

    @property
    def end_date(self) -> dt.date:
        """First day after the observation window (``start_date`` plus ``months``)."""
        month0 = self.start_date.month - 1 + self.months
        year, month = self.start_date.year + month0 // 12, month0 % 12 + 1
        return dt.date(year, month, min(self.start_date.day, calendar.monthrange(year, month)[1]))

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping with the same keys as the params section."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["start_date"] = self.start_date.isoformat()
        out["fraud"] = dict(self.fraud)
        out["labelled_share"] = dict(self.labelled_share)
        out["dirty"] = dict(self.dirty)
        return out

    def sha256(self) -> str:
        """Hash of the canonical JSON of :meth:`as_dict` (recorded in COHORT.json)."""
        return hashlib.sha256(orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()

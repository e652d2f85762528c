"""Running statistics of a cohort for COHORT.json and the datasheet; memory bounded by codes, providers and days,
never by the number of patients."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pipelines.synth.patient import PatientRecord

# Services may be dated after the window (after death, duplicates); the volume table keeps this margin.
_DAY_MARGIN = 120

AGE_BANDS = ((0, 18), (18, 40), (40, 65), (65, 200))


@dataclass
class Moments:
    """Count, mean, min and max of one value stream."""

    n: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, x: float) -> None:
        """Add one value."""
        self.n += 1
        self.total += x
        self.low = min(self.low, x)
        self.high = max(self.high, x)

    @property
    def mean(self) -> float:
        """Mean (NaN when empty)."""
        return self.total / self.n if self.n else float("nan")


@dataclass
class CohortStats:
    """Counts and summaries accumulated patient by patient (ages are taken at ``start_day``)."""

    start_day: int
    end_day: int
    n_orgs: int
    resources: Counter[str] = field(default_factory=Counter)
    patients: int = 0
    deceased: int = 0
    sex: Counter[str] = field(default_factory=Counter)
    age_bands: Counter[str] = field(default_factory=Counter)
    regions: Counter[str] = field(default_factory=Counter)
    chronic: Counter[str] = field(default_factory=Counter)
    imaged: int = 0
    pneumonia: int = 0
    admitted: int = 0
    report_positive: Counter[bool] = field(default_factory=Counter)  # by pneumonia truth
    report_total: Counter[bool] = field(default_factory=Counter)
    claims: int = 0
    amount_kzt: int = 0
    fraud: Counter[str] = field(default_factory=Counter)
    fraud_amount_kzt: Counter[str] = field(default_factory=Counter)
    labelled: int = 0
    labelled_by_pattern: Counter[str] = field(default_factory=Counter)
    dirty: Counter[str] = field(default_factory=Counter)
    applicable: Counter[str] = field(default_factory=Counter)
    images: int = 0
    values: dict[tuple[str, str], Moments] = field(default_factory=dict)
    daily_services: np.ndarray = field(init=False)  # services billed per (provider, day since start)

    def __post_init__(self) -> None:
        self.daily_services = np.zeros((self.n_orgs, self.end_day - self.start_day + _DAY_MARGIN), dtype=np.int32)

    def add(self, rec: PatientRecord) -> None:
        """Fold one patient's record in."""
        p = rec.person
        self.patients += 1
        self.deceased += p.death is not None
        self.sex[p.sex] += 1
        age = p.age_on(self.start_day)
        for low, high in AGE_BANDS:
            if low <= age < high:
                self.age_bands[f"{low}-{high - 1}" if high < 200 else f"{low}+"] += 1
        self.regions[p.region] += 1
        for flag in ("htn", "dm", "copd"):
            self.chronic[flag] += getattr(p, flag)
        for ev in rec.events:
            if ev.kind == "imaging":
                self.imaged += 1
                self.pneumonia += ev.pneumonia
                self.admitted += ev.admits
        truth = any(ev.pneumonia for ev in rec.events)
        for r in rec.recs:
            if r.defect is None:
                self.resources[r.rtype] += 1
                if r.rtype == "DiagnosticReport" and r.body is not None:
                    self.report_total[truth] += 1
                    self.report_positive[truth] += "conclusionCode" in r.body
            else:
                self.dirty[r.defect] += 1
        for defect, n in rec.applicable.items():
            self.applicable[defect] += n
        for c in rec.claims:
            self.claims += 1
            self.amount_kzt += c.amount
            if c.pattern is not None:
                self.fraud[c.pattern] += 1
                self.fraud_amount_kzt[c.pattern] += c.amount
                self.labelled += c.labelled
                self.labelled_by_pattern[c.pattern] += c.labelled
            width = self.daily_services.shape[1]
            for line in c.lines:
                # Multi-day services (bed-days) are not a day's work; count single-day services only.
                if line.last is None and 0 <= line.day - self.start_day < width:
                    self.daily_services[c.org, line.day - self.start_day] += line.qty
        for code, value, stratum in rec.values:
            m = self.values.get((code, stratum))
            if m is None:
                m = self.values[(code, stratum)] = Moments()
            m.add(value)
        self.images += len(rec.images)
        for defect, *_ in rec.dicom_defects:
            self.dirty[defect] += 1
        self.applicable["radiographs"] += len(rec.images)

    def counts(self) -> dict[str, object]:
        """The headline counts written to COHORT.json and returned by the stage."""
        return {
            "patients": self.patients,
            "deceased": self.deceased,
            "resources": dict(sorted(self.resources.items())),
            "claims": self.claims,
            "fraud_claims": sum(self.fraud.values()),
            "fraud_by_pattern": dict(sorted(self.fraud.items())),
            "labelled_findings": self.labelled,
            "labelled_by_pattern": dict(sorted(self.labelled_by_pattern.items())),
            "dirty_records": sum(self.dirty.values()),
            "dirty_by_defect": dict(sorted(self.dirty.items())),
            "radiographs": self.images,
            "pneumonia": self.pneumonia,
        }

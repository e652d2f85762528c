"""One synthetic patient from ``numpy.random.default_rng([seed, index])``: demographics, a clean trajectory,
fraud committed on them, and data-quality defects. Patients are independent of each other.

What the Fund's audits found of the patient's fraud comes from a stream of its own
(``default_rng([seed, index, AUDIT_STREAM])``), so that the audit settings change the labels and nothing else.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from pipelines import codes
from pipelines.iin import make_iin
from pipelines.synth import clinical as cl
from pipelines.synth.chart import Chart, ClaimInfo, Person, Rec
from pipelines.synth.dirty import DirtyInjector
from pipelines.synth.draws import Draws
from pipelines.synth.episodes import Event, ImageWriter, document
from pipelines.synth.fraud import FraudModel
from pipelines.synth.ids import IdFactory
from pipelines.synth.people import make_address, make_name, make_phone, pick_region
from pipelines.synth.providers import Directory, Org
from pipelines.synth.spec import FRAUD_PATTERNS, REGISTRY_CHECKED, CohortSpec

_AGE_STARTS = tuple(a for a, _ in cl.AGE_BUCKETS)
_AGE_CUM = tuple(accumulate(w for _, w in cl.AGE_BUCKETS))
_OSMS_START = dt.date(2020, 1, 1).toordinal()
_ETIOLOGIES = ("bacterial", "viral", "unspecified")
_ETIOLOGY_CUM = (0.3, 0.55, 1.0)
AUDIT_STREAM = 1 << 65
FINDING_LAG_DAYS = (30, 400)  # an audit finding is dated this many days after the claim


def _age_grid() -> list[tuple[float, float]]:
    """(age, probability) on a quarter-year grid matching how ages are drawn."""
    total = _AGE_CUM[-1]
    return [(a + (k + 0.5) / 20 * 5, w / total / 20) for a, w in cl.AGE_BUCKETS for k in range(20)]


def mean_death_weight() -> float:
    """Population mean of :func:`clinical.death_weight`, used to normalise the deceased rate."""
    return sum(p * cl.death_weight(a) for a, p in _age_grid())


def expected_clean_claims(spec: CohortSpec) -> float:
    """Expected clean claims per patient under the cohort's event model (sizes services-after-death fraud)."""
    years = (spec.end_date - spec.start_date).days / 365.25
    per_year = 0.0
    for a, p in _age_grid():
        htn = (cl.p_hypertension(a, True) + cl.p_hypertension(a, False)) / 2
        copd = (cl.p_copd(a, True) + cl.p_copd(a, False)) / 2
        rate = (
            cl.gp_rate(a)
            + htn * cl.HTN_REVIEWS_PER_YEAR
            + cl.p_diabetes(a) * cl.DM_REVIEWS_PER_YEAR
            + copd * cl.COPD_REVIEWS_PER_YEAR
            + cl.ER_PER_YEAR
        )
        per_year += p * rate
    alive_share = 1.0 - spec.deceased_rate * 0.5  # the deceased live half the window on average
    imaging = spec.imaging_rate * (1.0 + spec.pneumonia_rate * (1.0 - cl.ADMIT_SEVERITY))
    return per_year * years * alive_share + imaging


@dataclass(slots=True)
class PatientRecord:
    """Everything generated for one patient, in write order."""

    person: Person
    recs: list[Rec]
    claims: list[ClaimInfo]
    values: list[tuple[str, float, str]]
    events: list[Event]
    images: list[str]
    dicom_defects: list[tuple[str, str, str, str]]
    applicable: dict[str, int]


class PatientFactory:
    """Makes patient ``index`` of a cohort.

    Args:
        spec: the cohort specification.
        directory: the provider directory.
        write_image: writes an imaging episode's radiograph (see :class:`images.RadiographWriter`).
    """

    def __init__(self, spec: CohortSpec, directory: Directory, write_image: ImageWriter) -> None:
        self.spec = spec
        self.directory = directory
        self.write_image = write_image
        self.bundle = spec.format == "bundle"
        self.start = spec.start_date.toordinal()
        self.end = spec.end_date.toordinal()
        # IIN serials repeat every 10,000 patients; births of those sharing a serial differ modulo this block.
        self.iin_block = max(1, math.ceil(spec.n_patients / 10_000))
        self.death_norm = mean_death_weight()
        self.fraud = FraudModel(spec.fraud, directory, expected_clean_claims(spec), spec.deceased_rate)
        self.dirty = DirtyInjector(spec.dirty)
        self.audited = frozenset(directory.audited)

    def make(self, index: int) -> PatientRecord:
        """Generate patient ``index`` (0-based)."""
        spec = self.spec
        d = Draws(np.random.default_rng([spec.seed, index]))
        ids = IdFactory(spec.seed, f"patient/{index}")
        person, address = self._person(d, ids, index)
        chart = Chart(person, ids, d, bundle=self.bundle, fsms_ref=self.directory.fsms_ref)
        chart.patient(address)
        chart.coverage(max(person.birth, _OSMS_START))

        lo, hi = self.start, person.death if person.death is not None else self.end
        events = self._plan(d, person, lo, hi)
        n_clean = sum(ev.n_claims for ev in events)
        counts = self.fraud.plan(d, n_clean, person.death is not None)
        duplicates = self.fraud.pick_duplicates(d, events, counts["duplicate_claim"])
        clean_claims: list[ClaimInfo] = []
        for ev in events:
            clean_claims.extend(document(chart, ev, self.directory, self.write_image))
        for position, org in duplicates:
            self.fraud.duplicate(chart, clean_claims[position], org)
        for pattern in FRAUD_PATTERNS:
            if pattern != "duplicate_claim":
                for _ in range(counts[pattern]):
                    self.fraud.commit(chart, pattern, lo, hi)
        self._audit(Draws(np.random.default_rng([spec.seed, index, AUDIT_STREAM])), chart.claims)
        applicable = self.dirty.inject(chart)
        applicable["patients"] = 1
        return PatientRecord(
            person, chart.recs, chart.claims, chart.values, events, chart.images, chart.dicom_defects, applicable
        )

    def _audit(self, a: Draws, claims: list[ClaimInfo]) -> None:
        """Mark the fraudulent claims the Fund's audits found, with the finding's date.

        Registry checks (:data:`REGISTRY_CHECKED`) look at every provider's claims, record reviews only at the
        audited providers; where an audit looks, it finds a claim of pattern ``p`` with probability
        ``labelled_share[p]``. Every fraudulent claim takes the same two draws, found or not.
        """
        for claim in claims:
            if claim.pattern is None:
                continue
            u, lag = a.u(), a.between(*FINDING_LAG_DAYS)
            looked = claim.pattern in REGISTRY_CHECKED or claim.org in self.audited
            if looked and u < self.spec.labelled_share.get(claim.pattern, 0.0):
                claim.labelled = True
                claim.finding_day = claim.created_day + lag

    def _person(self, d: Draws, ids: IdFactory, index: int) -> tuple[Person, dict[str, object]]:
        spec = self.spec
        pid = ids.next()
        sex = "male" if d.chance(0.49) else "female"
        age = d.pick_weighted(_AGE_STARTS, _AGE_CUM) + 5.0 * d.u()
        birth = self.start - 1 - int(age * 365.25)
        block = self.iin_block
        birth -= (birth - index // 10_000) % block
        serial = index % 10_000
        iin = make_iin(dt.date.fromordinal(birth), sex, serial)
        while iin is None:  # this serial has no valid check digit on that date: move the birth by one block
            birth -= block
            iin = make_iin(dt.date.fromordinal(birth), sex, serial)
        region = pick_region(d)
        name = make_name(d, sex, region)
        phone = make_phone(d)
        age = (self.start - birth) / 365.25
        male = sex == "male"
        p_death = min(1.0, spec.deceased_rate * cl.death_weight(age) / self.death_norm)
        death = d.between(self.start + 14, self.end - 1) if d.chance(p_death) else None
        htn = d.chance(cl.p_hypertension(age, male))
        dm = d.chance(cl.p_diabetes(age))
        copd = d.chance(cl.p_copd(age, male))
        home = self.directory.polyclinic_for(region, d)
        address = make_address(d, region, codes.REGION_EXTENSION)
        person = Person(index, pid, sex, birth, iin, region, name, phone, death, home, htn, dm, copd)
        return person, address

    def _plan(self, d: Draws, p: Person, lo: int, hi: int) -> list[Event]:
        years = (hi - lo) / 365.25
        age = p.age_on(lo)
        directory = self.directory
        events: list[Event] = []

        def usual_polyclinic() -> Org:
            return p.home if d.chance(0.8) else directory.polyclinic_for(p.region, d)

        for kind, rate in (
            ("gp", cl.gp_rate(age)),
            ("htn", cl.HTN_REVIEWS_PER_YEAR if p.htn else 0.0),
            ("dm", cl.DM_REVIEWS_PER_YEAR if p.dm else 0.0),
            ("copd", cl.COPD_REVIEWS_PER_YEAR if p.copd else 0.0),
        ):
            for _ in range(d.poisson(rate * years)):
                events.append(Event(d.between(lo, hi - 1), kind, usual_polyclinic()))
        for _ in range(d.poisson(cl.ER_PER_YEAR * years)):
            events.append(Event(d.between(lo, hi - 1), "er", directory.hospital_for(p.region, d)))
        if d.chance(self.spec.imaging_rate):
            # Leave room for an admission before the window closes or the patient dies.
            day = d.between(lo, max(lo, hi - 16))
            org = p.home if d.chance(0.6) else directory.hospital_for(p.region, d)
            pneumonia = d.chance(self.spec.pneumonia_rate)
            severity = d.u() if pneumonia else 0.0
            etiology = d.pick_weighted(_ETIOLOGIES, _ETIOLOGY_CUM) if pneumonia else "unspecified"
            events.append(Event(day, "imaging", org, pneumonia, severity, etiology))
        events.sort(key=lambda ev: ev.day)
        return events

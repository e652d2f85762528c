"""Claims fraud: the seven patterns of the domain notes, committed by a minority of providers.

Every fraudulent claim is added to a patient's record beside the clean ones (the clean claim of a duplicate stays
clean). Per patient, pattern ``p`` adds on average ``c * rate_p / ((1 - R) * m_p)`` fraud episodes, where ``c`` is
the patient's clean claims, ``R`` the sum of all rates and ``m_p`` the claims one episode bills; so the expected
share of pattern ``p`` among all claims is ``rate_p``. Services after death happen only to the deceased; their mean
uses the cohort's expected clean claims per patient over the deceased rate, so that the share holds too.

Patterns:
    phantom_billing: a claim with no Encounter, Observation or Procedure behind it (no ``item.encounter``; the
        diagnosis is a bare ICD-10 code).
    upcoding: a minor complaint (URI, cough, check-up) documented, a pricier visit billed (A01 -> A02 or A03);
        at hospitals sometimes a short bronchitis stay billed as intensive care (H01 -> H02).
    unbundling: a diabetes review or respiratory work-up billed as its package components (P02 or P01 split).
    duplicate_claim: an earlier claim's services billed again, same day or a few days later, by the same provider
        (the original visit was there) or by another one.
    services_after_death: a documented visit and its claim dated after Patient.deceasedDateTime.
    excessive_volume: claims of many services piled on a few burst days of one provider, far beyond its staff.
    collusion_ring: the ring's providers (three when there are enough fraudulent ones) see the same patients in
        turn, A, B, C and A again, each visit referring to the next (ServiceRequest, ``Claim.referral``): the
        claims' referrals A->B, B->C, C->A form a loop. One episode bills len(ring) + 1 claims.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipelines import codes
from pipelines.synth import clinical as cl
from pipelines.synth.chart import Chart, ClaimInfo, Line
from pipelines.synth.draws import Draws
from pipelines.synth.episodes import Event, clinic_minute, state
from pipelines.synth.providers import Directory, Org
from pipelines.synth.spec import FRAUD_PATTERNS

_MILD = ("J06.9", "R05", "Z00.0", "J20.9")
_VOLUME_SERVICES = ("A02", "L01", "L02", "L03", "L04", "R02")


class FraudModel:
    """Decides and commits fraud for one patient at a time.

    Args:
        rates: share of all claims per pattern.
        directory: providers and which patterns each commits.
        mean_clean_claims: expected clean claims per patient in the cohort.
        deceased_rate: share of patients who die in the window.
    """

    def __init__(
        self, rates: Mapping[str, float], directory: Directory, mean_clean_claims: float, deceased_rate: float
    ) -> None:
        self.directory = directory
        total = sum(rates.values())
        self.ring = directory.ring
        self._per_claim: dict[str, float] = {}
        for p in FRAUD_PATTERNS:
            size = len(self.ring) + 1 if p == "collusion_ring" else 1
            self._per_claim[p] = rates.get(p, 0.0) / ((1.0 - total) * size)
        after = rates.get("services_after_death", 0.0)
        self._after_death = after * mean_clean_claims / ((1.0 - total) * deceased_rate) if deceased_rate > 0 else 0.0

    def plan(self, d: Draws, n_clean: int, deceased: bool) -> dict[str, int]:
        """How many episodes of each pattern this patient gets."""
        out = {}
        for p in FRAUD_PATTERNS:
            if p == "services_after_death":
                out[p] = d.poisson(self._after_death) if deceased else 0
            else:
                out[p] = d.poisson(n_clean * self._per_claim[p]) if n_clean else 0
        return out

    def pick_duplicates(self, d: Draws, events: list[Event], n: int) -> list[tuple[int, Org]]:
        """Choose clean claims to bill twice: (claim position in document order, duplicating provider).

        When the duplicating provider also did the original visit, the event is moved there now, before it is
        documented; inpatient stays and emergency visits are never moved.
        """
        slots = [(i, k) for i, ev in enumerate(events) for k in range(ev.n_claims)]
        orgs = self.directory.pattern_orgs["duplicate_claim"]
        out = []
        for _ in range(n):
            position = d.below(len(slots))
            event_index, k = slots[position]
            org = self.directory.orgs[d.pick(orgs)]
            ev = events[event_index]
            if k == 0 and ev.kind not in ("er",) and d.chance(0.6) and (ev.kind != "imaging" or not ev.admits):
                ev.org = org
            out.append((position, org))
        return out

    def duplicate(self, chart: Chart, original: ClaimInfo, org: Org) -> None:
        """Bill ``original`` again, the same day or a few days later, while the patient was alive."""
        d = chart.d
        shift = 0 if d.chance(0.4) else d.between(1, 6)
        death = chart.person.death
        if death is not None and max(x.day if x.last is None else x.last for x in original.lines) + shift >= death:
            shift = 0
        chart.rebill(original, org=org, prac=org.clinician(d), shift=shift, pattern="duplicate_claim")

    def commit(self, chart: Chart, pattern: str, lo: int, hi: int) -> None:
        """Add one episode of ``pattern`` (not duplicates) within the alive window [lo, hi)."""
        d = chart.d
        orgs = self.directory.orgs
        if pattern == "collusion_ring":
            self._ring(chart, lo, hi)
            return
        org = orgs[d.pick(self.directory.pattern_orgs[pattern])]
        if pattern == "phantom_billing":
            day = d.between(lo, hi - 1)
            lines = [(d.pick(("A01", "A02")), 1, day)] + [(c, 1, day) for c in ("L01", "L02", "L03") if d.chance(0.35)]
            chart.bill(
                org=org,
                prac=org.clinician(d),
                lines=lines,
                encounter=None,
                diagnoses=[],
                diagnosis_codes=(d.pick(_MILD),),
                pattern=pattern,
            )
        elif pattern == "upcoding":
            self._upcoding(chart, org, d.between(lo, hi - 1), lo)
        elif pattern == "unbundling":
            self._unbundling(chart, org, d.between(lo, hi - 1))
        elif pattern == "services_after_death":
            if chart.person.death is None:
                raise ValueError("services after death need a deceased patient")
            self._visit(chart, org, chart.person.death + d.between(1, 60), [("A01", 1)], pattern, vitals=False)
        elif pattern == "excessive_volume":
            days = [day for day in self.directory.burst_days.get(org.index, ()) if lo <= day < hi]
            if days:
                services = sorted(_VOLUME_SERVICES, key=lambda _: d.u())[: d.between(4, 6)]
                self._visit(chart, org, d.pick(days), [(c, 1) for c in services], pattern, vitals=True)
        else:
            raise ValueError(f"unknown fraud pattern {pattern!r}")

    def _visit(
        self, chart: Chart, org: Org, day: int, services: list[tuple[str, int]], pattern: str, *, vitals: bool
    ) -> ClaimInfo:
        d = chart.d
        prac = org.clinician(d)
        v = chart.visit("AMB", org, prac, day, clinic_minute(d), length=10)
        icd = d.pick(_MILD)
        chart.condition(v, icd)
        if vitals:
            s = state(chart, day, illness="none" if icd == "Z00.0" else "mild")
            chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR)), "fraud")
        chart.close(v)
        return chart.bill(
            org=org,
            prac=prac,
            lines=[(c, q, day) for c, q in services],
            encounter=v.ref,
            diagnoses=v.diagnoses,
            pattern=pattern,
        )

    def _upcoding(self, chart: Chart, org: Org, day: int, lo: int) -> None:
        d = chart.d
        prac = org.clinician(d)
        if org.kind == "hospital" and d.chance(0.3):
            los = d.between(2, 3)
            if chart.person.death is not None:
                day = max(lo, min(day, chart.person.death - los - 1))
            v = chart.visit("IMP", org, prac, day, 600 + d.below(300), end_day=day + los)
            chart.condition(v, "J20.9")
            s = state(chart, day, illness="mild")
            chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR, cl.RR, cl.SPO2)), "fraud")
            chart.close(v)
            chart.bill(
                org=org,
                prac=prac,
                lines=[Line("H02", los, day, day + los)],
                encounter=v.ref,
                diagnoses=v.diagnoses,
                institutional=True,
                pattern="upcoding",
            )
            return
        code = "A03" if d.chance(0.5) else "A02"  # A01 supported; one or two steps up (codes.UPCODE_TO)
        self._visit(chart, org, day, [(code, 1)], "upcoding", vitals=True)

    def _unbundling(self, chart: Chart, org: Org, day: int) -> None:
        d = chart.d
        prac = org.clinician(d)
        v = chart.visit("AMB", org, prac, day, clinic_minute(d), length=45)
        if chart.person.dm:
            cond = chart.condition(v, "E11.9", chronic=True)
            s = state(chart, day)
            chart.observe(v, cl.labs(d, s, (cl.GLUCOSE, cl.HBA1C)), "fraud")
            services: tuple[str, ...] = codes.TARIFFS["P02"].components
        else:
            cond = chart.condition(v, d.pick(("J20.9", "R05")))
            s = state(chart, day, illness="mild")
            chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR, cl.RR, cl.SPO2)), "fraud")
            chart.observe(v, cl.labs(d, s, (cl.WBC, cl.CRP)), "fraud")
            chart.procedure(v, "I01", cond, prac=org.radiologist)
            services = codes.TARIFFS["P01"].components
        chart.close(v)
        chart.bill(
            org=org,
            prac=prac,
            lines=[(c, 1, day) for c in services],
            encounter=v.ref,
            diagnoses=v.diagnoses,
            pattern="unbundling",
        )

    def _ring(self, chart: Chart, lo: int, hi: int) -> None:
        # Visits A, B, C, then A again; each visit refers to the next member, so the claims' referrals
        # (A->B, B->C, C->A) close the loop.
        d = chart.d
        members = [self.directory.orgs[i] for i in self.ring]
        stops = [*members, members[0]]
        gap = max(1, min(21, (hi - lo - 1) // len(stops)))
        day = d.between(lo, max(lo, hi - 1 - gap * (len(stops) - 1)))
        referral: str | None = None
        for k, org in enumerate(stops):
            prac = org.clinician(d)
            v = chart.visit("AMB", org, prac, day, clinic_minute(d), length=20, based_on=referral)
            cond = chart.condition(v, d.pick(("R05", "J06.9", "J20.9")))
            s = state(chart, day, illness="mild")
            chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR, cl.SPO2)), "fraud")
            chart.observe(v, cl.labs(d, s, (cl.WBC, cl.CRP)), "fraud")
            new_referral = chart.refer(v, stops[k + 1], "A02", cond) if k + 1 < len(stops) else None
            chart.close(v)
            chart.bill(
                org=org,
                prac=prac,
                lines=[("A02", 1, day), ("L01", 1, day), ("L02", 1, day)],
                encounter=v.ref,
                diagnoses=v.diagnoses,
                referral=referral,
                pattern="collusion_ring",
            )
            referral = new_referral
            day = min(hi - 1, day + d.between(max(1, gap // 2), gap))

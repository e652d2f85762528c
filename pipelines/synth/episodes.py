"""Clean clinical episodes: what happens at each kind of encounter, and what is billed for it.

Each function documents one encounter (or, for pneumonia that needs admission, two) in the chart and returns the
claims it billed. The services billed are exactly those the documentation supports; fraud lives in ``fraud.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipelines.synth import clinical as cl
from pipelines.synth.chart import Chart, ClaimInfo, Line
from pipelines.synth.draws import Draws
from pipelines.synth.providers import Directory, Org

PNEUMONIA_CODES = {"bacterial": "J15.9", "viral": "J12.9", "unspecified": "J18.9"}


@dataclass(slots=True)
class Event:
    """A planned clean encounter. ``kind``: gp, htn, dm, copd, er or imaging (imaging may add an admission)."""

    day: int
    kind: str
    org: Org
    pneumonia: bool = False
    severity: float = 0.0
    etiology: str = "unspecified"

    @property
    def admits(self) -> bool:
        """Whether this imaging episode ends in an inpatient admission (severe pneumonia)."""
        return self.kind == "imaging" and self.pneumonia and self.severity > cl.ADMIT_SEVERITY

    @property
    def n_claims(self) -> int:
        """Claims this event bills."""
        return 2 if self.admits else 1


@dataclass(frozen=True)
class Radiograph:
    """What the DICOM writer reports back about an image it wrote."""

    modality: str
    sop_class: str


# (chart, event, study_uid, series_uid, sop_uid, accession) -> Radiograph; writes the file and any defective extras.
ImageWriter = Callable[[Chart, Event, str, str, str, str], Radiograph]


def clinic_minute(d: Draws) -> int:
    """A start time in opening hours (08:00-19:00)."""
    return 480 + d.below(660)


def state(chart: Chart, day: int, **kw: object) -> cl.State:
    """The patient's measurement state on a day, with an illness if given."""
    p = chart.person
    return cl.State(age=p.age_on(day), male=p.male, htn=p.htn, dm=p.dm, copd=p.copd, **kw)  # type: ignore[arg-type]


def gp_visit(chart: Chart, ev: Event) -> list[ClaimInfo]:
    """A general-practice visit: a check-up or a minor respiratory complaint."""
    d = chart.d
    prac = ev.org.clinician(d)
    v = chart.visit("AMB", ev.org, prac, ev.day, clinic_minute(d))
    icd = d.pick_weighted(("Z00.0", "J06.9", "R05", "J20.9"), (0.4, 0.7, 0.85, 1.0))
    s = state(chart, ev.day, illness="none" if icd == "Z00.0" else "mild")
    cond = chart.condition(v, icd)
    chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR, cl.SBP, cl.DBP)), "gp")
    lines: list[Line | tuple[str, int, int]] = [("A01", 1, ev.day)]
    if d.chance(0.3):
        chart.observe(v, cl.labs(d, s, (cl.WBC,)), "gp")
        lines.append(("L01", 1, ev.day))
    if d.chance(0.2 if icd == "Z00.0" else 0.05):
        chart.observe(v, cl.labs(d, s, (cl.GLUCOSE,)), "gp")
        lines.append(("L03", 1, ev.day))
    if icd == "J20.9" and d.chance(0.3):
        chart.prescribe(v, "J01CA04", cond, "500 mg three times a day for 5 days")
    chart.close(v)
    return [chart.bill(org=ev.org, prac=prac, lines=lines, encounter=v.ref, diagnoses=v.diagnoses)]


def chronic_review(chart: Chart, ev: Event) -> list[ClaimInfo]:
    """A specialist review of hypertension (A02), diabetes (package P02) or COPD (A03 with nebuliser R02)."""
    d = chart.d
    prac = ev.org.clinician(d)
    v = chart.visit("AMB", ev.org, prac, ev.day, clinic_minute(d), length=30)
    s = state(chart, ev.day)
    if ev.kind == "htn":
        cond = chart.condition(v, "I10", chronic=True)
        chart.observe(v, cl.vitals(d, s, (cl.HR, cl.SBP, cl.DBP)), "htn")
        chart.prescribe(v, d.pick(("C08CA01", "C09AA02")), cond, "once daily")
        lines = [("A02", 1, ev.day)]
    elif ev.kind == "dm":
        cond = chart.condition(v, "E11.9", chronic=True)
        chart.observe(v, cl.vitals(d, s, (cl.SBP, cl.DBP)), "dm")
        chart.observe(v, cl.labs(d, s, (cl.GLUCOSE, cl.HBA1C)), "dm")
        chart.prescribe(v, "A10BA02", cond, "1000 mg twice daily")
        lines = [("P02", 1, ev.day)]
    else:
        cond = chart.condition(v, "J44.9", chronic=True)
        chart.observe(v, cl.vitals(d, s, (cl.HR, cl.RR, cl.SPO2)), "copd")
        chart.procedure(v, "R02", cond)
        chart.prescribe(v, "R03AC02", cond, "2 puffs as needed")
        lines = [("A03", 1, ev.day), ("R02", 1, ev.day)]
    chart.close(v)
    return [chart.bill(org=ev.org, prac=prac, lines=lines, encounter=v.ref, diagnoses=v.diagnoses)]


def emergency(chart: Chart, ev: Event) -> list[ClaimInfo]:
    """An emergency department visit: cough, infection, or a hypertensive episode."""
    d = chart.d
    prac = ev.org.clinician(d)
    v = chart.visit("EMER", ev.org, prac, ev.day, d.below(1440 - 90), length=90)
    icd = "I10" if chart.person.htn and d.chance(0.5) else d.pick(("R05", "J06.9", "J20.9"))
    s = state(chart, ev.day, illness="none" if icd == "I10" else "mild")
    chart.condition(v, icd, chronic=icd == "I10")
    chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR, cl.RR, cl.SPO2, cl.SBP, cl.DBP)), "er")
    lines: list[Line | tuple[str, int, int]] = [("A04", 1, ev.day)]
    if d.chance(0.4):
        chart.observe(v, cl.labs(d, s, (cl.WBC,)), "er")
        lines.append(("L01", 1, ev.day))
    chart.close(v)
    return [chart.bill(org=ev.org, prac=prac, lines=lines, encounter=v.ref, diagnoses=v.diagnoses)]


def imaging_episode(chart: Chart, ev: Event, directory: Directory, write_image: ImageWriter) -> list[ClaimInfo]:
    """A respiratory work-up with a chest radiograph, and an admission when pneumonia is severe.

    The Condition on the encounter is the truth (pneumonia or not) the image was drawn from; the radiologist's
    report reads the film imperfectly (sensitivity rising with severity, a few false positives).
    """
    d = chart.d
    ids = chart.ids
    klass = "EMER" if ev.org.kind == "hospital" else "AMB"
    prac = ev.org.clinician(d)
    minute = d.below(1440 - 180) if klass == "EMER" else clinic_minute(d)
    v = chart.visit(klass, ev.org, prac, ev.day, minute, length=120)
    if ev.pneumonia:
        icd = PNEUMONIA_CODES[ev.etiology]
        s = state(chart, ev.day, illness="pneumonia", severity=ev.severity, etiology=ev.etiology)
    else:
        icd = (
            "J44.9"
            if chart.person.copd and d.chance(0.5)
            else d.pick_weighted(("J20.9", "J06.9", "R05"), (0.45, 0.75, 1.0))
        )
        # Most patients X-rayed for suspected pneumonia are ill with something that looks like it.
        illness = "febrile" if d.chance(0.7) else "mild" if d.chance(0.7) else "none"
        s = state(chart, ev.day, illness=illness, severity=d.u() if illness == "febrile" else 0.0)
    stratum = "pneumonia" if ev.pneumonia else "imaged, no pneumonia"
    cond = chart.condition(v, icd, chronic=icd == "J44.9")
    chart.observe(v, cl.vitals(d, s, (cl.TEMP, cl.HR, cl.RR, cl.SPO2)), stratum)
    chart.observe(v, cl.labs(d, s, (cl.WBC, cl.CRP)), stratum)
    chart.procedure(v, "I01", cond, prac=ev.org.radiologist)
    study_uid, series_uid, sop_uid, accession = ids.uid(), ids.uid(), ids.uid(), ids.accession()
    image = write_image(chart, ev, study_uid, series_uid, sop_uid, accession)
    study = chart.imaging_study(
        v,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class=image.sop_class,
        modality=image.modality,
        accession=accession,
    )
    positive = d.chance(0.55 + 0.4 * ev.severity) if ev.pneumonia else d.chance(0.06)
    conclusion = (
        "Patchy airspace opacity consistent with pneumonia."
        if positive
        else "No focal consolidation. No acute cardiopulmonary abnormality."
    )
    chart.radiology_report(v, study, positive=positive, conclusion=conclusion)
    if ev.pneumonia:
        chart.prescribe(v, "J01CA04" if ev.etiology != "viral" else "N02BE01", cond, "as directed for 7 days")
    elif icd == "J20.9" and d.chance(0.3):
        chart.prescribe(v, "J01FA10", cond, "500 mg once daily for 3 days")
    hospital = directory.hospital_for(chart.person.region, d) if ev.admits else None
    referral = chart.refer(v, hospital, "H01", cond) if hospital is not None else None
    chart.close(v)
    if klass == "AMB":
        lines = [("P01", 1, ev.day)]
    else:
        lines = [("A04", 1, ev.day), ("L01", 1, ev.day), ("L02", 1, ev.day), ("I01", 1, ev.day)]
    claims = [chart.bill(org=ev.org, prac=prac, lines=lines, encounter=v.ref, diagnoses=v.diagnoses)]
    if hospital is not None and referral is not None:
        claims.append(_admission(chart, ev, hospital, referral, icd, s))
    return claims


def _admission(chart: Chart, ev: Event, hospital: Org, referral: str, icd: str, s: cl.State) -> ClaimInfo:
    d = chart.d
    prac = hospital.clinician(d)
    los = 3 + int(ev.severity * 7 + 3 * d.u())
    day = ev.day + d.below(2)
    if chart.person.death is not None:
        los = max(1, min(los, chart.person.death - day - 1))
    icu = max(0, round((ev.severity - 0.85) * 20)) if ev.severity > 0.85 else 0
    icu = min(icu, los)
    v = chart.visit("IMP", hospital, prac, day, 600 + d.below(600), end_day=day + los, based_on=referral)
    cond = chart.condition(v, icd)
    values = cl.vitals(d, s, (cl.TEMP, cl.HR, cl.RR, cl.SPO2))
    chart.observe(v, values, "admitted")
    chart.observe(v, cl.labs(d, s, (cl.WBC, cl.CRP)), "admitted")
    chart.prescribe(v, "J01DD04", cond, "1 g intravenously once daily")
    # Intensive care first, then the general ward; bed-days are billed over their period.
    lines = [Line("H02", icu, day, day + icu)] if icu else []
    if los > icu:
        lines.append(Line("H01", los - icu, day + icu, day + los))
    if values[cl.SPO2] < 94 or icu:
        chart.procedure(v, "R01", cond)
        lines.append(Line("R01", max(1, los // 2), day, day + max(1, los // 2)))
    chart.close(v)
    return chart.bill(
        org=hospital,
        prac=prac,
        lines=lines,
        encounter=v.ref,
        diagnoses=v.diagnoses,
        referral=referral,
        institutional=True,
    )


def document(chart: Chart, ev: Event, directory: Directory, write_image: ImageWriter) -> list[ClaimInfo]:
    """Document one clean event of any kind and return its claims."""
    if ev.kind == "gp":
        return gp_visit(chart, ev)
    if ev.kind in ("htn", "dm", "copd"):
        return chronic_review(chart, ev)
    if ev.kind == "er":
        return emergency(chart, ev)
    if ev.kind == "imaging":
        return imaging_episode(chart, ev, directory, write_image)
    raise ValueError(f"unknown event kind {ev.kind!r}")

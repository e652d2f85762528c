"""The clinical model: who has which condition, and the vital signs and laboratory values each state produces.

Values are drawn around physiological means with age and sex effects, shifted by disease: pneumonia raises
temperature, heart and respiratory rate, WBC and CRP and lowers SpO2 in proportion to its severity (viral pneumonia
less so for WBC and CRP); diabetes raises glucose and HbA1c; hypertension raises blood pressure; COPD lowers SpO2.
Patients X-rayed without pneumonia are mostly ``febrile`` (acute bronchitis, influenza-like illness, COPD
exacerbation): they run fevers and raised inflammatory markers too, only less often and less far. Distributions
overlap on purpose, so that the EHR alone separates pneumonia only partly (logistic AUROC about 0.8) and the image
adds information (see docs/cohort.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.codes import LOINC_CODES
from pipelines.synth.draws import Draws

TEMP, HR, RR, SPO2 = "8310-5", "8867-4", "9279-1", "59408-5"
WBC, CRP, GLUCOSE, HBA1C = "6690-2", "1988-5", "2345-7", "4548-4"
SBP, DBP = "8480-6", "8462-4"
VITAL_CODES = frozenset({TEMP, HR, RR, SPO2, SBP, DBP})

# Observations rounded to what a device or analyser reports: decimals per code.
_DECIMALS = {TEMP: 1, HR: 0, RR: 0, SPO2: 0, WBC: 1, CRP: 1, GLUCOSE: 0, HBA1C: 1, SBP: 0, DBP: 0}

# Age buckets (start year, weight): a young population, as in Kazakhstan.
AGE_BUCKETS: tuple[tuple[int, float], ...] = (
    (0, 10.5), (5, 10.0), (10, 8.5), (15, 7.0), (20, 6.5), (25, 7.0), (30, 8.5), (35, 8.0), (40, 7.0), (45, 6.0),
    (50, 5.5), (55, 5.0), (60, 4.5), (65, 3.5), (70, 2.2), (75, 1.2), (80, 0.8), (85, 0.4), (90, 0.15),
)  # fmt: skip

# Visits per year of each kind (chronic reviews only for those with the condition).
GP_BASE_PER_YEAR = 0.5
GP_PER_YEAR_OF_AGE = 0.012
HTN_REVIEWS_PER_YEAR = 2.0
DM_REVIEWS_PER_YEAR = 3.0
COPD_REVIEWS_PER_YEAR = 2.0
ER_PER_YEAR = 0.08
ADMIT_SEVERITY = 0.65  # pneumonia above this severity is admitted (severity is uniform, so 35 % are)


def gp_rate(age: float) -> float:
    """General-practice visits per year at this age (young children are seen more)."""
    return GP_BASE_PER_YEAR + GP_PER_YEAR_OF_AGE * age + (0.6 if age < 5 else 0.0)


def p_hypertension(age: float, male: bool) -> float:
    """Prevalence of essential hypertension (I10)."""
    return 0.0 if age < 25 else min(0.65, 0.012 * (age - 25)) * (1.1 if male else 0.9)


def p_diabetes(age: float) -> float:
    """Prevalence of type 2 diabetes (E11.9)."""
    return 0.005 if age < 30 else min(0.25, 0.004 * (age - 30))


def p_copd(age: float, male: bool) -> float:
    """Prevalence of COPD (J44.9), mostly in older men."""
    return 0.0 if age < 40 else min(0.15, 0.003 * (age - 40)) * (1.6 if male else 0.4)


def death_weight(age: float) -> float:
    """Relative chance of dying in the window at this age (normalised by the caller)."""
    return 0.3 + math.exp((age - 55.0) / 15.0)


@dataclass(frozen=True)
class State:
    """What shapes a patient's measurements at one encounter.

    Attributes:
        illness: ``none``, ``mild`` (upper respiratory infection, bronchitis, cough), ``febrile`` (a
            non-pneumonic acute respiratory illness that mimics pneumonia) or ``pneumonia``.
        severity: 0..1 for pneumonia and febrile illness.
        etiology: ``bacterial``, ``viral`` or ``unspecified`` for pneumonia.
    """

    age: float
    male: bool
    htn: bool = False
    dm: bool = False
    copd: bool = False
    illness: str = "none"
    severity: float = 0.0
    etiology: str = "unspecified"


def _finish(code: str, value: float) -> float:
    spec = LOINC_CODES[code]
    value = min(max(value, spec.low), spec.high)
    decimals = _DECIMALS[code]
    return float(round(value, decimals)) if decimals else float(round(value))


def vitals(d: Draws, s: State, codes: tuple[str, ...]) -> dict[str, float]:
    """Vital signs for these LOINC codes (temperature, heart and respiratory rate, SpO2, blood pressure)."""
    child = max(0.0, 12.0 - s.age)
    pneu = s.illness == "pneumonia"
    febrile = s.illness == "febrile"
    # How far the illness pushes the acute vitals: pneumonia more than its mimics, both scaled by severity.
    push = (0.5 + 0.8 * s.severity) if pneu else (0.3 + 0.8 * s.severity) if febrile else 0.0
    temp = d.normal(36.6, 0.3)
    if s.illness == "mild":
        temp += 0.9 * d.u()
    elif (pneu or febrile) and not d.chance(0.2 + (0.15 if s.age >= 70 else 0.0)):  # some stay afebrile
        temp += 2.0 * push * d.uniform(0.4, 1.1)
    out: dict[str, float] = {}
    for code in codes:
        if code == TEMP:
            value = temp
        elif code == HR:
            value = d.normal(74.0 + 2.5 * child + 8.0 * max(0.0, temp - 37.0) + 8.0 * push, 11.0)
        elif code == RR:
            value = d.normal(15.0 + 0.9 * child + 6.0 * push + (3.0 if s.copd else 0), 3.0)
        elif code == SPO2:
            mean = 97.8 - 0.04 * max(0.0, s.age - 50.0) - (4.0 if s.copd else 0.0) - 3.0 * push
            if pneu:  # hypoxaemia marks severe pneumonia far more than its mimics
                mean -= 4.0 * s.severity**2
            value = min(100.0, d.normal(mean, 1.8))
        elif code == SBP:
            mean = (100.0 + 1.2 * min(s.age, 18.0)) if s.age < 18 else 112.0 + 0.45 * max(0.0, s.age - 25.0)
            value = d.normal(mean + (5.0 if s.male else 0.0) + (20.0 if s.htn else 0.0), 11.0)
        elif code == DBP:
            mean = 62.0 + 0.6 * min(s.age, 18.0) if s.age < 18 else 72.0 + 0.2 * max(0.0, s.age - 25.0)
            value = d.normal(mean + (3.0 if s.male else 0.0) + (10.0 if s.htn else 0.0), 7.5)
        else:
            raise ValueError(f"{code} is not a vital sign")
        out[code] = _finish(code, value)
    if SBP in out and DBP in out and out[DBP] > out[SBP] - 20:
        out[DBP] = _finish(DBP, out[SBP] - 20 - 10 * d.u())
    return out


def labs(d: Draws, s: State, codes: tuple[str, ...]) -> dict[str, float]:
    """Laboratory values for these LOINC codes (WBC, CRP, glucose, HbA1c)."""
    pneu = s.illness == "pneumonia"
    out: dict[str, float] = {}
    for code in codes:
        if code == WBC:
            if pneu and s.etiology != "viral":
                value = d.normal(10.0 + 4.0 * s.severity, 3.5)
            elif pneu:
                value = d.normal(7.8 + 1.5 * s.severity, 2.8)
            elif s.illness == "febrile":
                value = d.normal(8.6 + 3.0 * s.severity, 3.2)
            else:
                value = d.normal(8.4 if s.illness == "mild" else 7.0, 2.0)
            value += 2.0 if s.age < 5 else 0.0
        elif code == CRP:
            if pneu and s.etiology != "viral":
                value = d.lognormal(25.0 + 60.0 * s.severity, 0.8)
            elif pneu:
                value = d.lognormal(15.0 + 30.0 * s.severity, 0.8)
            elif s.illness == "febrile":
                value = d.lognormal(10.0 + 40.0 * s.severity, 0.9)
            else:
                value = d.lognormal(9.0 if s.illness == "mild" else 2.0, 0.8)
        elif code == GLUCOSE:
            value = d.normal(165.0, 40.0) if s.dm else d.normal(92.0 + 0.1 * s.age, 10.0)
        elif code == HBA1C:
            value = d.normal(7.6, 1.1) if s.dm else d.normal(5.2 + 0.005 * s.age, 0.3)
        else:
            raise ValueError(f"{code} is not a laboratory code of the cohort")
        out[code] = _finish(code, value)
    return out

"""Clinical coherence of the generated records: measurements follow the documented diagnoses, age and sex."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

import numpy as np
import orjson
import pytest

from pipelines.synth import clinical as cl
from pipelines.synth.draws import Draws


def _lines(root: Path, rtype: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (root / "fhir" / f"{rtype}.ndjson").read_bytes().splitlines()]


@pytest.fixture(scope="module")
def by_diagnosis(large_cohort: Path) -> dict[str, dict[str, list[float]]]:
    """Observation values per LOINC code, grouped by the ICD-10 code of their encounter."""
    dx: dict[str, str] = {}
    for c in _lines(large_cohort, "Condition"):
        dx.setdefault(c["encounter"]["reference"], c["code"]["coding"][0]["code"])
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for o in _lines(large_cohort, "Observation"):
        code = dx.get(o["encounter"]["reference"])
        if code:
            out[code][o["code"]["coding"][0]["code"]].append(o["valueQuantity"]["value"])
    return out


def test_pneumonia_brings_fever_tachypnoea_hypoxia_and_inflammation(by_diagnosis: dict[str, Any]) -> None:
    pneumonia = defaultdict(list)
    for code in ("J18.9", "J15.9", "J12.9"):
        for loinc, values in by_diagnosis[code].items():
            pneumonia[loinc] += values
    other = defaultdict(list)
    for code in ("J20.9", "J06.9", "R05"):
        for loinc, values in by_diagnosis[code].items():
            other[loinc] += values
    assert len(pneumonia[cl.TEMP]) > 30
    assert mean(pneumonia[cl.TEMP]) > mean(other[cl.TEMP]) + 0.7
    assert mean(pneumonia[cl.RR]) > mean(other[cl.RR]) + 4
    assert mean(pneumonia[cl.SPO2]) < mean(other[cl.SPO2]) - 3
    assert mean(pneumonia[cl.WBC]) > mean(other[cl.WBC]) + 2
    assert np.median(pneumonia[cl.CRP]) > 3 * np.median(other[cl.CRP])
    # Only partly informative: the ranges overlap.
    assert min(pneumonia[cl.TEMP]) < max(other[cl.TEMP]) and min(pneumonia[cl.SPO2]) < 100


def test_diabetes_and_hypertension_show_in_their_measurements(by_diagnosis: dict[str, Any]) -> None:
    assert mean(by_diagnosis["E11.9"][cl.GLUCOSE]) > mean(by_diagnosis["Z00.0"][cl.GLUCOSE]) + 40
    assert mean(by_diagnosis["E11.9"][cl.HBA1C]) > 7.0 > mean(by_diagnosis["Z00.0"].get(cl.HBA1C, [5.3]))
    assert mean(by_diagnosis["I10"][cl.SBP]) > mean(by_diagnosis["Z00.0"][cl.SBP]) + 15
    assert mean(by_diagnosis["J44.9"][cl.SPO2]) < 95


def test_radiology_reports_are_informative_but_imperfect(large_cohort: Path) -> None:
    truth = {}
    for c in _lines(large_cohort, "Condition"):
        if c["code"]["coding"][0]["code"] in ("J18.9", "J15.9", "J12.9"):
            truth[c["encounter"]["reference"]] = True
    reads = [
        (truth.get(r["encounter"]["reference"], False), "conclusionCode" in r)
        for r in _lines(large_cohort, "DiagnosticReport")
    ]
    sensitivity = mean(pos for sick, pos in reads if sick)
    false_positive = mean(pos for sick, pos in reads if not sick)
    assert 0.55 < sensitivity < 0.95 and 0.0 < false_positive < 0.2


def test_age_and_sex_effects() -> None:
    d = Draws(np.random.default_rng(0))

    def avg(code: str, **state: Any) -> float:
        s = cl.State(**state)
        return mean(cl.vitals(d, s, (code,))[code] for _ in range(400))

    assert avg(cl.HR, age=3, male=True) > avg(cl.HR, age=40, male=True) + 10
    assert avg(cl.RR, age=3, male=False) > avg(cl.RR, age=40, male=False) + 5
    assert avg(cl.SBP, age=70, male=True) > avg(cl.SBP, age=30, male=True) + 10
    assert avg(cl.SBP, age=50, male=True) > avg(cl.SBP, age=50, male=False) + 2
    assert avg(cl.SPO2, age=85, male=True) < avg(cl.SPO2, age=30, male=True)
    assert avg(cl.SPO2, age=50, male=True, illness="pneumonia", severity=0.9) < 92
    for code in (cl.TEMP, cl.HR, cl.RR, cl.SPO2, cl.SBP, cl.DBP):
        values = [cl.vitals(d, cl.State(age=80, male=True, illness="pneumonia", severity=1.0), (code,))[code]
                  for _ in range(200)]  # fmt: skip
        spec = cl.LOINC_CODES[code]
        assert spec.low <= min(values) and max(values) <= spec.high

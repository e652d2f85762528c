"""Data-quality defects (docs/raw-data.md), injected as extra leaf records beside the clean ones.

Each defect is a changed copy of a clean resource under a new id (nothing clean references it), except
``duplicate``, which writes a clean resource a second time, byte for byte. The number of each defect per patient is
binomial over the records that defect applies to, at the defect's rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pipelines import codes
from pipelines.synth.chart import Chart, Rec, day_text, stamp

# defect -> resource types it applies to (the Patient types apply once per patient).
APPLIES_TO: dict[str, tuple[str, ...]] = {
    "missing_required_field": ("Observation", "Encounter", "Condition"),
    "invalid_code": ("Observation", "Condition"),
    "invalid_date": ("Observation", "Encounter", "Condition"),
    "implausible_date": ("Observation", "Encounter", "Patient"),
    "iin_checksum": ("Patient",),
    "iin_mismatch": ("Patient",),
    "dangling_reference": ("Observation", "Condition", "Encounter", "Procedure", "MedicationRequest"),
    "duplicate": ("Observation", "Condition", "Encounter", "Procedure", "MedicationRequest"),
    "invalid_json": ("Observation",),
}
_REQUIRED = {"Observation": "status", "Encounter": "class", "Condition": "subject"}
_BAD_ICD = ("J18.9.9", "18.9", "PNEUMONIA", "J1B9", "I10X", "E11-9")
_BAD_LOINC = ("83105", "8310_5", "LOINC-8310", "8310-55")


def _copy(body: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = orjson.loads(orjson.dumps(body))
    return copy


class DirtyInjector:
    """Adds defective records to one patient's chart.

    Args:
        rates: share of applicable records per FHIR defect (DICOM defects are handled by the image writer).
    """

    def __init__(self, rates: Mapping[str, float]) -> None:
        self.rates = {k: rates.get(k, 0.0) for k in APPLIES_TO}

    def inject(self, chart: Chart) -> dict[str, int]:
        """Append defective records to ``chart.recs``; returns the number of applicable records per defect."""
        d = chart.d
        clean = [r for r in chart.recs if r.body is not None]
        by_type: dict[str, list[Rec]] = {}
        for r in clean:
            by_type.setdefault(r.rtype, []).append(r)
        applicable: dict[str, int] = {}
        for defect, types in APPLIES_TO.items():
            pool = [r for t in types for r in by_type.get(t, ())]
            applicable[defect] = len(pool)
            for _ in range(d.binomial(len(pool), self.rates[defect])):
                chart.recs.append(self._make(chart, defect, d.pick(pool)))
        return applicable

    def _make(self, chart: Chart, defect: str, src: Rec) -> Rec:
        d = chart.d
        assert src.body is not None
        if defect == "duplicate":
            return Rec(src.rtype, src.rid, src.body, defect=defect)
        body = _copy(src.body)
        rid = chart.ids.next()
        body["id"] = rid
        rtype = src.rtype
        person = chart.person
        if defect == "missing_required_field":
            field = _REQUIRED[rtype]
            del body[field]
        elif defect == "invalid_code":
            field = "code"
            if rtype == "Condition":
                wrong_system = d.chance(0.3)
                coding = {"system": codes.LOINC if wrong_system else codes.ICD10, "code": d.pick(_BAD_ICD)}
                if wrong_system:
                    coding["code"] = body["code"]["coding"][0]["code"]
            else:
                # A wrong system that Shipa maps (ICD-10 holds diagnoses, not observations): a code-invalid error.
                # A foreign system (SNOMED CT) would be valid FHIR, kept with the finding unmapped_code.
                wrong_system = d.chance(0.3)
                coding = {"system": codes.ICD10 if wrong_system else codes.LOINC, "code": d.pick(_BAD_LOINC)}
                if wrong_system:
                    coding["code"] = body["code"]["coding"][0]["code"]
            body["code"] = {"coding": [coding]}
        elif defect == "invalid_date":
            year = d.between(2019, 2025)
            bad = d.pick((f"{year}-02-30", f"{year}-13-01", f"{year}-04-31", f"{year}-00-10"))
            text = bad + "T10:00:00+05:00" if d.chance(0.6) else bad
            if rtype == "Observation":
                field = "effectiveDateTime"
                body[field] = text
            elif rtype == "Encounter":
                field = "period.start"
                body["period"]["start"] = text
            else:
                field = "onsetDateTime"
                body[field] = text
        elif defect == "implausible_date":
            before = person.birth - d.between(30, 3000)
            if rtype == "Observation":
                field = "effectiveDateTime"
                body[field] = stamp(before, 600)
            elif rtype == "Encounter":
                field = "period.start"
                body["period"] = {"start": stamp(before, 600), "end": stamp(before, 630)}
            else:
                field = "deceasedDateTime"
                body.pop("deceasedDateTime", None)
                body["deceasedDateTime"] = stamp(before, 600)
        elif defect == "iin_checksum":
            field = "identifier"
            iin = body["identifier"][0]["value"]
            body["identifier"][0]["value"] = iin[:11] + str((int(iin[11]) + d.between(1, 9)) % 10)
        elif defect == "iin_mismatch":
            if d.chance(0.5):
                field = "gender"
                body["gender"] = "female" if body["gender"] == "male" else "male"
            else:
                field = "birthDate"
                body["birthDate"] = day_text(person.birth + d.pick((-1, 1)) * d.between(1, 400))
        elif defect == "dangling_reference":
            if rtype != "Encounter" and d.chance(0.5):
                field = "encounter"
                body["encounter"] = {"reference": chart.ref("Encounter", chart.ids.next())}
            else:
                field = "subject"
                body["subject"] = {"reference": chart.ref("Patient", chart.ids.next())}
        elif defect == "invalid_json":
            field = ""
            text = orjson.dumps(body).decode()
            cut = max(int(len(text) * d.uniform(0.3, 0.8)), text.index(rid) + len(rid) + 2)
            return Rec(rtype, rid, None, raw=text[:cut], defect=defect, field=field)
        else:
            raise ValueError(f"unknown defect {defect!r}")
        return Rec(rtype, rid, body, defect=defect, field=field)

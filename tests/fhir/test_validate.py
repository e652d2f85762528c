"""Validation of single resources: R4B schema errors mapped to defects, and Shipa's own checks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from pipelines import codes
from pipelines.fhir.defects import operation_outcome
from pipelines.fhir.validate import SchemaValidator, content_issues


@pytest.fixture(scope="module")
def validator() -> SchemaValidator:
    return SchemaValidator()


def test_clean_resources_pass(fx: SimpleNamespace, validator: SchemaValidator) -> None:
    for resource in fx.clean_resources():
        assert validator.validate(resource) == [], resource["resourceType"]
        assert content_issues(resource) == [], resource["resourceType"]


def test_missing_required_field_names_the_field(fx: SimpleNamespace, validator: SchemaValidator) -> None:
    obs = fx.observation("o1", "p1", "e1")
    del obs["status"]
    [issue] = validator.validate(obs)
    assert issue.defect == "missing_required_field"
    assert issue.expression == "Observation.status"
    assert "Observation.status" in issue.diagnostics
    enc = fx.encounter("e1", "p1")
    del enc["class"]
    assert [(i.defect, i.expression) for i in validator.validate(enc)] == [
        ("missing_required_field", "Encounter.class")
    ]


@pytest.mark.parametrize("bad", ["2023-02-30", "2023-13-01", "2023-04-31T10:00:00+05:00", "2023-00-10"])
def test_invalid_dates(fx: SimpleNamespace, validator: SchemaValidator, bad: str) -> None:
    obs = fx.observation("o1", "p1", "e1", when=bad)
    issues = validator.validate(obs)
    assert [(i.defect, i.expression) for i in issues] == [("invalid_date", "Observation.effectiveDateTime")]


@pytest.mark.parametrize(
    ("system", "code", "defect_expected"),
    [
        (codes.ICD10, "J18.9", False),
        (codes.ICD10, "J18.9.9", True),
        (codes.ICD10, "PNEUMONIA", True),
        (codes.LOINC, "J18.9", True),  # a LOINC system on a diagnosis: wrong system
        (codes.SNOMED, "233604007", False),  # a foreign system Shipa does not govern
    ],
)
def test_condition_codes(fx: SimpleNamespace, system: str, code: str, defect_expected: bool) -> None:
    cond = fx.condition("c1", "p1", "e1")
    cond["code"] = {"coding": [{"system": system, "code": code}]}
    issues = content_issues(cond)
    assert bool(issues) == defect_expected
    if defect_expected:
        assert issues[0].defect == "invalid_code"
        assert issues[0].expression == "Condition.code.coding[0]"


@pytest.mark.parametrize(
    ("system", "code", "expected"),
    [
        (codes.LOINC, "8310-5", None),
        (codes.LOINC, "83105", ("invalid_code", "error")),
        (codes.LOINC, "8310-55", ("invalid_code", "error")),
        # no LOINC coding where Shipa reads one: valid FHIR, kept with a finding
        (codes.SNOMED, "8310-5", ("unmapped_code", "information")),
    ],
)
def test_observation_codes(fx: SimpleNamespace, system: str, code: str, expected: tuple[str, str] | None) -> None:
    obs = fx.observation("o1", "p1", "e1")
    obs["code"] = {"coding": [{"system": system, "code": code}]}
    issues = content_issues(obs)
    assert bool(issues) == (expected is not None)
    if expected is not None:
        assert (issues[0].defect, issues[0].severity) == expected
        assert issues[0].expression.startswith("Observation.code.coding")


def test_a_procedure_coded_only_in_cpt_is_kept_with_a_finding(fx: SimpleNamespace, tmp_path: Path) -> None:
    procedure = {
        "resourceType": "Procedure",
        "id": "cpt1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]},
        "performedDateTime": "2023-03-01T10:00:00+05:00",
    }
    fx.write_ndjson(tmp_path / "in" / "fhir" / "all.ndjson", [*fx.clean_resources(), procedure])
    report = fx.run_ingest(tmp_path / "in", tmp_path / "out")
    assert report["fhir"]["resources"]["quarantined"] == 0
    assert report["fhir"]["findings"] == {"unmapped_code": 1}
    [finding] = fx.quarantine_records(tmp_path / "out", "findings")
    assert finding["resource_id"] == "cpt1"
    assert finding["outcome"]["issue"][0]["severity"] == "information"
    assert finding["outcome"]["issue"][0]["expression"] == ["Procedure.code.coding"]
    [row] = pq.read_table(tmp_path / "out" / "tables" / "procedures.parquet").to_pylist()
    assert row["patient_id"] is not None and row["tariff_code"] is None
    assert (row["code_system"], row["code"]) == ("http://www.ama-assn.org/go/cpt", "99213")  # kept as read


def test_survey_observation_with_non_loinc_code_under_loinc_is_kept(fx: SimpleNamespace) -> None:
    # Synthea files CIEL concept ids under the LOINC system in survey observations, which Shipa never reads.
    obs = fx.observation("o1", "p1", "e1")
    obs["category"][0]["coding"][0]["code"] = "survey"
    obs["code"] = {"coding": [{"system": codes.LOINC, "code": "5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}
    assert content_issues(obs) == []


def test_claim_tariff_must_be_in_the_list(fx: SimpleNamespace) -> None:
    assert content_issues(fx.claim("cl1", "p1", "e1", tariff="A02")) == []
    [issue] = content_issues(fx.claim("cl1", "p1", "e1", tariff="Z99"))
    assert issue.defect == "invalid_code"
    assert issue.expression == "Claim.item[0].productOrService.coding[0]"
    assert "tariff" in issue.diagnostics


def test_iin_checksum_and_mismatch(fx: SimpleNamespace) -> None:
    pat = fx.patient("p1", "1980-05-17", "male")
    good = pat["identifier"][0]["value"]
    pat["identifier"][0]["value"] = good[:11] + str((int(good[11]) + 1) % 10)
    [issue] = content_issues(pat)
    assert issue.defect == "iin_checksum"
    assert issue.expression == "Patient.identifier[0].value"
    assert good not in issue.diagnostics and pat["identifier"][0]["value"] not in issue.diagnostics

    wrong_sex = fx.patient("p1", "1980-05-17", "male")
    wrong_sex["gender"] = "female"
    assert [(i.defect, i.expression) for i in content_issues(wrong_sex)] == [
        ("iin_mismatch", "Patient.identifier[0].value")
    ]
    wrong_birth = fx.patient("p1", "1980-05-17", "male")
    wrong_birth["birthDate"] = "1980-05-18"
    [issue] = content_issues(wrong_birth)
    assert issue.defect == "iin_mismatch" and "birthDate" in issue.diagnostics


def test_iin_check_applies_only_to_the_iin_system(fx: SimpleNamespace) -> None:
    pat = fx.patient("p1")
    pat["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-45-3348"}]
    assert content_issues(pat) == []


def test_birth_after_death_is_implausible(fx: SimpleNamespace) -> None:
    pat = fx.patient("p1", "1980-05-17", deceasedDateTime="1979-01-01T10:00:00+05:00")
    [issue] = content_issues(pat)
    assert (issue.defect, issue.expression) == ("implausible_date", "Patient.deceasedDateTime")


def test_encounter_ending_before_it_starts(fx: SimpleNamespace) -> None:
    enc = fx.encounter("e1", "p1")
    enc["period"] = {"start": "2023-03-01T10:00:00+05:00", "end": "2023-03-01T09:00:00+05:00"}
    [issue] = content_issues(enc)
    assert (issue.defect, issue.expression) == ("implausible_date", "Encounter.period.end")


def test_operation_outcome_is_valid_r4(fx: SimpleNamespace, validator: SchemaValidator) -> None:
    obs = fx.observation("o1", "p1", "e1")
    del obs["status"]
    outcome = operation_outcome(validator.validate(obs))
    model = OperationOutcome.model_validate(outcome)
    assert model.issue[0].severity == "error"
    assert model.issue[0].code == "required"
    assert model.issue[0].expression == ["Observation.status"]

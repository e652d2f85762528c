"""De-identification by allow-list: fixed input -> expected output, and nothing personal survives."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import orjson

from pipelines import codes
from pipelines.fhir.deid import Pseudonyms, deidentify, identifier_kind
from pipelines.fhir.pseudonym import Pseudonymizer


def _pseudonyms(fx: SimpleNamespace) -> Pseudonyms:
    return Pseudonyms(Pseudonymizer(fx.KEY))


def test_patient_fixture_gives_expected_output(fx: SimpleNamespace) -> None:
    p = Pseudonymizer(fx.KEY)
    source = fx.patient(
        "p1",
        "1980-05-17",
        "male",
        text={"status": "generated", "div": "<div>Серик Ахметов</div>"},
        deceasedDateTime="2024-02-03T10:00:00+05:00",
        managingOrganization={"reference": "Organization/org1", "display": "Polyclinic No. 1"},
        maritalStatus={"text": "married"},
    )
    iin = source["identifier"][0]["value"]
    expected = {
        "resourceType": "Patient",
        "id": p.id("Patient", "p1"),
        "identifier": [{"system": codes.IIN_SYSTEM, "value": p.id("iin", iin)}],
        "gender": "male",
        "birthDate": "1980-05",
        "deceasedDateTime": "2024-02-03",
        "address": [
            {
                "state": "AST",
                "country": "KZ",
                "postalCode": "010",
                "extension": [{"url": codes.REGION_EXTENSION, "valueCode": "AST"}],
            }
        ],
        "managingOrganization": {"reference": f"Organization/{p.id('Organization', 'org1')}"},
    }
    assert deidentify(source, _pseudonyms(fx)) == expected


def test_names_telecom_address_lines_and_free_text_are_gone(fx: SimpleNamespace) -> None:
    source = fx.patient("p1", text={"status": "generated", "div": "<div>Серик</div>"})
    iin = source["identifier"][0]["value"]
    out = orjson.dumps(deidentify(source, _pseudonyms(fx))).decode()
    for secret in (iin, "Ахметов", "Akhmetov", "Serik", "+77011234567", "Абая", "Астана", "010000", "1980-05-17"):
        assert secret not in out
    obs = deidentify(fx.observation("o1", "p1", "e1"), _pseudonyms(fx))
    assert "note" not in obs
    assert obs["valueQuantity"] == {"value": 38.4, "unit": "Cel", "system": codes.UCUM, "code": "Cel"}


def test_iin_pseudonym_is_the_dicom_side_patient_pseudonym(fx: SimpleNamespace) -> None:
    source = fx.patient("p1")
    iin = source["identifier"][0]["value"]
    out = deidentify(source, _pseudonyms(fx))
    assert identifier_kind(codes.IIN_SYSTEM) == "iin"
    assert out["identifier"][0]["value"] == Pseudonymizer(fx.KEY).id("iin", iin)
    # a different key gives a different pseudonym: without the key it cannot be recomputed
    other = deidentify(source, Pseudonyms(Pseudonymizer("another-key-0123456789")))
    assert other["identifier"][0]["value"] != out["identifier"][0]["value"]


def test_references_keep_resolving_after_deid(fx: SimpleNamespace) -> None:
    p = Pseudonymizer(fx.KEY)
    enc = deidentify(fx.encounter("e1", "p1"), _pseudonyms(fx))
    assert enc["subject"] == {"reference": f"Patient/{p.id('Patient', 'p1')}"}  # display (a name) dropped
    org_pseudo = p.id(codes.ORG_ID_SYSTEM, fx.ORG_IDENT)
    assert enc["serviceProvider"] == {"reference": f"Organization?identifier={codes.ORG_ID_SYSTEM}|{org_pseudo}"}
    org = deidentify(fx.organization(), _pseudonyms(fx))
    assert org["identifier"] == [{"system": codes.ORG_ID_SYSTEM, "value": org_pseudo}]
    assert "telecom" not in org and org["name"] == "Polyclinic No. 1"


def test_bundle_urn_references_become_pseudonymous_literals(fx: SimpleNamespace) -> None:
    p = Pseudonymizer(fx.KEY)
    obs = fx.observation("o1", "p1", "e1")
    obs["subject"] = {"reference": "urn:uuid:aaaa"}
    out = deidentify(obs, _pseudonyms(fx), {"urn:uuid:aaaa": "Patient/p1"})
    assert out["subject"] == {"reference": f"Patient/{p.id('Patient', 'p1')}"}


def test_imaging_study_uids_are_remapped_like_dicom(fx: SimpleNamespace) -> None:
    p = Pseudonymizer(fx.KEY)
    study = {
        "resourceType": "ImagingStudy",
        "id": "is1",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}],
        "subject": {"reference": "Patient/p1"},
        "description": "Chest X-ray of Serik",
        "series": [{"uid": "1.2.3.4.1", "modality": {"code": "CR"}, "instance": [{"uid": "1.2.3.4.1.1"}]}],
    }
    out = deidentify(study, _pseudonyms(fx))
    assert out["identifier"][0]["value"] == f"urn:oid:{p.uid('1.2.3.4')}"
    assert out["series"][0]["uid"] == p.uid("1.2.3.4.1")
    assert out["series"][0]["instance"][0]["uid"] == p.uid("1.2.3.4.1.1")
    assert "description" not in out


def test_input_is_not_changed_and_unknown_types_keep_only_type_and_id(fx: SimpleNamespace) -> None:
    source = fx.patient("p1")
    before = copy.deepcopy(source)
    deidentify(source, _pseudonyms(fx))
    assert source == before
    doc = {"resourceType": "DocumentReference", "id": "d1", "status": "current", "description": "letter"}
    assert deidentify(doc, _pseudonyms(fx)) == {
        "resourceType": "DocumentReference",
        "id": Pseudonymizer(fx.KEY).id("DocumentReference", "d1"),
    }

"""A Claim whose id or fullUrl looks like an IIN is answered under its pseudonym, with a warning, never echoed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import httpx
import pytest

from pipelines.config import DEMO_PSEUDONYM_KEY
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.iin import iin_shaped, make_iin

from . import test_model_endpoints as endpoints
from .helpers import FAKE_IIN, auth
from .test_model_endpoints import Case, Service

# The fixtures of the champion models trained on the tiny cohort and served by uvicorn (about 20 s, once here).
registry, service, case = endpoints.registry, endpoints.service, endpoints.case

IIN = make_iin(dt.date(1979, 4, 12), "female", 17) or make_iin(dt.date(1979, 4, 12), "female", 18)
assert IIN is not None
NOT_IIN = IIN[:11] + str((int(IIN[11]) + 1) % 10)  # the check digit is wrong: an ordinary number


def test_iin_shaped_needs_twelve_digits_and_the_check_digit() -> None:
    assert iin_shaped(IIN) and iin_shaped(FAKE_IIN)
    assert iin_shaped(f"Claim/{IIN}") and iin_shaped(f"http://hospital.kz/fhir/Claim/{IIN}/_history/2")
    assert not iin_shaped(NOT_IIN)
    assert not iin_shaped(f"1{IIN}") and not iin_shaped(IIN[:11])  # 13 digits, 11 digits: no IIN
    assert not iin_shaped("Claim/claim-0001") and not iin_shaped("urn:uuid:6f1c2a44-1b2e-4c1a-9f00-a1b2c3d4e5f6")


def _claim(case: Case, claim_id: str) -> dict[str, Any]:
    claim = next(r for r in case.resources if r["resourceType"] == "Claim")
    return {**claim, "id": claim_id}


def _pseudonym(claim_id: str) -> str:
    return Pseudonyms(Pseudonymizer(DEMO_PSEUDONYM_KEY)).resource("Claim", claim_id)


@pytest.mark.parametrize("fmt", ["json", "fhir"])
def test_a_claim_id_that_is_an_iin_is_answered_as_its_pseudonym_with_a_warning(
    service: Service, case: Case, fmt: str
) -> None:
    with httpx.Client(base_url=service.base, timeout=60) as client:
        response = client.post(
            f"/fraud/score?format={fmt}", json=_claim(case, IIN), headers=auth(service.tokens["investigator"])
        )
    assert response.status_code == 200, response.text
    assert IIN not in response.text
    named = f"Claim/{_pseudonym(IIN)}"
    text = (
        f"Claim.id looks like an IIN (a national identifier) and is not repeated: the answer names this claim {named}"
    )
    warning = {"severity": "warning", "code": "informational", "diagnostics": text, "expression": ["Claim.id"]}
    body = response.json()
    if fmt == "json":
        assert body["results"][0]["claim"] == named
        assert body["warnings"] == [warning]
    else:
        resources = [e["resource"] for e in body["entry"]]
        assessment = next(r for r in resources if r["resourceType"] == "RiskAssessment")
        assert assessment["basis"] == [{"reference": named, "type": "Claim"}]
        outcome = next(r for r in resources if r["resourceType"] == "OperationOutcome")
        assert outcome["issue"] == [warning]
    record = list(service.app.state.audit_log.iter_all())[-1]
    assert IIN not in json.dumps(record.as_dict()) and list(record.output["scores"]) == [_pseudonym(IIN)]


def test_a_fullurl_holding_an_iin_is_replaced_and_an_ordinary_number_is_kept(service: Service, case: Case) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"http://hospital.kz/fhir/Claim/{IIN}", "resource": _claim(case, "c-1")},
            {"resource": _claim(case, NOT_IIN)},
        ],
    }
    with httpx.Client(base_url=service.base, timeout=60) as client:
        response = client.post("/fraud/score?format=json", json=bundle, headers=auth(service.tokens["investigator"]))
    assert response.status_code == 200, response.text
    assert IIN not in response.text
    body = response.json()
    assert [r["claim"] for r in body["results"]] == [f"Claim/{_pseudonym('c-1')}", f"Claim/{NOT_IIN}"]
    assert [w["expression"] for w in body["warnings"]] == [["Bundle.entry[0].fullUrl"]]


def test_ordinary_claim_ids_give_no_warning(service: Service, case: Case) -> None:
    with httpx.Client(base_url=service.base, timeout=60) as client:
        for fmt in ("json", "fhir"):
            response = client.post(
                f"/fraud/score?format={fmt}", json=_claim(case, "claim-7"), headers=auth(service.tokens["investigator"])
            )
            assert response.status_code == 200, response.text
            assert "warnings" not in response.json() and "OperationOutcome" not in response.text
            assert "Claim/claim-7" in response.text

"""Fraud patterns: rates near their parameters, each pattern visible in the data as the domain notes describe,
carried by a minority of providers, and labelled in part by audit findings, biased the way real audits are."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines import codes
from pipelines.synth.cohort import directory_for
from pipelines.synth.spec import FRAUD_PATTERNS, REGISTRY_CHECKED

from .cohorts import LARGE_FRAUD_RATE as RATE
from .cohorts import LARGE_N_ORGS as N_ORGS
from .cohorts import LARGE_PROVIDER_SHARE as SHARE
from .cohorts import LARGE_STAFF as STAFF
from .cohorts import large_spec
from .reader import read_csv


def _load(root: Path, rtype: str) -> dict[str, dict[str, Any]]:
    path = root / "fhir" / f"{rtype}.ndjson"
    return {r["id"]: r for r in map(orjson.loads, path.read_bytes().splitlines())}


@pytest.fixture(scope="module")
def data(large_cohort: Path) -> dict[str, Any]:
    types = ("Claim", "Patient", "Encounter", "Condition", "ServiceRequest", "PractitionerRole", "Organization")
    cohort = large_cohort
    out: dict[str, Any] = {t: _load(cohort, t) for t in types}
    out["truth"] = read_csv(cohort / "manifest" / "fraud_truth.csv")
    out["audit"] = read_csv(cohort / "labels" / "audit_findings.csv")
    org_ident = {o["id"]: o["identifier"][0]["value"] for o in out["Organization"].values()}
    out["org_of"] = {f"Organization/{k}": v for k, v in org_ident.items()}
    out["works_at"] = {
        r["practitioner"]["reference"]: out["org_of"][r["organization"]["reference"]]
        for r in out["PractitionerRole"].values()
    }
    return out


def _codes(claim: dict[str, Any]) -> list[str]:
    return [it["productOrService"]["coding"][0]["code"] for it in claim["item"]]


def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text[:10])


def test_rates_per_pattern_are_near_their_parameters(data: dict[str, Any]) -> None:
    n_claims = len(data["Claim"])
    by_pattern = Counter(r["pattern"] for r in data["truth"])
    for pattern in FRAUD_PATTERNS:
        achieved = by_pattern[pattern] / n_claims
        assert 0.65 * RATE < achieved < 1.35 * RATE, (pattern, achieved)
    total = sum(by_pattern.values()) / n_claims
    assert 0.85 * RATE * 7 < total < 1.15 * RATE * 7


def test_fraud_is_carried_by_a_minority_of_providers(data: dict[str, Any]) -> None:
    providers = {r["provider_id"] for r in data["truth"]}
    assert 1 <= len(providers) <= round(SHARE * N_ORGS)
    per_provider = defaultdict(set)
    for r in data["truth"]:
        per_provider[r["provider_id"]].add(r["pattern"])
    assert any(len(p) > 1 for p in per_provider.values()), "some providers commit several patterns"
    for r in data["truth"]:
        claim = data["Claim"][r["claim_id"]]
        assert data["org_of"][claim["provider"]["reference"]] == r["provider_id"]


def test_labels_are_a_share_of_the_truth(data: dict[str, Any]) -> None:
    truth = {r["claim_id"]: r for r in data["truth"]}
    labelled = {k for k, r in truth.items() if r["labelled"] == "true"}
    assert {r["claim_id"] for r in data["audit"]} == labelled
    assert 0.2 < len(labelled) / len(truth) < 0.8
    for r in data["audit"]:
        claim = data["Claim"][r["claim_id"]]
        assert r["pattern"] == truth[r["claim_id"]]["pattern"]
        assert dt.date.fromisoformat(r["finding_date"]) > dt.date.fromisoformat(claim["created"])


def test_audits_find_patterns_and_providers_unevenly(data: dict[str, Any]) -> None:
    spec = large_spec()
    directory = directory_for(spec)
    audited = {directory.orgs[i].identifier for i in directory.audited}
    assert len(audited) == round(spec.audited_provider_share * N_ORGS)
    found: dict[str, list[bool]] = defaultdict(list)
    for r in data["truth"]:
        looked = r["pattern"] in REGISTRY_CHECKED or r["provider_id"] in audited
        if not looked:
            assert r["labelled"] == "false", "record reviews find nothing at providers they do not visit"
        else:
            found[r["pattern"]].append(r["labelled"] == "true")
    for pattern, hits in found.items():
        if len(hits) >= 40:
            assert abs(sum(hits) / len(hits) - spec.labelled_share[pattern]) < 0.12, pattern
    # Registry checks find most duplicates and services after death; collusion rings are rarely found.
    share = {p: sum(h) / len(h) for p, h in found.items() if h}
    assert share["services_after_death"] > 0.75 and share["duplicate_claim"] > 0.7
    assert share.get("collusion_ring", 0.0) < 0.25


def test_each_pattern_looks_as_described(data: dict[str, Any]) -> None:
    claims, patients = data["Claim"], data["Patient"]
    truth = {r["claim_id"]: r["pattern"] for r in data["truth"]}
    cond_code = {f"Condition/{k}": c["code"]["coding"][0]["code"] for k, c in data["Condition"].items()}
    clean_keys = Counter()
    for cid, claim in claims.items():
        if cid not in truth:
            assert all("encounter" in it for it in claim["item"]), "clean claims have a clinical trace"
            clean_keys[(claim["patient"]["reference"], tuple(_codes(claim)))] += 1
    daily: Counter[tuple[str, str]] = Counter()
    for claim in claims.values():
        for it in claim["item"]:
            if "servicedDate" in it:  # bed-days carry a servicedPeriod instead
                daily[(claim["provider"]["reference"], it["servicedDate"])] += it["quantity"]["value"]
    volume_orgs = {claims[c]["provider"]["reference"] for c, p in truth.items() if p == "excessive_volume"}
    ring_edges = set()
    for cid, pattern in truth.items():
        claim = claims[cid]
        items = _codes(claim)
        dx = [cond_code.get(d.get("diagnosisReference", {}).get("reference", ""), "") for d in claim["diagnosis"]]
        if pattern == "phantom_billing":
            assert not any("encounter" in it for it in claim["item"])
            assert all("diagnosisCodeableConcept" in d for d in claim["diagnosis"])
        elif pattern == "upcoding":
            assert items in (["A02"], ["A03"], ["H02"])
            assert set(dx) <= {"J06.9", "R05", "Z00.0", "J20.9"}
        elif pattern == "unbundling":
            packages = [t for t in codes.TARIFFS.values() if t.kind == "package"]
            package = next(p for p in packages if sorted(p.components) == sorted(items))
            assert sum(codes.TARIFFS[c].price_kzt for c in items) > package.price_kzt
        elif pattern == "duplicate_claim":
            assert clean_keys[(claim["patient"]["reference"], tuple(items))] >= 1
        elif pattern == "services_after_death":
            death = _day(patients[claim["patient"]["reference"].split("/")[1]]["deceasedDateTime"])
            assert all(_day(it.get("servicedDate") or it["servicedPeriod"]["start"]) > death for it in claim["item"])
        elif pattern == "excessive_volume":
            day = claim["item"][0]["servicedDate"]
            assert daily[(claim["provider"]["reference"], day)] > 3 * STAFF
            assert daily[(claim["provider"]["reference"], day)] > 2 * max(
                n for (org, _), n in daily.items() if org not in volume_orgs
            )
        elif pattern == "collusion_ring":
            if "referral" in claim:
                sr = data["ServiceRequest"][claim["referral"]["reference"].split("/")[1]]
                assert sr["performer"][0]["reference"] == claim["provider"]["reference"]
                ring_edges.add(
                    (data["works_at"][sr["requester"]["reference"]], data["org_of"][sr["performer"][0]["reference"]])
                )
        else:
            raise AssertionError(pattern)
    # The referrals between ring members close a loop: each member refers to exactly one other, all connected.
    successors = dict(ring_edges)
    assert len(successors) == len(ring_edges) >= 2
    start = next(iter(successors))
    node, seen = successors[start], {start}
    while node not in seen:
        seen.add(node)
        node = successors.get(node, node)
    assert node == start and seen == set(successors)

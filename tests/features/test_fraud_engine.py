"""One implementation of the claim fraud features, batch and online: :class:`FraudHistory`.

The tiny cohort's ingest tables are the Fund's history. Its claims are sent back the way clients send them (a
bare Claim, a Claim with its context, a patient's Bundle...), through the service's steps
(``submitted_resources``, ``check_resources``, ``deidentify_and_flatten`` under the cohort's pseudonym key), and
scored against the history:

- a claim the history holds, sent alone, gets exactly its batch record (every claim of the cohort, under several
  option sets), and so does every claim of a request that only repeats history records;
- new claims get what the batch gives them over history ∪ request; a request's records replace the history's
  records with the same id for that request only; the history never changes;
- without history a request is its own history, and the polars normalisation of the ingest tables and the plain
  Python one of a request's rows give the same records (requests of every kind, edited copies that reach the null
  and fallback paths, several option sets: time zones, windows, thresholds). The sample must move every feature
  away from its neutral value somewhere, so that an equivalence on neutral values only cannot pass.

Floats are compared to 1e-12 relative, everything else exactly.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines import codes
from pipelines.config import DEMO_PSEUDONYM_KEY
from pipelines.features.fraud import NUMERIC_FEATURES, PROVIDER_FEATURES, SCHEMA, FraudFeatureOptions
from pipelines.features.fraud_engine import FraudHistory
from pipelines.features.fraud_tables import normalise
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_in import check_resources, deidentify_and_flatten, submitted_resources, table_frames
from pipelines.synth.writers import read_resources

# The cohort's ingest pseudonymised with the demo key: the same key makes a request's ids the history's ids.
KEY = DEMO_PSEUDONYM_KEY
Resource = dict[str, Any]
OPTIONS = {
    "default": FraudFeatureOptions(),
    # Small thresholds, other windows and a time zone that moves dates (created 00:00 UTC is the day before).
    "loose": FraudFeatureOptions(
        duplicate_days=30,
        trace_days=0,
        peer_min_count=2,
        peer_window_days=None,
        near_days=400,
        cycle_days=30,
        min_shared=1,
        timezone="-08:00",
    ),
    "almaty": FraudFeatureOptions(
        peer_min_count=3, peer_window_days=120, graph_window_days=90, near_days=30, timezone="Asia/Almaty"
    ),
}
# The value each feature has when nothing is found (its fill value).
NEUTRAL: dict[str, float] = {
    "amount_ratio_dx": 1.0,
    "price_ratio_max": 1.0,
    "quantity_ratio_max": 1.0,
    "volume_vs_baseline": 1.0,
    "patient_providers_90d": 1.0,
    "provider_referral_scc": 1.0,
    "community_size": 1.0,
}
CONTEXT_PRESENT = ("peer_amount_median", "price_peer_code", "qty_peer_code", "unbundled_package", "deceased_date")


# --- requests built from the cohort -----------------------------------------------------------------------------


def _ref(resource: Resource, key: str) -> str | None:
    value = resource.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return value.get("reference") if isinstance(value, dict) else None


def _bundle(resources: list[Resource]) -> Resource:
    """A collection Bundle (each resource once, ``urn:uuid`` fullUrls as clients send them)."""
    seen: set[tuple[str, str]] = set()
    entries = []
    for r in resources:
        if (r["resourceType"], r["id"]) not in seen:
            seen.add((r["resourceType"], r["id"]))
            entries.append({"fullUrl": f"urn:uuid:{r['id']}", "resource": r})
    return {"resourceType": "Bundle", "type": "collection", "entry": entries}


@dataclass
class Cohort:
    """The tiny cohort's raw FHIR, indexed by patient, encounter and organization."""

    claims: list[Resource]
    patients: dict[str, Resource]  # "Patient/<id>" ->
    organizations: dict[str, Resource]  # "Organization/<id>" ->
    roles: dict[str, list[Resource]]  # organization reference -> PractitionerRoles
    records: dict[str, list[Resource]]  # patient reference -> Encounters, Observations, ... ServiceRequests
    by_encounter: dict[str, list[Resource]]  # encounter reference -> its Observations, Procedures, Conditions
    service_requests: dict[str, Resource]  # "ServiceRequest/<id>" ->
    encounters: dict[str, Resource]  # "Encounter/<id>" ->
    claims_of: dict[str, list[Resource]] = field(default_factory=dict)  # patient reference -> Claims
    pattern: dict[str, str] = field(default_factory=dict)  # claim id -> fraud pattern

    def claim_context(self, claim: Resource) -> list[Resource]:
        """The claim with its patient, encounter and the encounter's records, provider, staff and referral."""
        out = [claim]
        patient = self.patients.get(_ref(claim, "patient") or "")
        out += [patient] if patient else []
        encounter = _encounter_of(claim)
        for r in self.records.get(_ref(claim, "patient") or "", ()):
            if encounter and f"{r['resourceType']}/{r['id']}" == encounter:
                out.append(r)
        out += self.by_encounter.get(encounter or "", [])
        provider = _ref(claim, "provider") or ""
        out += [self.organizations[provider], *self.roles.get(provider, [])] if provider in self.organizations else []
        referral = self.service_requests.get(_ref(claim, "referral") or "")
        out += [referral] if referral else []
        return out

    def patient_records(self, patient: str) -> list[Resource]:
        """Everything of one patient: the Patient, all claims and records, the organizations involved and staff."""
        out = [self.patients[patient]] if patient in self.patients else []
        out += self.claims_of.get(patient, []) + self.records.get(patient, [])
        orgs = sorted(
            {
                ref
                for r in out
                for key in ("provider", "serviceProvider", "performer")
                if (ref := _ref(r, key)) and ref in self.organizations
            }
        )
        for org in orgs:
            out += [self.organizations[org], *self.roles.get(org, [])]
        return out


@pytest.fixture(scope="module")
def cohort(tiny_cohort: Path) -> Cohort:
    raw = tiny_cohort / "data" / "raw"
    # Records with an injected defect are left out (read_resources): the service rejects them (422) before any
    # feature is built.
    records: dict[str, list[Resource]] = defaultdict(list)
    by_encounter: dict[str, list[Resource]] = defaultdict(list)
    service_requests, encounters = {}, {}
    for rtype in ("Encounter", "Observation", "Procedure", "Condition", "ServiceRequest"):
        for r in read_resources(raw, rtype):
            records[_ref(r, "subject") or ""].append(r)
            if rtype in ("Observation", "Procedure", "Condition") and _ref(r, "encounter"):
                by_encounter[_ref(r, "encounter") or ""].append(r)
            if rtype == "ServiceRequest":
                service_requests[f"ServiceRequest/{r['id']}"] = r
            if rtype == "Encounter":
                encounters[f"Encounter/{r['id']}"] = r
    roles: dict[str, list[Resource]] = defaultdict(list)
    for r in read_resources(raw, "PractitionerRole"):
        roles[_ref(r, "organization") or ""].append(r)
    claims = read_resources(raw, "Claim")
    claims_of: dict[str, list[Resource]] = defaultdict(list)
    for c in claims:
        claims_of[_ref(c, "patient") or ""].append(c)
    truth = pl.read_csv(raw / "manifest" / "fraud_truth.csv", schema_overrides={"claim_id": pl.String})
    return Cohort(
        claims=claims,
        patients={f"Patient/{p['id']}": p for p in read_resources(raw, "Patient")},
        organizations={f"Organization/{o['id']}": o for o in read_resources(raw, "Organization")},
        roles=roles,
        records=records,
        by_encounter=by_encounter,
        service_requests=service_requests,
        encounters=encounters,
        claims_of=claims_of,
        pattern=dict(zip(truth["claim_id"], truth["pattern"], strict=True)),
    )


def _edited(cohort: Cohort, rng: random.Random) -> Iterator[tuple[str, Resource]]:
    """Edited copies of realistic requests that reach the null and fallback paths of the features."""
    patients = [p for p, cs in cohort.claims_of.items() if len(cs) >= 3 and p in cohort.patients]
    base = copy.deepcopy(cohort.patient_records(rng.choice(patients)))
    claims = [r for r in base if r["resourceType"] == "Claim"]

    # A Practitioner as provider (no provider_id), a claim without billable period and item dates (service
    # dates fall back on the created date), amounts without unit price or net, items coded in another system
    # (no tariff code), a conditional patient reference that the request resolves, one it cannot resolve.
    edited = copy.deepcopy(base)
    cs = [r for r in edited if r["resourceType"] == "Claim"]
    team = cs[0].get("careTeam") or [{"provider": {"reference": "Practitioner/nobody"}}]
    cs[0]["provider"] = copy.deepcopy(team[0]["provider"])
    cs[1].pop("billablePeriod", None)
    for item in cs[1].get("item", ()):
        item.pop("servicedDate", None)
    for item in cs[2].get("item", ())[:1]:
        item.pop("unitPrice", None)
        item["quantity"] = {"value": 2}
    for item in cs[2].get("item", ())[1:2]:
        item.pop("net", None)
    for item in cs[-1].get("item", ())[:1]:
        item["productOrService"] = {"coding": [{"system": "http://example.org/local-codes", "code": "X1"}]}
    patient = next(r for r in edited if r["resourceType"] == "Patient")
    iin = next(i for i in patient["identifier"] if i["system"] == codes.IIN_SYSTEM)
    if len(cs) > 3:
        cs[3]["patient"] = {"reference": f"Patient?identifier={iin['system']}|{iin['value']}"}
    # A claim billed by another provider than the one of its encounter.
    other = next(o for o in sorted(cohort.organizations) if o != _ref(cs[-2], "provider"))
    cs[-2]["provider"] = {"reference": other}
    yield "edited: nulls and fallbacks", _bundle([*edited, cohort.organizations[other]])

    unresolved = copy.deepcopy(claims[0])
    unresolved["patient"] = {"reference": f"Patient?identifier={codes.IIN_SYSTEM}|000000000000"}
    yield "edited: unresolved patient", unresolved

    # Staff: inactive roles, a role without a practitioner, a role without an organization.
    edited = copy.deepcopy(base)
    roles = [r for r in edited if r["resourceType"] == "PractitionerRole"]
    for i, role in enumerate(roles):
        if i % 3 == 0:
            role["active"] = False
        elif i % 3 == 1:
            role.pop("practitioner", None)
            role.pop("active", None)
    if roles:
        roles[-1].pop("organization", None)
    yield "edited: staff", _bundle(edited)

    # The same services billed again under new ids: the same day, and exactly 7 and 30 days later (the edges of
    # the duplicate windows of the option sets).
    first = claims[0]
    copies = [_claim_copy(first, f"dp{days:02d}", days=days) for days in (0, 7, 30)]
    yield "edited: duplicates", _bundle([*base, *copies])

    # A package's components billed separately on one day (unbundled), then the package itself with one of its
    # components on the same day by a claim created a day later (no longer unbundled: the package was billed).
    package = next(t for t in codes.TARIFFS.values() if t.kind == "package")
    parts = _claim_copy(first, "pkg1", tariffs=package.components)
    billed = _claim_copy(first, "pkg2", later=1, tariffs=(package.code, package.components[0]))
    yield "edited: packages", _bundle([*base, parts, billed])

    # Records dated after the claim's created date must not count: a late observation and procedure in the
    # claim's encounter, its diagnosis recorded late, and a claim created before its encounter.
    edited = copy.deepcopy(base)
    cs = [r for r in edited if r["resourceType"] == "Claim" and _encounter_of(r) in cohort.encounters]
    late = (dt.date.fromisoformat(cs[0]["created"][:10]) + dt.timedelta(days=5)).isoformat()
    encounter = {"reference": _encounter_of(cs[0])}
    observation = next(r for r in edited if r["resourceType"] == "Observation")
    procedure = copy.deepcopy(next(r for rs in cohort.records.values() for r in rs if r["resourceType"] == "Procedure"))
    extra = [
        {**observation, "id": observation["id"][:-4] + "lat1", "encounter": encounter, "effectiveDateTime": late},
        {**procedure, "id": procedure["id"][:-4] + "lat2", "subject": cs[0]["patient"], "encounter": encounter},
        {**procedure, "id": procedure["id"][:-4] + "lat3", "subject": cs[0]["patient"], "encounter": encounter},
    ]
    for r in extra[1:]:
        r.pop("performedPeriod", None)
    extra[1]["performedDateTime"] = late
    extra[2]["performedDateTime"] = cs[0]["created"][:10]
    for r in edited:
        if r["resourceType"] == "Condition" and _ref(r, "encounter") == encounter["reference"]:
            r.pop("onsetPeriod", None)
            r["onsetDateTime"] = r["recordedDate"] = late
    if len(cs) > 1:
        enc = cohort.encounters[_encounter_of(cs[1]) or ""]
        cs[1]["created"] = (dt.date.fromisoformat(enc["period"]["start"][:10]) - dt.timedelta(days=2)).isoformat()
    yield "edited: records after the claim", _bundle(edited + extra)


def _encounter_of(claim: Resource) -> str | None:
    return next((_ref(i, "encounter") for i in claim.get("item", ()) if i.get("encounter")), None)


def _shift(value: str, days: int) -> str:
    """A FHIR date or dateTime moved by whole days (its time and offset kept)."""
    return (dt.date.fromisoformat(value[:10]) + dt.timedelta(days=days)).isoformat() + value[10:]


def _claim_copy(
    claim: Resource, suffix: str, *, days: int = 0, later: int = 0, tariffs: tuple[str, ...] | None = None
) -> Resource:
    """A copy of a claim under a new id: its dates moved by ``days`` (created by ``later`` more), billing
    ``tariffs`` at their list prices when given."""
    new = copy.deepcopy(claim)
    new["id"] = claim["id"][:-4] + suffix
    new["identifier"] = [{"system": "https://shipa.kz/fhir/sid/claim", "value": new["id"]}]
    new["created"] = _shift(new["created"], days + later)
    period = new.get("billablePeriod") or {}
    for key in ("start", "end"):
        if key in period:
            period[key] = _shift(period[key], days)
    for item in new.get("item", ()):
        if "servicedDate" in item:
            item["servicedDate"] = _shift(item["servicedDate"], days)
    if tariffs is not None:
        template, new["item"] = new["item"][0], []
        for seq, code in enumerate(tariffs, start=1):
            price = {"value": codes.TARIFFS[code].price_kzt, "currency": "KZT"}
            coding = {"system": codes.TARIFF, "code": code, "display": codes.TARIFFS[code].name}
            new["item"].append(
                {
                    **copy.deepcopy(template),
                    "sequence": seq,
                    "productOrService": {"coding": [coding]},
                    "quantity": {"value": 1},
                    "unitPrice": price,
                    "net": price,
                }
            )
        new["total"] = {"value": sum(codes.TARIFFS[c].price_kzt for c in tariffs), "currency": "KZT"}
    return new


def _referral_loop(cohort: Cohort) -> Resource | None:
    """A patient referred from provider A to B, with two more referrals dated 60 days before B's claim (A -> B
    and back B -> A, the second from the encounter of B's claim): a loop between A and B known before the
    claim's month, a referral passed on, and a patient's referral cycle."""
    for ref, sr in sorted(cohort.service_requests.items()):
        enc_a = cohort.encounters.get(_ref(sr, "encounter") or "")
        a, b = _ref(enc_a or {}, "serviceProvider"), _ref(sr, "performer")
        if a is None or b is None or a == b:
            continue
        patient = _ref(sr, "subject") or ""
        for claim in cohort.claims_of.get(patient, []):
            enc_b = _encounter_of(claim)
            if _ref(claim, "referral") != ref or _ref(claim, "provider") != b or enc_b not in cohort.encounters:
                continue
            day = (dt.date.fromisoformat(claim["created"][:10]) - dt.timedelta(days=60)).isoformat()
            back = {
                **sr,
                "id": sr["id"][:-4] + "bac1",
                "encounter": {"reference": enc_b},
                "performer": [{"reference": a}],
            }
            again = {**sr, "id": sr["id"][:-4] + "fwd1"}
            extra = [{**r, "authoredOn": day} for r in (back, again)]
            return _bundle(cohort.patient_records(patient) + extra)
    return None


def _provider_bundle(cohort: Cohort, rng: random.Random, inflate: bool) -> Resource:
    """Claims of many patients of the busiest provider: peers for medians, volume baselines, shared patients.
    With ``inflate``, the latest claims bill three times the price and twice the quantity."""
    busiest = Counter(_ref(c, "provider") for c in cohort.claims).most_common(1)[0][0]
    patients = sorted({_ref(c, "patient") for c in cohort.claims if _ref(c, "provider") == busiest} - {None})
    chosen = rng.sample(patients, min(len(patients), 30))
    resources = [r for p in chosen for r in cohort.patient_records(p or "")]
    if inflate:
        resources = copy.deepcopy(resources)
        claims = sorted((r for r in resources if r["resourceType"] == "Claim"), key=lambda c: c["created"])
        for claim in claims[-8:]:
            for item in claim.get("item", ()):
                for key, factor in (("unitPrice", 3), ("net", 6)):
                    if key in item:
                        item[key] = {**item[key], "value": item[key]["value"] * factor}
                item["quantity"] = {"value": 2}
    return _bundle(resources)


def _requests(cohort: Cohort) -> Iterator[tuple[str, Resource]]:
    """(what it is, request body) for every request of the comparison."""
    rng = random.Random(11)
    by_pattern: dict[str, list[Resource]] = defaultdict(list)
    for claim in cohort.claims:
        by_pattern[cohort.pattern.get(claim["id"], "none")].append(claim)
    for pattern, claims in sorted(by_pattern.items()):
        picked = rng.sample(claims, min(len(claims), 6 if pattern == "none" else 3))
        for claim in picked[:3]:
            yield f"bare claim ({pattern})", claim
        for claim in picked:
            yield f"claim with context ({pattern})", _bundle(cohort.claim_context(claim))
        patients = sorted({_ref(c, "patient") or "" for c in claims})
        for patient in rng.sample(patients, min(len(patients), 4 if pattern == "none" else 3)):
            yield f"one patient's bundle ({pattern})", _bundle(cohort.patient_records(patient))
    ring = sorted({_ref(c, "patient") or "" for c in by_pattern.get("collusion_ring", [])})
    if ring:
        yield "collusion ring bundle", _bundle([r for p in ring for r in cohort.patient_records(p)])
    referred = sorted({_ref(sr, "subject") or "" for sr in cohort.service_requests.values()})
    yield "referred patients bundle", _bundle([r for p in referred for r in cohort.patient_records(p)])
    loop = _referral_loop(cohort)
    if loop is not None:
        yield "edited: referral loop", loop
    yield "one provider's patients", _provider_bundle(cohort, rng, inflate=False)
    yield "one provider's patients, inflated prices", _provider_bundle(cohort, rng, inflate=True)
    yield from _edited(cohort, rng)


# --- helpers ----------------------------------------------------------------------------------------------------

Rows = dict[str, list[dict[str, Any]]]
# Columns that come from the history's monthly statistics or staff counts (see fraud_engine's docstring): a request
# that edits history records gets them from the history as it is, the other columns from history ∪ request.
FROM_HISTORY = (
    "peer_amount_median",
    "amount_ratio_dx",
    "service_level_excess",
    "price_ratio_max",
    "price_peer_code",
    "quantity_ratio_max",
    "qty_peer_code",
    "volume_vs_baseline",
    "staff",
    "services_per_staff",
    "pair_shared_patients",
    "pair_shared_ratio",
    "community_size",
    "provider_multi_provider_share",
    "provider_referral_scc",
    "referral_loop_link",
)
# The id of a table's rows: a request's row replaces the history's row with the same id.
ROW_IDS = {
    "encounters": ("encounter_id",),
    "observations": ("observation_id", "component_index"),
    "procedures": ("procedure_id",),
    "conditions": ("condition_id",),
    "patients": ("patient_id",),
    "organizations": ("organization_id",),
    "practitioner_roles": ("practitioner_role_id",),
    "service_requests": ("service_request_id",),
}


def _assert_equal(got: pl.DataFrame, want: pl.DataFrame, what: str) -> None:
    assert got.schema == want.schema, what
    assert set(want.columns) <= set(SCHEMA), what
    try:
        assert_frame_equal(got, want, check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def _in_order(frame: pl.DataFrame, order: Sequence[str]) -> pl.DataFrame:
    """The rows of ``frame`` for the claim ids ``order``, in that order."""
    pos = pl.DataFrame(
        {"claim_id": list(order), "_pos": range(len(order))}, schema={"claim_id": pl.String, "_pos": pl.Int64}
    )
    return frame.join(pos, on="claim_id").sort("_pos").drop("_pos")


def _rows(body: Resource) -> Rows | None:
    """A request body through the service's steps (None when the service rejects it)."""
    submitted = submitted_resources(body, allowed=("Claim",))
    try:
        check_resources(submitted)
    except FhirHTTPError:
        return None
    return deidentify_and_flatten(submitted, Pseudonyms(Pseudonymizer(KEY))).rows  # type: ignore[return-value]


def _overlay(history: Rows, request: Mapping[str, Sequence[dict[str, Any]]]) -> Rows:
    """History ∪ request as ingest rows: a request row replaces the history rows with its id (a claim with its
    items)."""
    out = {name: list(rows) for name, rows in history.items()}
    claim_ids = {r["claim_id"] for r in request.get("claims", ())}
    for name in ("claims", "claim_items"):
        out[name] = [r for r in out.get(name, []) if r["claim_id"] not in claim_ids]
    for name, cols in ROW_IDS.items():
        ids = {tuple(r.get(c) for c in cols) for r in request.get(name, ())}
        out[name] = [r for r in out.get(name, []) if tuple(r.get(c) for c in cols) not in ids]
    for name, rows in request.items():
        out.setdefault(name, []).extend(rows)
    return out


def _non_neutral(frame: pl.DataFrame, opt: FraudFeatureOptions) -> Counter[str]:
    """Per feature, the records whose value is not the neutral (nothing found) one."""
    counts: Counter[str] = Counter()
    for col in (*NUMERIC_FEATURES, *PROVIDER_FEATURES):
        neutral = opt.duplicate_days + 1 if col == "dup_min_days" else NEUTRAL.get(col, 0.0)
        counts[col] = frame.filter(pl.col(col).is_not_null() & (pl.col(col) != neutral)).height
    for col in CONTEXT_PRESENT:
        counts[col] = frame[col].is_not_null().sum()
    counts["dup_prior_provider_same"] = frame["dup_prior_provider_same"].sum()
    return counts


def _assert_every_feature_fired(fired: Counter[str], quiet: Sequence[str] = ()) -> None:
    """Every feature moved away from its neutral value in some record, except perhaps ``quiet`` ones."""
    silent = [col for col in (*NUMERIC_FEATURES, *PROVIDER_FEATURES, *CONTEXT_PRESENT) if fired[col] == 0]
    assert set(silent) <= set(quiet), f"features never away from neutral in the sample: {silent}"
    assert fired["dup_prior_provider_same"] > 0


@pytest.fixture(scope="module")
def tables(tiny_cohort: Path) -> Path:
    return tiny_cohort / "data" / "interim" / "tables"


@pytest.fixture(scope="module")
def history_rows(tables: Path) -> Rows:
    """The cohort's ingest tables as rows (what ``deidentify_and_flatten`` gives for the same records)."""
    return {p.stem: pl.read_parquet(p).to_dicts() for p in sorted(tables.glob("*.parquet"))}


@pytest.fixture(scope="module")
def history(tables: Path) -> FraudHistory:
    return FraudHistory.load(tables, FraudFeatureOptions())


@pytest.fixture(scope="module")
def batch(history: FraudHistory) -> pl.DataFrame:
    return history.features()


@pytest.fixture(scope="module")
def bare_claims(cohort: Cohort) -> list[tuple[str, Rows]]:
    """Every cohort claim the service accepts, as the rows of a request holding only that Claim."""
    pseudonymizer = Pseudonymizer(KEY)
    out = []
    for claim in cohort.claims:
        rows = _rows(claim)
        if rows is not None:
            out.append((pseudonymizer.id("Claim", claim["id"]), rows))
    return out


# --- batch and online -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_a_claim_sent_alone_gets_its_batch_record(name: str, tables: Path, bare_claims: list[tuple[str, Rows]]) -> None:
    opt = OPTIONS[name]
    history = FraudHistory.load(tables, opt)
    batch = history.features()
    assert len(history) == batch.height
    assert len(bare_claims) >= 0.95 * batch.height  # the claims without injected defects: nearly all
    ids = [claim_id for claim_id, _ in bare_claims]
    # One request per claim, as the service sends them (each claim's rows are only its claims and items rows).
    assert all(set(rows) <= {"claims", "claim_items"} for _, rows in bare_claims)
    got = pl.concat([history.request_features(rows, order=[claim_id]) for claim_id, rows in bare_claims])
    assert got["claim_id"].to_list() == ids
    want = _in_order(batch, ids)
    _assert_equal(got, want, f"options {name}")
    # The tiny cohort has no referral loop and bills list prices (the edited requests of the test without history
    # reach those features); everything else fires.
    quiet = ["price_ratio_max", "referral_passthrough", "referral_loop_link", "patient_referral_cycle"]
    _assert_every_feature_fired(_non_neutral(want, opt), [*quiet, "provider_referral_scc"])
    assert len(want) >= 850


def test_requests_of_history_records_get_the_batch_records(
    cohort: Cohort, history: FraudHistory, batch: pl.DataFrame, history_rows: Rows
) -> None:
    """Bundles that repeat history records (a claim's context, a patient's records, a provider's patients) get the
    batch records; edited ones get what history ∪ request gives, the monthly statistics from the history."""
    compared: Counter[str] = Counter()
    for what, body in _requests(cohort):
        rows = _rows(body)
        if rows is None:
            continue
        got = history.request_features(rows)
        order = got["claim_id"].to_list()
        assert order == sorted(order, key=lambda c: (got.filter(pl.col("claim_id") == c)["asof"][0], c))
        if "edited" in what or "inflated" in what:
            union = FraudHistory.from_rows(_overlay(history_rows, rows), history.options).features()
            want = _in_order(union, order)
            _assert_equal(got.drop(FROM_HISTORY), want.drop(FROM_HISTORY), what)
            compared["edited"] += 1
        else:
            assert got.schema == pl.Schema(SCHEMA)
            _assert_equal(got, _in_order(batch, order), what)
            compared[what.split(" (")[0]] += 1
    assert compared["edited"] >= 7, compared
    for kind in ("bare claim", "claim with context", "one patient's bundle", "collusion ring bundle"):
        assert compared[kind] > 0, compared


@pytest.mark.parametrize("when", ["after the history", "inside the history"])
def test_new_claims_get_what_the_batch_gives_them_over_history_and_request(
    when: str, cohort: Cohort, history: FraudHistory, batch: pl.DataFrame, history_rows: Rows
) -> None:
    """Copies of history claims under new ids: the same services and dates billed again, created on one day after
    the history's last (the service's case: one request, the copies count for each other) or a day after their
    originals (one request each). A new claim gets the record the batch gives it over history ∪ request, since
    nothing dated after a claim counts for it and the monthly statistics of its month hold only earlier months."""
    rng = random.Random(5)
    last = max(batch["asof"])
    picked = rng.sample(cohort.claims, 40)
    copies = []
    for n, claim in enumerate(picked):
        created = dt.date.fromisoformat(claim["created"][:10])
        later = (last - created).days + 20 if when == "after the history" else 1
        copies.append(_claim_copy(claim, f"n{n:03d}", later=later))
    requests = [_bundle(copies)] if when == "after the history" else copies
    records = []
    for body in requests:
        rows = _rows(body)
        assert rows is not None
        got = history.request_features(rows)
        union = FraudHistory.from_rows(_overlay(history_rows, rows), history.options).features()
        _assert_equal(got, _in_order(union, got["claim_id"].to_list()), when)
        # Scoring them twice gives the same records: the first scoring added nothing to the history.
        _assert_equal(history.request_features(rows), got, f"{when}, again")
        records.append(got)
    got = pl.concat(records)
    assert got.height == len(copies)
    # They were scored against the history: the original is an earlier claim with the same services and encounter.
    assert (got["dup_prior_same_service"] >= 1).all()
    assert (got["dup_prior_same_encounter"] >= 1).sum() >= 30
    assert got["peer_amount_median"].is_not_null().sum() >= 30


def test_a_bundle_replaces_the_history_encounter(cohort: Cohort, history: FraudHistory, batch: pl.DataFrame) -> None:
    """A Claim sent with its encounter (changed) and the encounter's observations (unchanged): the request's
    encounter is the one that counts, and the observations are not counted twice."""
    pseudonymizer = Pseudonymizer(KEY)
    claim = next(
        c
        for c in cohort.claims
        if (enc := _encounter_of(c)) in cohort.encounters
        and sum(r["resourceType"] == "Observation" for r in cohort.by_encounter.get(enc, [])) >= 2
        and cohort.encounters[enc].get("class", {}).get("code") == "AMB"
    )
    claim_id = pseudonymizer.id("Claim", claim["id"])
    before = batch.filter(pl.col("claim_id") == claim_id).row(0, named=True)
    assert before["has_encounter"] == 1.0 and before["encounter_observations"] >= 2 and before["setting"] == "AMB"
    encounter = copy.deepcopy(cohort.encounters[_encounter_of(claim) or ""])
    observations = [r for r in cohort.by_encounter[_encounter_of(claim) or ""] if r["resourceType"] == "Observation"]

    encounter["class"] = {**encounter["class"], "code": "EMER"}
    rows = _rows(_bundle([claim, encounter, *observations]))
    assert rows is not None
    after = history.request_features(rows).row(0, named=True)
    assert after["setting"] == "EMER"
    assert after["encounter_observations"] == before["encounter_observations"]
    assert after["records_near_service"] == before["records_near_service"]

    # The encounter dated after the claim was created: no longer a trace of it.
    late = (dt.date.fromisoformat(claim["created"][:10]) + dt.timedelta(days=3)).isoformat()
    encounter["period"] = {"start": late, "end": late}
    rows = _rows(_bundle([claim, encounter]))
    assert rows is not None
    after = history.request_features(rows).row(0, named=True)
    assert (after["has_encounter"], after["setting"], after["encounter_date_gap"]) == (0.0, "none", 0.0)
    assert after["records_near_service"] == before["records_near_service"] - 1
    # The history still has its own encounter.
    again = history.request_features(_rows(claim) or {}).row(0, named=True)
    assert again == before


def test_scoring_leaves_the_history_unchanged(cohort: Cohort, tables: Path) -> None:
    history = FraudHistory.load(tables, FraudFeatureOptions())
    before, size = history.features(), len(history)
    for _, body in list(_requests(cohort))[:40]:
        rows = _rows(body)
        if rows is not None:
            history.request_features(rows)
    copy_rows = _rows(_claim_copy(cohort.claims[0], "z001", days=400))
    assert copy_rows is not None
    first = history.request_features(copy_rows)
    assert first["dup_prior_same_service"][0] == 0.0  # the original is more than a week away
    _assert_equal(history.request_features(copy_rows), first, "a new claim scored twice")
    assert len(history) == size
    _assert_equal(history.features(), before, "the history after scoring")


def test_threads_share_one_history(tables: Path, bare_claims: list[tuple[str, Rows]]) -> None:
    """Requests from many threads on a fresh history (its monthly statistics built on demand) get what one thread
    gets."""
    sample = bare_claims[::3]
    history = FraudHistory.load(tables)
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = pl.concat(pool.map(lambda item: history.request_features(item[1]), sample))
    _assert_equal(got, _in_order(history.features(), [claim_id for claim_id, _ in sample]), "threads")


# --- without history -------------------------------------------------------------------------------------------


def test_a_request_without_history_is_its_own_history(cohort: Cohort) -> None:
    """``FraudHistory.empty(o).request_features(rows)`` equals the batch over the request's rows normalised by
    polars (:func:`fraud_tables.normalise`), under every option set."""
    compared: Counter[str] = Counter()
    fired: Counter[str] = Counter()
    rejected, claims_seen = [], 0
    for what, body in _requests(cohort):
        rows = _rows(body)
        if rows is None:
            rejected.append(what)
            continue
        big = "bundle" in what or "patients" in what or "edited" in what
        for name, opt in OPTIONS.items():
            if name == "almaty" and not big:
                continue
            want = FraudHistory.from_tables(normalise(table_frames(rows), opt.timezone), opt).features()
            got = FraudHistory.empty(opt).request_features(rows)
            _assert_equal(got, want, f"{what}, options {name}")
            _assert_equal(FraudHistory.from_rows(rows, opt).features(), want, f"{what}, options {name}, from_rows")
            compared[what.split(" (")[0]] += 1
            claims_seen += want.height
            fired.update(_non_neutral(want, opt))
    # The sample is large and varied enough, and was accepted by the service's checks.
    assert sum(compared.values()) >= 150, compared
    assert len(rejected) <= 3, rejected
    for kind in (
        "bare claim",
        "claim with context",
        "one patient's bundle",
        "collusion ring bundle",
        "edited: referral loop",
    ):
        assert compared[kind] > 0, kind
    assert sum(v for k, v in compared.items() if k.startswith("edited")) >= 8, compared
    assert claims_seen >= 1000
    _assert_every_feature_fired(fired)


def test_order_picks_claims_and_an_empty_history_has_none(cohort: Cohort) -> None:
    patient = max(cohort.claims_of, key=lambda p: len(cohort.claims_of[p]))
    rows = _rows(_bundle(cohort.patient_records(patient)[::-1]))
    assert rows is not None
    history = FraudHistory.empty(FraudFeatureOptions(duplicate_days=3))
    assert len(history) == 0 and history.options.duplicate_days == 3
    assert history.features().schema == pl.Schema(SCHEMA) and history.features().height == 0
    everything = history.request_features(rows)
    order = everything["claim_id"].to_list()
    assert len(order) >= 3 and everything["asof"].is_sorted()
    subset = history.request_features(rows, order=[order[2], "not-a-claim", order[0]])
    assert subset["claim_id"].to_list() == [order[2], order[0]]
    _assert_equal(subset, _in_order(everything, [order[2], order[0]]), "subset")
    assert len(FraudHistory.from_rows(rows)) == len(order)

"""Claim fraud features: one record per claim, from what was known on the claim's created date; one
implementation for the batch features stage and for the service.

Feature groups (each group is one kind of reason an investigator can check, see
:data:`~pipelines.features.fraud_schema.FEATURE_GROUPS`):

- ``phantom_billing``: is there a clinical trace (encounter, observations, procedures) behind the service?
- ``upcoding``: the claim total and service level against earlier claims with the same diagnosis and care
  setting (region and provider kind), abnormal findings documented, intensive-care days without a low oxygen
  saturation.
- ``price``: unit price and quantity against the earlier peer median of the same tariff code, region and kind.
- ``unbundling``: components of a package tariff (``codes.TARIFFS`` kind ``package``) billed separately to one
  patient by one provider on one day, and what that costs above the package.
- ``duplicate_claim``: an earlier claim of the same patient with the same services within a week, the same
  encounter billed before, an encounter of another provider or on another day.
- ``services_after_death``: services dated after a death recorded by the claim's date.
- ``excessive_volume``: the provider's services on the service day (claims known so far) per staff member and
  against its own earlier daily mean.
- ``collusion_ring``: the provider network (see :mod:`pipelines.features.fraud_graph`).
- ``amount``: the claim total and number of items.

No look-ahead: a claim's order is (created date, claim id); "earlier" claims come before it in that order and
"claims so far" include it; other records count when dated on or before the created date; peer medians, provider
baselines and the provider graphs come from monthly snapshots of the months before
(:mod:`pipelines.features.fraud_history`). Adding records dated after a claim never changes its features.

A :class:`FraudHistory` holds the Fund's records (the ingest tables), indexed, and never changes:

- :meth:`FraudHistory.features` gives every claim of the history its record (the features stage).
- :meth:`FraudHistory.request_features` scores the claims of one request (the service) against history ∪
  request: a request's record replaces the history's record with the same id (a claim by its claim id, with its
  items; an encounter, patient, organization, observation, procedure, condition or referral by its id) for this
  request only, and the request's claims count as claims for each other. Scoring never adds anything to the
  history (else a claim sent twice would be its own near-duplicate): the same request always gets the same
  records. The monthly statistics (peer medians, provider baselines, provider graphs) and the staff counts
  come from the history alone when it holds claims; a history without claims (:meth:`FraudHistory.empty`)
  makes the request its own history, so ``FraudHistory.empty(o).request_features(rows)`` equals
  ``FraudHistory.from_rows(rows, o).features()`` (for the claims asked for).

A claim the history holds, sent alone (its claims row and items), therefore gets exactly its batch record: every
feature counts only what precedes it in information order, and the request changes none of that.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.features.fraud_graph import reaches
from pipelines.features.fraud_history import Baselines, ClinicalRecord, GraphSnapshots, PeerMedians, Store, median
from pipelines.features.fraud_rows import (
    COMPONENT_OF,
    PACKAGE_CODES,
    Claim,
    Condition,
    Encounter,
    Item,
    Observation,
    Organization,
    Patient,
    Procedure,
    Referral,
    Row,
    Tables,
    coalesce,
    divide,
    tables_from_frames,
    tables_from_rows,
)
from pipelines.features.fraud_schema import (
    ABNORMAL_FINDINGS,
    ICU_SPO2_SUPPORT,
    SCHEMA,
    SPO2,
    TEMP,
    FraudFeatureOptions,
)
from pipelines.features.fraud_tables import FraudTables, load_fraud_tables

log = logging.getLogger(__name__)

Record = dict[str, Any]
_NO_DX: tuple[str | None, dt.date | None] = (None, None)


def _ratio(value: float, peer: float | None) -> float:
    """``value / peer`` clipped to [0, 1000]; 1 (neutral) without a peer median or for 0 / 0."""
    if peer is None:
        return 1.0
    r = divide(value, peer)
    return 1.0 if r != r else min(max(r, 0.0), 1000.0)


def _abnormal(o: Observation) -> bool:
    """A finding beyond its :data:`ABNORMAL_FINDINGS` threshold (a missing value is not)."""
    rule = ABNORMAL_FINDINGS.get(o.loinc_code)  # type: ignore[arg-type]
    v = o.value
    if rule is None or v is None:
        return False
    op, thr = rule
    return v >= thr if op == ">=" else v > thr if op == ">" else v < thr


def _first_dx(conditions: Sequence[Condition]) -> tuple[str | None, dt.date | None]:
    """The encounter's first diagnosis by (date, condition id), nulls last, with its date."""
    first = min(
        conditions,
        key=lambda c: (c.date is None, c.date or dt.date.min, c.condition_id is None, c.condition_id or ""),
    )
    return first.icd10_code, first.date


class _View:
    """The records one claim is scored against: the history alone, or with a request's records over it (a
    request record hides the history's record with the same id)."""

    __slots__ = ("_dx", "h", "r")

    def __init__(self, history: Store, request: Store | None, dx: Mapping[str, tuple[str | None, dt.date | None]]):
        self.h, self.r, self._dx = history, request, dx

    def encounter(self, key: str | None) -> Encounter | None:
        if key is None:
            return None
        if self.r is not None and (found := self.r.encounters.get(key)) is not None:
            return found
        return self.h.encounters.get(key)

    def patient(self, key: str | None) -> Patient | None:
        if key is None:
            return None
        if self.r is not None and (found := self.r.patients.get(key)) is not None:
            return found
        return self.h.patients.get(key)

    def organization(self, key: str | None) -> Organization | None:
        if key is None:
            return None
        if self.r is not None and (found := self.r.organizations.get(key)) is not None:
            return found
        return self.h.organizations.get(key)

    def _claims(self, index: str, key: Any) -> list[Claim]:
        hist: list[Claim] = getattr(self.h, index).get(key, [])
        if self.r is None:
            return hist
        replaced = self.r.by_id
        extra: list[Claim] = getattr(self.r, index).get(key, [])
        return [c for c in hist if c.claim_id not in replaced] + extra

    def claims_of_patient(self, key: str) -> list[Claim]:
        return self._claims("claims_of_patient", key)

    def claims_of_encounter(self, key: str) -> list[Claim]:
        return self._claims("claims_of_encounter", key)

    def claims_of_signature(self, key: tuple[str, str]) -> list[Claim]:
        return self._claims("claims_of_signature", key)

    def _items(self, index: str, key: Any) -> list[Item]:
        hist: list[Item] = getattr(self.h, index).get(key, [])
        if self.r is None:
            return hist
        replaced = self.r.by_id
        extra: list[Item] = getattr(self.r, index).get(key, [])
        return [i for i in hist if i.claim.claim_id not in replaced] + extra

    def services(self, key: tuple[str | None, dt.date]) -> list[Item]:
        return self._items("services", key)

    def day_items(self, key: tuple[str, str, dt.date]) -> list[Item]:
        return self._items("day_items", key)

    def observations_of(self, key: str) -> list[Observation]:
        hist = self.h.observations_of.get(key, [])
        if self.r is None:
            return hist
        ids = self.r.observation_ids
        return [o for o in hist if o.observation_id not in ids] + self.r.observations_of.get(key, [])

    def procedures_of(self, key: str) -> list[Procedure]:
        hist = self.h.procedures_of.get(key, [])
        if self.r is None:
            return hist
        ids = self.r.procedure_ids
        return [p for p in hist if p.procedure_id not in ids] + self.r.procedures_of.get(key, [])

    def records_of(self, key: str) -> list[ClinicalRecord]:
        hist = self.h.records_of.get(key, [])
        r = self.r
        if r is None:
            return hist
        kept = [x for x in hist if not self._replaced(x, r)]
        return kept + r.records_of.get(key, [])

    @staticmethod
    def _replaced(x: ClinicalRecord, r: Store) -> bool:
        if isinstance(x, Observation):
            return x.observation_id in r.observation_ids
        if isinstance(x, Procedure):
            return x.procedure_id in r.procedure_ids
        return x.encounter_id is not None and x.encounter_id in r.encounters

    def encounter_dx(self, key: str) -> tuple[str | None, dt.date | None]:
        r = self.r
        if r is None or (key not in r.conditions_of and not r.condition_ids):
            return self._dx.get(key, _NO_DX)
        ids = r.condition_ids
        merged = [c for c in self.h.conditions_of.get(key, []) if c.condition_id not in ids]
        merged += r.conditions_of.get(key, [])
        return _first_dx(merged) if merged else _NO_DX

    def _referrals(self, index: str, key: str) -> list[Referral]:
        hist: list[Referral] = getattr(self.h, index).get(key, [])
        if self.r is None:
            return hist
        ids = self.r.referral_ids
        extra: list[Referral] = getattr(self.r, index).get(key, [])
        return [x for x in hist if x.service_request_id not in ids] + extra

    def referrals_by_id(self, key: str) -> list[Referral]:
        return self._referrals("referrals_by_id", key)

    def referrals_of_encounter(self, key: str) -> list[Referral]:
        return self._referrals("referrals_of_encounter", key)

    def referrals_of_patient(self, key: str) -> list[Referral]:
        return self._referrals("referrals_of_patient", key)

    def link(self, referral: Referral) -> tuple[str, str] | None:
        """The referral as a link between organizations (from its encounter's provider to its performer); None
        without both ends, between one provider and itself, or without a date."""
        enc = self.encounter(referral.encounter_id)
        if enc is None:
            return None
        src, dst = enc.organization_id, referral.performer_id
        if src is None or dst is None or src == dst or referral.date is None:
            return None
        return src, dst


@dataclass(frozen=True, slots=True)
class _Context:
    """What a claim's features read of its provider, patient and encounter."""

    provider_kind: str
    provider_region: str
    patient_region: str | None
    deceased_date: dt.date | None
    dx: str
    setting: str
    encounter: Encounter | None


def _context(c: Claim, v: _View) -> _Context:
    """The provider's kind and region, the patient's region and death, the diagnosis (the claim's, else its
    encounter's first known by the claim's date) and the care setting (the class of its encounter)."""
    org = v.organization(c.provider_id)
    patient = v.patient(c.patient_id)
    enc = v.encounter(c.encounter_id)
    dx_code, dx_date = v.encounter_dx(c.encounter_id) if c.encounter_id is not None else _NO_DX
    known_dx = dx_code if dx_date is None or dx_date <= c.asof else None
    setting = enc.class_code if enc is not None and enc.date is not None and enc.date <= c.asof else None
    return _Context(
        provider_kind=coalesce(org.kind if org is not None else None, "unknown"),
        provider_region=coalesce(org.region if org is not None else None, "unknown"),
        patient_region=patient.region if patient is not None else None,
        deceased_date=patient.deceased_date if patient is not None else None,
        dx=coalesce(c.primary_diagnosis, known_dx, "none"),
        setting=coalesce(setting, "none"),
        encounter=enc,
    )


def _amount_keys(ctx: _Context) -> tuple[tuple[Any, ...], ...]:
    """Peer groups of a claim total, most specific first (the last three are the service level's)."""
    dx, setting, kind = ctx.dx, ctx.setting, ctx.provider_kind
    return (
        ("dsrk", dx, setting, ctx.provider_region, kind),
        ("dsk", dx, setting, kind),
        ("ds", dx, setting),
        ("d", dx),
    )


def _item_keys(code: str | None, ctx: _Context) -> tuple[tuple[Any, ...], ...]:
    """Peer groups of an item's unit price and quantity, most specific first."""
    return (("trk", code, ctx.provider_region, ctx.provider_kind), ("tk", code, ctx.provider_kind), ("t", code))


class FraudHistory:
    """The Fund's claims and records, indexed and immutable, that claims are scored against.

    Build one with :meth:`from_tables`, :meth:`load`, :meth:`from_rows` or :meth:`empty`. Its methods may be
    called from several threads: the monthly statistics it computes on demand are cached under locks.
    """

    def __init__(self, tables: Tables, options: FraudFeatureOptions) -> None:
        started = time.perf_counter()
        opt = self._options = options
        store = self._store = Store(tables, number=True)
        self._dx = {key: _first_dx(conds) for key, conds in store.conditions_of.items()}
        view = _View(store, None, self._dx)
        self._contexts = [_context(c, view) for c in store.claims]
        # Staff: distinct practitioners (null counts as one) of the active roles per organization (null too).
        staff_sets: dict[str | None, set[str | None]] = {}
        for role in store.roles:
            if role.active is None or role.active:
                staff_sets.setdefault(role.organization_id, set()).add(role.practitioner_id)
        self._staff = {org: len(s) for org, s in staff_sets.items()}
        self._median_staff = median([float(n) for n in self._staff.values()], False) if self._staff else None
        # Monthly statistics (events added in information order, so by created date).
        self._claim_peers = PeerMedians(2, window_days=opt.peer_window_days, min_count=opt.peer_min_count)
        self._item_peers = PeerMedians(2, window_days=opt.peer_window_days, min_count=opt.peer_min_count)
        self._baselines = Baselines(window_days=opt.peer_window_days)
        for c, ctx in zip(store.claims, self._contexts, strict=True):
            self._claim_peers.add(_amount_keys(ctx), c.asof, (c.total, c.level))
            for i in c.items:
                self._item_peers.add(_item_keys(i.tariff_code, ctx), c.asof, (i.unit_price, i.quantity))
                if i.tariff_kind != "inpatient":
                    self._baselines.add(c.provider_id, c.asof, i.serviced_date)
        links: list[tuple[dt.date, str, str]] = []
        for referral in tables.referrals:
            link = view.link(referral)
            if link is not None and referral.date is not None:
                links.append((referral.date, *link))
        links.sort(key=lambda x: x[0])
        self._graphs = GraphSnapshots(
            [(c.asof, c.provider_id, c.patient_id) for c in store.claims if c.provider_id is not None],
            links,
            window_days=opt.graph_window_days,
            min_shared=opt.min_shared,
        )
        log.debug("fraud history: %d claims indexed in %.2f s", len(store.claims), time.perf_counter() - started)

    # --- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_tables(cls, tables: FraudTables, options: FraudFeatureOptions | None = None) -> FraudHistory:
        """The history of normalised ingest frames (:func:`~pipelines.features.fraud_tables.normalise`)."""
        return cls(tables_from_frames(tables), options or FraudFeatureOptions())

    @classmethod
    def load(cls, tables_dir: Path, options: FraudFeatureOptions | None = None) -> FraudHistory:
        """The history of the ingest's tables folder (``<interim>/tables``).

        Raises:
            InputError: the folder, claims or claim items are missing.
        """
        opt = options or FraudFeatureOptions()
        return cls.from_tables(load_fraud_tables(Path(tables_dir), opt.timezone), opt)

    @classmethod
    def from_rows(cls, rows: Mapping[str, Sequence[Row]], options: FraudFeatureOptions | None = None) -> FraudHistory:
        """The history of flattened ingest rows (table name -> rows, ``deidentify_and_flatten(...).rows``); the
        tables the features do not read are ignored, a missing one is empty."""
        opt = options or FraudFeatureOptions()
        return cls(tables_from_rows(rows, opt.timezone), opt)

    @classmethod
    def empty(cls, options: FraudFeatureOptions | None = None) -> FraudHistory:
        """A history without records: each request is scored as its own history."""
        return cls(Tables(), options or FraudFeatureOptions())

    @property
    def options(self) -> FraudFeatureOptions:
        """The windows and thresholds the features are computed with."""
        return self._options

    def __len__(self) -> int:
        """The number of claims in the history."""
        return len(self._store.claims)

    # --- scoring ----------------------------------------------------------------------------------------------

    def features(self) -> pl.DataFrame:
        """The record of every claim of the history, in information order (created date, claim id).

        Returns:
            Columns and dtypes of :data:`~pipelines.features.fraud_schema.SCHEMA`: the ids, the categorical
            and numeric features, the provider statistics and the context columns for reason texts. Numeric
            features have no nulls except ``spo2_min`` and ``temp_max`` (not measured).
        """
        view = _View(self._store, None, self._dx)
        records = [self._record(c, ctx, view) for c, ctx in zip(self._store.claims, self._contexts, strict=True)]
        return pl.from_dicts(records, schema=SCHEMA) if records else pl.DataFrame(schema=SCHEMA)

    def request_features(self, rows: Mapping[str, Sequence[Row]], order: Sequence[str] | None = None) -> pl.DataFrame:
        """The records of one request's claims, scored against this history (see the module docstring).

        Args:
            rows: table name -> the request's flattened ingest rows (``deidentify_and_flatten(...).rows``); the
                tables the features do not read are ignored, a missing one is empty.
            order: when given, only these claim ids, in this order (ids without a claim in the request are left
                out); otherwise every claim of the request in information order.

        Returns:
            One row per claim with the columns and dtypes of :data:`~pipelines.features.fraud_schema.SCHEMA`.
        """
        if not self._store.claims:
            return FraudHistory.from_rows(rows, self._options)._subset(order)
        request = Store(tables_from_rows(rows, self._options.timezone), number=False)
        # Place each request claim in the history's information order: at the position of the history's claim it
        # replaces when it has the same (created date, id), else between the history's neighbours (in request
        # order among the request claims that fall between the same two).
        keys, n = self._store.keys, len(request.claims)
        for j, c in enumerate(request.claims):
            key = (c.asof, c.claim_id)
            i = bisect_left(keys, key)
            c.ord = i if i < len(keys) and keys[i] == key else i - 0.5 + (j + 1) / (2 * (n + 2))
        view = _View(self._store, request, self._dx)
        chosen = request.claims if order is None else [request.by_id[i] for i in order if i in request.by_id]
        return pl.from_dicts([self._record(c, _context(c, view), view) for c in chosen], schema=SCHEMA)

    def _subset(self, order: Sequence[str] | None) -> pl.DataFrame:
        """The records of the history's claims ``order`` (all when None), in that order."""
        if order is None:
            return self.features()
        view = _View(self._store, None, self._dx)
        found = self._store.by_id
        records = []
        for claim_id in order:
            c = found.get(claim_id)
            if c is not None:
                records.append(self._record(c, self._contexts[int(c.ord)], view))
        return pl.from_dicts(records, schema=SCHEMA)

    # --- one claim --------------------------------------------------------------------------------------------

    def _record(self, c: Claim, ctx: _Context, v: _View) -> Record:
        """Every feature of one claim."""
        opt = self._options
        asof, ord_ = c.asof, c.ord
        rec: Record = {
            "claim_id": c.claim_id,
            "provider_id": c.provider_id,
            "patient_id": c.patient_id,
            "created": c.created,
            "main_tariff": c.main_tariff,
            "provider_kind": ctx.provider_kind,
            "provider_region": ctx.provider_region,
            "claim_type": coalesce(c.type_code, "unknown"),
            "dx": ctx.dx,
            "setting": ctx.setting,
            "total": c.total,
            "item_count": c.item_count,
            "asof": asof,
            "service_start": c.service_start,
            "service_end": c.service_end,
        }

        # phantom_billing: the encounter, its observations and procedures, the patient's records near the service.
        enc = ctx.encounter
        enc_date = enc.date if enc is not None else None
        has = enc_date is not None and enc_date <= asof
        obs: list[Observation] = []
        procedures = 0
        if c.encounter_id is not None:
            obs = [o for o in v.observations_of(c.encounter_id) if o.date is not None and o.date <= asof]
            procedures = sum(1 for p in v.procedures_of(c.encounter_id) if p.date is not None and p.date <= asof)
        near = 0
        if c.patient_id is not None:
            window = dt.timedelta(days=opt.trace_days)
            lo, hi = c.service_start - window, min(c.service_end + window, asof)
            for x in v.records_of(c.patient_id):
                if lo <= x.date <= hi:  # type: ignore[operator]  # indexed records have a date
                    near += 1
        spo2 = [o.value for o in obs if o.loinc_code == SPO2 and o.value is not None]
        temp = [o.value for o in obs if o.loinc_code == TEMP and o.value is not None]
        spo2_min = float(min(spo2)) if spo2 else None
        org = enc.organization_id if enc is not None else None
        rec["has_encounter"] = float(has)
        rec["encounter_observations"] = float(len(obs))
        rec["encounter_procedures"] = float(procedures)
        rec["records_near_service"] = float(near)
        rec["no_clinical_trace"] = float(not has and near == 0)
        rec["abnormal_findings"] = float(sum(1 for o in obs if _abnormal(o)))
        rec["spo2_min"] = spo2_min
        rec["temp_max"] = float(max(temp)) if temp else None
        rec["encounter_other_provider"] = float(
            has and org is not None and c.provider_id is not None and org != c.provider_id
        )
        rec["encounter_date_gap"] = float(abs((c.service_start - enc_date).days)) if has else 0.0  # type: ignore[operator]

        # upcoding: total and service level against earlier claims of the same diagnosis and setting.
        keys = _amount_keys(ctx)
        peer = self._claim_peers.first(keys, c.month, 0)
        level_median = self._claim_peers.first(keys[1:], c.month, 1)
        rec["peer_amount_median"] = peer
        rec["amount_ratio_dx"] = _ratio(c.total, peer)
        rec["service_level"] = c.level
        rec["service_level_excess"] = 0.0 if level_median is None else c.level - level_median
        rec["icu_days"] = c.icu_days
        rec["icu_days_unsupported"] = c.icu_days if spo2_min is None or spo2_min >= ICU_SPO2_SUPPORT else 0.0

        # price: the largest unit-price and quantity ratios to the earlier peer medians of the same tariff.
        if c.items:
            ratios = []
            for i in c.items:
                item_keys = _item_keys(i.tariff_code, ctx)
                p_med = self._item_peers.first(item_keys, c.month, 0)
                q_med = self._item_peers.first(item_keys, c.month, 1)
                ratios.append((_ratio(i.unit_price, p_med), _ratio(i.quantity, q_med), i.tariff_code))
            # Largest ratio, then the smallest code (a null code first).
            by_price = min(ratios, key=lambda r: (-r[0], r[2] is not None, r[2] or ""))
            by_qty = min(ratios, key=lambda r: (-r[1], r[2] is not None, r[2] or ""))
            rec["price_ratio_max"], rec["price_peer_code"] = by_price[0], by_price[2]
            rec["quantity_ratio_max"], rec["qty_peer_code"] = by_qty[1], by_qty[2]
        else:
            rec["price_ratio_max"], rec["price_peer_code"] = 1.0, None
            rec["quantity_ratio_max"], rec["qty_peer_code"] = 1.0, None

        self._unbundling(c, v, rec)
        self._duplicates(c, v, rec)

        # services_after_death: days of service after a death recorded by the claim's date.
        death = ctx.deceased_date if ctx.deceased_date is not None and ctx.deceased_date <= asof else None
        days = 0 if death is None else max((c.service_end - death).days, 0)
        rec["after_death"] = float(days > 0)
        rec["days_after_death"] = float(days)
        rec["deceased_date"] = death

        # excessive_volume: the provider's services and patients on the claim's service days (claims so far) per
        # staff member and against its mean services per active day before the claim's month.
        counts, patients, ratios_vs = [], [], []
        for day in c.service_days:
            so_far = [i for i in v.services((c.provider_id, day)) if i.claim.ord <= ord_]
            counts.append(len(so_far))
            patients.append(len({i.claim.patient_id for i in so_far}))
            base = self._baselines.mean(c.provider_id, c.month) if c.provider_id is not None else None
            if base is not None:
                ratios_vs.append(len(so_far) / base)
        own = self._staff.get(c.provider_id) if c.provider_id is not None else None
        staff = max(float(coalesce(own, self._median_staff or 1.0)), 1.0)
        day_services = float(max(counts, default=0))
        rec["staff"] = staff
        rec["provider_day_services"] = day_services
        rec["services_per_staff"] = day_services / staff
        rec["provider_day_patients"] = float(max(patients, default=0))
        rec["volume_vs_baseline"] = float(max(ratios_vs)) if ratios_vs else 1.0

        self._network(c, ctx, v, rec)
        return rec

    def _unbundling(self, c: Claim, v: _View, rec: Record) -> None:
        """Package components billed to one patient by one provider on one day by the claims so far (the claim's
        own included), when the package itself was not billed that day."""
        groups = []  # (full, share, package, excess) per (service day, package)
        if c.patient_id is not None and c.provider_id is not None:
            for day in c.component_days:
                context = [i for i in v.day_items((c.patient_id, c.provider_id, day)) if i.claim.ord <= c.ord]
                billed = {i.tariff_code for i in context if i.tariff_code in PACKAGE_CODES}
                per_pkg: dict[str, tuple[set[str | None], list[float], int, float]] = {}
                for i in context:
                    for package in COMPONENT_OF.get(i.tariff_code, ()):
                        found = per_pkg.get(package.code)
                        if found is None:
                            found = per_pkg[package.code] = (set(), [], len(package.components), package.price_kzt)
                        found[0].add(i.tariff_code)
                        found[1].append(i.net)
                for code, (comps, nets, n, price) in per_pkg.items():
                    full = len(comps) == n and code not in billed
                    excess = max(sum(nets) - float(price), 0.0) if full else 0.0
                    groups.append((full, len(comps) / n, code, excess))
        if not groups:
            rec["package_component_share"] = rec["package_unbundled"] = rec["unbundling_excess_kzt"] = 0.0
            rec["unbundled_package"] = None
            return
        rec["package_component_share"] = max(g[1] for g in groups)
        rec["package_unbundled"] = float(any(g[0] for g in groups))
        rec["unbundling_excess_kzt"] = max(g[3] for g in groups)
        rec["unbundled_package"] = min(groups, key=lambda g: (not g[0], -g[1], g[2]))[2]

    def _duplicates(self, c: Claim, v: _View, rec: Record) -> None:
        """Earlier claims of the patient with the same set of services within ``duplicate_days``, and earlier
        claims of the same encounter."""
        window = self._options.duplicate_days
        same = same_provider = 0
        gap_min = None
        if c.patient_id is not None and c.signature is not None:
            for p in v.claims_of_signature((c.patient_id, c.signature)):
                gap = abs((p.service_start - c.service_start).days)
                if p.ord < c.ord and gap <= window:
                    same += 1
                    same_provider += p.provider_id is not None and p.provider_id == c.provider_id
                    gap_min = gap if gap_min is None else min(gap_min, gap)
        same_encounter = 0
        if c.encounter_id is not None:
            same_encounter = sum(1 for p in v.claims_of_encounter(c.encounter_id) if p.ord < c.ord)
        rec["dup_prior_same_service"] = float(same)
        rec["dup_prior_same_provider"] = float(same_provider)
        rec["dup_min_days"] = float(window + 1 if gap_min is None else gap_min)
        rec["dup_prior_same_encounter"] = float(same_encounter)
        rec["dup_prior_provider_same"] = same_provider > 0

    def _network(self, c: Claim, ctx: _Context, v: _View, rec: Record) -> None:
        """The patient's providers around the service, referrals in, out and through the claim's encounter,
        referral loops, and the provider's shared-patient and referral graphs of the window before its month."""
        opt = self._options
        g = self._graphs.get(c.month)
        provider = c.provider_id
        # The patient's claims so far within the window around the service: its providers and their pairs.
        near: list[tuple[str | None, int]] = []
        if c.patient_id is not None:
            for o in v.claims_of_patient(c.patient_id):
                gap = abs((o.service_start - c.service_start).days)
                if o.ord <= c.ord and gap <= opt.graph_window_days:
                    near.append((o.provider_id, gap))
        providers_90d = len({q for q, gap in near if gap <= opt.near_days}) if near else 1
        partner_pairs = []
        if provider is not None:
            for q, _ in near:
                if q is not None and q != provider and (pair := g.pairs.get((provider, q))) is not None:
                    partner_pairs.append(pair)
        # Referrals out of the claim's encounter known by its date, and the one it came in on.
        out_refs: list[str] = []
        if c.encounter_id is not None and provider is not None:
            for referral in v.referrals_of_encounter(c.encounter_id):
                link = v.link(referral)
                if link is not None and referral.date <= c.asof and link[1] != provider:  # type: ignore[operator]
                    out_refs.append(link[1])
        in_refs: list[str | None] = []
        if c.referral_id is not None:
            for referral in v.referrals_by_id(c.referral_id):
                enc = v.encounter(referral.encounter_id)
                if enc is not None:
                    in_refs.append(enc.organization_id)
        loop_link = False
        own = g.scc.get(provider) if provider is not None else None
        if own is not None and own[1] > 1:
            for other in (*out_refs, *in_refs):
                theirs = g.scc.get(other) if other is not None else None
                loop_link = loop_link or (theirs is not None and theirs[0] == own[0])
        rec["patient_providers_90d"] = float(providers_90d)
        rec["referral_in"] = float(c.referral_id is not None)
        rec["referral_out"] = float(len(out_refs))
        rec["referral_passthrough"] = float(c.referral_id is not None and len(out_refs) > 0)
        rec["referral_loop_link"] = float(loop_link)
        rec["patient_referral_cycle"] = float(self._referral_cycle(c, v))
        rec["pair_shared_patients"] = float(max(s for s, _ in partner_pairs)) if partner_pairs else 0.0
        rec["pair_shared_ratio"] = float(max(r for _, r in partner_pairs)) if partner_pairs else 0.0
        rec["provider_referral_scc"] = float(own[1]) if own is not None else 1.0
        rec["community_size"] = float(g.community.get(provider, 1))
        rec["provider_multi_provider_share"] = float(g.multi.get(provider, 0.0))
        # A claim without provider id has no provider region to compare.
        rec["out_of_region"] = float(
            ctx.patient_region is not None and provider is not None and ctx.patient_region != ctx.provider_region
        )

    def _referral_cycle(self, c: Claim, v: _View) -> bool:
        """The patient's referrals of the last ``cycle_days`` (by the claim's date) lead from the claim's provider
        back to it."""
        if c.patient_id is None:
            return False
        graph: dict[str, set[str]] = {}
        for referral in v.referrals_of_patient(c.patient_id):
            day = referral.date
            if day is None or day > c.asof or (c.asof - day).days > self._options.cycle_days:
                continue
            link = v.link(referral)
            if link is not None:
                graph.setdefault(link[0], set()).add(link[1])
        return bool(graph) and reaches(graph, c.provider_id, c.provider_id)

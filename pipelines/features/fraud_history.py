"""Indexes over the fraud records, and the monthly statistics of a history, with no look-ahead.

:class:`Store` indexes one set of records (a history, or one request) by the keys the features look up: a
patient's claims and clinical records, an encounter's observations, a provider's services of one day... so that
scoring a claim touches only its own keys.

Peer medians, provider baselines and the provider graphs are statistics of many claims. A claim reads the
snapshot of its month: the statistic of the events dated before that month began, within a trailing window, so
that it can only hold information older than the claim itself. Snapshots are computed when first asked for, per
month and key (a median of one peer group, the baseline of one provider) or per month (the provider graphs), and
cached; the caches are filled under a lock, so one history serves many threads.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from pipelines.features.fraud_graph import ProviderGraphs, provider_graphs
from pipelines.features.fraud_rows import (
    Claim,
    Condition,
    Encounter,
    Item,
    Observation,
    Organization,
    Patient,
    Procedure,
    Referral,
    Role,
    Tables,
)

Key = tuple[Any, ...]
ClinicalRecord = Encounter | Observation | Procedure


def _add(index: dict[Any, list[Any]], key: Any, value: Any) -> None:
    found = index.get(key)
    if found is None:
        index[key] = [value]
    else:
        found.append(value)


class Store:
    """Indexes of one set of normalised records; a null key is never indexed (a join never matches it), except
    where a null is a group of its own (the services of claims without provider)."""

    def __init__(self, t: Tables, *, number: bool) -> None:
        """Index ``t``; with ``number``, the claims' ``ord`` becomes their index in information order."""
        self.claims = sorted(t.claims, key=lambda c: (c.asof, c.claim_id))
        if number:
            for i, c in enumerate(self.claims):
                c.ord = i
        self.keys = [(c.asof, c.claim_id) for c in self.claims]
        self.by_id = {c.claim_id: c for c in self.claims}
        self.claims_of_patient: dict[str, list[Claim]] = {}
        self.claims_of_encounter: dict[str, list[Claim]] = {}
        self.claims_of_signature: dict[tuple[str, str], list[Claim]] = {}
        self.services: dict[tuple[str | None, dt.date], list[Item]] = {}  # non-inpatient items per provider, day
        self.day_items: dict[tuple[str, str, dt.date], list[Item]] = {}  # items per patient, provider and day
        for c in self.claims:
            if c.patient_id is not None:
                _add(self.claims_of_patient, c.patient_id, c)
                if c.signature is not None:
                    _add(self.claims_of_signature, (c.patient_id, c.signature), c)
            if c.encounter_id is not None:
                _add(self.claims_of_encounter, c.encounter_id, c)
            for item in c.items:
                if item.tariff_kind != "inpatient":
                    _add(self.services, (c.provider_id, item.serviced_date), item)
                if c.patient_id is not None and c.provider_id is not None:
                    _add(self.day_items, (c.patient_id, c.provider_id, item.serviced_date), item)
        self.encounters: dict[str | None, Encounter] = t.encounters
        self.patients: dict[str | None, Patient] = t.patients
        self.organizations: dict[str | None, Organization] = t.organizations
        self.roles: list[Role] = t.roles
        self.observations_of: dict[str, list[Observation]] = {}
        self.procedures_of: dict[str, list[Procedure]] = {}
        self.conditions_of: dict[str, list[Condition]] = {}  # with an ICD-10 code
        self.records_of: dict[str, list[ClinicalRecord]] = {}  # a patient's dated clinical records
        for e in t.encounters.values():
            if e.patient_id is not None and e.date is not None:
                _add(self.records_of, e.patient_id, e)
        for o in t.observations:
            if o.encounter_id is not None:
                _add(self.observations_of, o.encounter_id, o)
            if o.patient_id is not None and o.date is not None:
                _add(self.records_of, o.patient_id, o)
        for p in t.procedures:
            if p.encounter_id is not None:
                _add(self.procedures_of, p.encounter_id, p)
            if p.patient_id is not None and p.date is not None:
                _add(self.records_of, p.patient_id, p)
        for cond in t.conditions:
            if cond.icd10_code is not None and cond.encounter_id is not None:
                _add(self.conditions_of, cond.encounter_id, cond)
        self.referrals_by_id: dict[str, list[Referral]] = {}
        self.referrals_of_encounter: dict[str, list[Referral]] = {}
        self.referrals_of_patient: dict[str, list[Referral]] = {}
        for r in t.referrals:
            if r.service_request_id is not None:
                _add(self.referrals_by_id, r.service_request_id, r)
            if r.encounter_id is not None:
                _add(self.referrals_of_encounter, r.encounter_id, r)
            if r.patient_id is not None:
                _add(self.referrals_of_patient, r.patient_id, r)
        # Ids a request's records replace (a null id replaces nothing).
        self.observation_ids = {o.observation_id for o in t.observations} - {None}
        self.procedure_ids = {p.procedure_id for p in t.procedures} - {None}
        self.condition_ids = {c.condition_id for c in t.conditions} - {None}
        self.referral_ids = set(self.referrals_by_id)


def _window(days: Sequence[dt.date], month: dt.date, window_days: int | None) -> tuple[int, int]:
    """The slice of date-sorted events known before ``month`` began, within ``window_days`` before it."""
    lo = 0 if window_days is None else bisect_left(days, month - dt.timedelta(days=window_days))
    return lo, bisect_left(days, month)


def median(values: list[float], has_nan: bool) -> float:
    """The median of a non-empty list as polars takes it (NaN sorts last; an even count gives
    ``lo + (hi - lo) * 0.5``)."""
    s = sorted(values, key=lambda v: (math.isnan(v), v)) if has_nan else sorted(values)
    n = len(s)
    if n % 2:
        return float(s[n // 2])
    lo, hi = s[n // 2 - 1], s[n // 2]
    return float(lo + (hi - lo) * 0.5)


class _Group:
    __slots__ = ("days", "nan", "values")

    def __init__(self, n_values: int) -> None:
        self.days: list[dt.date] = []
        self.values: list[list[float]] = [[] for _ in range(n_values)]
        self.nan = [False] * n_values


class PeerMedians:
    """Medians of values among peer events known before a month began (within a trailing window).

    Events are added in date order under the keys of their peer groups (each key names its level, e.g.
    ``("code+region+kind", code, region, kind)``); a group needs ``min_count`` events in the window.
    """

    def __init__(self, n_values: int, *, window_days: int | None, min_count: int) -> None:
        self._n = n_values
        self._window = window_days
        self._min = min_count
        self._groups: dict[Key, _Group] = {}
        self._cache: dict[tuple[Key, dt.date, int], float | None] = {}
        self._lock = threading.Lock()

    def add(self, keys: Iterable[Key], day: dt.date, values: Sequence[float]) -> None:
        """One event (not after the events added before it) in each of the peer groups ``keys``."""
        for key in keys:
            g = self._groups.get(key)
            if g is None:
                g = self._groups[key] = _Group(self._n)
            g.days.append(day)
            for j, v in enumerate(values):
                g.values[j].append(v)
                if v != v:  # NaN
                    g.nan[j] = True

    def _median(self, key: Key, month: dt.date, which: int) -> float | None:
        cached = (key, month, which)
        try:
            return self._cache[cached]
        except KeyError:
            pass
        g = self._groups.get(key)
        out = None
        if g is not None:
            lo, hi = _window(g.days, month, self._window)
            if hi - lo >= self._min:
                out = median(g.values[which][lo:hi], g.nan[which])
        with self._lock:
            self._cache[cached] = out
        return out

    def first(self, keys: Iterable[Key], month: dt.date, which: int) -> float | None:
        """The median of value ``which`` in the first (most specific) of ``keys`` with enough events before
        ``month`` began; a key holding a null never matches. None when no group has enough."""
        for key in keys:
            if None in key:
                continue
            m = self._median(key, month, which)
            if m is not None:
                return m
        return None


class Baselines:
    """Each provider's mean services per active day among the services known before a month began."""

    def __init__(self, *, window_days: int | None) -> None:
        self._window = window_days
        self._known: dict[Hashable, tuple[list[dt.date], list[dt.date]]] = defaultdict(lambda: ([], []))
        self._cache: dict[tuple[Hashable, dt.date], float | None] = {}
        self._lock = threading.Lock()

    def add(self, provider: Hashable, asof: dt.date, day: dt.date) -> None:
        """A service on ``day`` of a claim created on ``asof`` (not before those added earlier)."""
        known, days = self._known[provider]
        known.append(asof)
        days.append(day)

    def mean(self, provider: Hashable, month: dt.date) -> float | None:
        """Services per day with services, over the trailing window before ``month`` (None: none known)."""
        cached = (provider, month)
        try:
            return self._cache[cached]
        except KeyError:
            pass
        out = None
        found = self._known.get(provider)
        if found is not None:
            lo, hi = _window(found[0], month, self._window)
            if hi > lo:
                out = (hi - lo) / len(set(found[1][lo:hi]))
        with self._lock:
            self._cache[cached] = out
        return out


class GraphSnapshots:
    """The provider graphs (:func:`~pipelines.features.fraud_graph.provider_graphs`) of the visits and referral
    links known before each month began, within a trailing window; built once per month."""

    def __init__(
        self,
        visits: Sequence[tuple[dt.date, Hashable, Hashable]],
        links: Sequence[tuple[dt.date, str, str]],
        *,
        window_days: int,
        min_shared: int,
    ) -> None:
        """``visits``: (created date, provider, patient) of claims; ``links``: (date, src, dst) of referrals;
        both in date order."""
        self._visits = visits
        self._visit_days = [v[0] for v in visits]
        self._links = links
        self._link_days = [x[0] for x in links]
        self._window = window_days
        self._min_shared = min_shared
        self._cache: dict[dt.date, ProviderGraphs] = {}
        self._lock = threading.Lock()

    def get(self, month: dt.date) -> ProviderGraphs:
        found = self._cache.get(month)
        if found is not None:
            return found
        with self._lock:
            found = self._cache.get(month)
            if found is None:
                lo, hi = _window(self._visit_days, month, self._window)
                llo, lhi = _window(self._link_days, month, self._window)
                found = self._cache[month] = provider_graphs(
                    ((p, q) for _, p, q in self._visits[lo:hi]),
                    ((s, d) for _, s, d in self._links[llo:lhi]),
                    self._min_shared,
                )
            return found

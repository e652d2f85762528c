"""The records the fraud features read, as plain Python objects: from ingest frames or from flattened rows.

Two ways in, one result (:class:`Tables`):

- :func:`tables_from_frames`: the :class:`~pipelines.features.fraud_tables.FraudTables` that
  :func:`~pipelines.features.fraud_tables.load_fraud_tables` normalised with polars (the batch path: the ingest's
  Parquet tables).
- :func:`tables_from_rows`: the flattened ingest rows of one request
  (:func:`pipelines.service.fhir_in.deidentify_and_flatten`), normalised here in plain Python with exactly the
  rules of :func:`~pipelines.features.fraud_tables.normalise` (local calendar dates, the first row per id,
  service dates that fall back on each other, item amounts filled in), because polars costs tens of
  microseconds per operation and a request has a handful of rows. ``tests/features/test_fraud_engine.py``
  checks that both give the same features.

Each claim carries what depends on it and its items only (service dates, its services' signature, level, main
tariff...), computed once here; what depends on other records (the diagnosis of its encounter, the provider's
kind...) is looked up when the claim is scored.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from pipelines import codes
from pipelines.features.fraud_schema import ICU_CODES, SERVICE_LEVELS
from pipelines.features.fraud_tables import FraudTables

Row = Mapping[str, Any]

PACKAGES = tuple(t for t in codes.TARIFFS.values() if t.kind == "package")
PACKAGE_CODES = frozenset(p.code for p in PACKAGES)
# Component tariff -> the packages it is part of.
COMPONENT_OF: dict[str | None, tuple[codes.Tariff, ...]] = {
    comp: tuple(p for p in PACKAGES if comp in p.components) for p in PACKAGES for comp in p.components
}
_ICU = frozenset(ICU_CODES)


@dataclass(slots=True, eq=False)
class Item:
    """A claim item (its claim's item with amounts and service date filled in)."""

    claim: Claim
    tariff_code: str | None
    quantity: float
    unit_price: float
    net: float
    serviced_date: dt.date
    tariff_kind: str  # codes.TARIFFS kind, "other" when the code is unknown


@dataclass(slots=True, eq=False)
class Claim:
    """A claim, its items and what follows from them alone.

    ``ord`` places the claim in information order, (asof, claim_id): every "earlier claim" or "claims so far"
    compares it. In a history it is the claim's index; a request's claim gets a position between the history's
    claims (see :mod:`pipelines.features.fraud_engine`).
    """

    claim_id: str
    patient_id: str | None
    provider_id: str | None
    encounter_id: str | None
    type_code: str | None
    created: dt.datetime
    asof: dt.date
    total: float
    primary_diagnosis: str | None
    referral_id: str | None
    service_start: dt.date
    service_end: dt.date
    items: list[Item] = field(default_factory=list)
    ord: float = 0
    month: dt.date = dt.date.min
    # From the items: the set of tariff codes billed ("A01+L01"; None without items), the highest service level,
    # intensive-care days, the tariff of the largest net, the service days (inpatient stays excluded) and the days
    # that bill a package component.
    signature: str | None = None
    level: float = 0.0
    icu_days: float = 0.0
    main_tariff: str = "none"
    item_count: float = 0.0
    service_days: tuple[dt.date, ...] = ()
    component_days: tuple[dt.date, ...] = ()

    @property
    def key(self) -> tuple[dt.date, str]:
        """Information order: created date, then claim id."""
        return (self.asof, self.claim_id)

    def finish(self) -> None:
        """Compute what follows from the claim's items (after all of them were added)."""
        self.month = self.asof.replace(day=1)
        items = self.items
        self.item_count = float(len(items))
        if not items:
            return
        self.signature = "+".join(sorted({i.tariff_code for i in items if i.tariff_code is not None}))
        levels = [SERVICE_LEVELS[i.tariff_code] for i in items if i.tariff_code in SERVICE_LEVELS]
        self.level = float(max(levels)) if levels else 0.0
        self.icu_days = float(sum(i.quantity for i in items if i.tariff_code in _ICU))
        # The item with the largest net (then the smallest code, nulls last) names the main tariff.
        top = min(items, key=lambda i: (-i.net, i.tariff_code is None, i.tariff_code or ""))
        self.main_tariff = "none" if top.tariff_code is None else top.tariff_code
        self.service_days = tuple({i.serviced_date: None for i in items if i.tariff_kind != "inpatient"})
        self.component_days = tuple(sorted({i.serviced_date for i in items if i.tariff_code in COMPONENT_OF}))


@dataclass(slots=True, eq=False)
class Encounter:
    encounter_id: str | None
    patient_id: str | None
    organization_id: str | None
    class_code: str | None
    date: dt.date | None


@dataclass(slots=True, eq=False)
class Observation:
    observation_id: str | None
    encounter_id: str | None
    patient_id: str | None
    loinc_code: str | None
    value: float | None
    date: dt.date | None


@dataclass(slots=True, eq=False)
class Procedure:
    procedure_id: str | None
    encounter_id: str | None
    patient_id: str | None
    date: dt.date | None


@dataclass(slots=True, eq=False)
class Condition:
    condition_id: str | None
    encounter_id: str | None
    icd10_code: str | None
    date: dt.date | None  # onset, else recorded date


@dataclass(slots=True, eq=False)
class Patient:
    patient_id: str | None
    deceased_date: dt.date | None
    region: str | None


@dataclass(slots=True, eq=False)
class Organization:
    organization_id: str | None
    kind: str | None
    region: str | None


@dataclass(slots=True, eq=False)
class Role:
    organization_id: str | None
    practitioner_id: str | None
    active: bool | None


@dataclass(slots=True, eq=False)
class Referral:
    """A ServiceRequest: a referral from the provider of its encounter to its performer."""

    service_request_id: str | None
    patient_id: str | None
    encounter_id: str | None
    performer_id: str | None
    date: dt.date | None


@dataclass(slots=True)
class Tables:
    """Normalised records: claims with a created date (first row per id) and their items; the other tables with
    local dates; encounters, patients and organizations first row per id (a null id is a key like any other)."""

    claims: list[Claim] = field(default_factory=list)
    encounters: dict[str | None, Encounter] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    procedures: list[Procedure] = field(default_factory=list)
    conditions: list[Condition] = field(default_factory=list)
    patients: dict[str | None, Patient] = field(default_factory=dict)
    organizations: dict[str | None, Organization] = field(default_factory=dict)
    roles: list[Role] = field(default_factory=list)
    referrals: list[Referral] = field(default_factory=list)


def coalesce(*values: Any) -> Any:
    """The first value that is not null (``pl.coalesce``)."""
    for value in values:
        if value is not None:
            return value
    return None


def divide(a: float, b: float) -> float:
    """``a / b`` as polars divides floats: a zero divisor gives inf, -inf or NaN instead of an error."""
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


@functools.lru_cache(maxsize=16)
def _zone(name: str) -> dt.tzinfo:
    """The time zone polars converts to: a fixed offset (``+05:00``) or an IANA name."""
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name)
    if m is None:
        return ZoneInfo(name)
    offset = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
    return dt.timezone(-offset if m.group(1) == "-" else offset)


def _local_date(value: Any, tz: dt.tzinfo) -> dt.date | None:
    """A UTC timestamp becomes its local calendar date (``fraud_tables._to_dates``); a date stays."""
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return aware.astimezone(tz).date()
    if isinstance(value, dt.date):
        return value
    return None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _add_item(claim: Claim, tariff: str | None, quantity: float, unit_price: float, net: float, day: dt.date) -> None:
    kind = codes.TARIFFS[tariff].kind if tariff in codes.TARIFFS else "other"
    claim.items.append(Item(claim, tariff, quantity, unit_price, net, day, kind))


def tables_from_rows(rows: Mapping[str, Sequence[Row]], timezone: str) -> Tables:
    """Normalise flattened ingest rows (table name -> rows) as :func:`fraud_tables.normalise` normalises frames.

    Claims without id or created date are dropped; the first row of a claim id wins; items of unknown claims are
    dropped. Service dates fall back on each other, then on the items' dates, last on the created date.
    """
    tz = _zone(timezone)
    by_id: dict[str, tuple[Claim, dt.date | None, dt.date | None]] = {}
    for r in rows.get("claims", ()):
        claim_id, created = r.get("claim_id"), r.get("created")
        if claim_id is None or created is None or claim_id in by_id:
            continue
        asof = _local_date(created, tz)
        if asof is None:
            continue
        claim = Claim(
            claim_id=claim_id,
            patient_id=r.get("patient_id"),
            provider_id=r.get("provider_id"),
            encounter_id=r.get("encounter_id"),
            type_code=r.get("type_code"),
            created=created,
            asof=asof,
            total=coalesce(_float(r.get("total")), 0.0),
            primary_diagnosis=r.get("primary_diagnosis"),
            referral_id=r.get("referral_id"),
            service_start=asof,
            service_end=asof,
        )
        by_id[claim_id] = (claim, _local_date(r.get("billable_start"), tz), _local_date(r.get("billable_end"), tz))
    raw_items: list[tuple[Claim, Row, dt.date | None]] = []
    spans: dict[str, list[dt.date]] = {}
    for r in rows.get("claim_items", ()):
        found = by_id.get(r.get("claim_id"))  # type: ignore[arg-type]
        if found is not None:
            day = _local_date(r.get("serviced_date"), tz)
            raw_items.append((found[0], r, day))
            if day is not None:
                spans.setdefault(found[0].claim_id, []).append(day)
    for claim, start, end in by_id.values():
        days = spans.get(claim.claim_id)
        i_start, i_end = (min(days), max(days)) if days else (None, None)
        claim.service_start = coalesce(start, i_start, end, claim.asof)
        claim.service_end = coalesce(end, i_end, start, claim.asof)
    for claim, r, day in raw_items:
        quantity = coalesce(_float(r.get("quantity")), 1.0)
        unit_price, net = _float(r.get("unit_price")), _float(r.get("net"))
        _add_item(
            claim,
            r.get("tariff_code"),
            quantity,
            coalesce(unit_price, None if net is None else divide(net, quantity), 0.0),
            coalesce(net, None if unit_price is None else unit_price * quantity, 0.0),
            coalesce(day, claim.service_start),
        )
    claims = [c for c, _, _ in by_id.values()]
    for c in claims:
        c.finish()

    def date(r: Row, col: str) -> dt.date | None:
        return _local_date(r.get(col), tz)

    t = Tables(claims=claims)
    for r in rows.get("encounters", ()):
        e = Encounter(
            r.get("encounter_id"),
            r.get("patient_id"),
            r.get("organization_id"),
            r.get("class_code"),
            date(r, "period_start"),
        )
        t.encounters.setdefault(e.encounter_id, e)
    t.observations = [
        Observation(
            r.get("observation_id"),
            r.get("encounter_id"),
            r.get("patient_id"),
            r.get("loinc_code"),
            _float(r.get("value")),
            date(r, "effective"),
        )
        for r in rows.get("observations", ())
    ]
    t.procedures = [
        Procedure(r.get("procedure_id"), r.get("encounter_id"), r.get("patient_id"), date(r, "performed_start"))
        for r in rows.get("procedures", ())
    ]
    t.conditions = [
        Condition(
            r.get("condition_id"),
            r.get("encounter_id"),
            r.get("icd10_code"),
            coalesce(date(r, "onset"), date(r, "recorded_date")),
        )
        for r in rows.get("conditions", ())
    ]
    for r in rows.get("patients", ()):
        p = Patient(r.get("patient_id"), date(r, "deceased_date"), r.get("region"))
        t.patients.setdefault(p.patient_id, p)
    for r in rows.get("organizations", ()):
        o = Organization(r.get("organization_id"), r.get("kind"), r.get("region"))
        t.organizations.setdefault(o.organization_id, o)
    t.roles = [
        Role(r.get("organization_id"), r.get("practitioner_id"), None if r.get("active") is None else bool(r["active"]))
        for r in rows.get("practitioner_roles", ())
    ]
    t.referrals = [
        Referral(
            r.get("service_request_id"),
            r.get("patient_id"),
            r.get("encounter_id"),
            r.get("performer_id"),
            date(r, "authored_on"),
        )
        for r in rows.get("service_requests", ())
    ]
    return t


def _rows(frame: Any, *columns: str) -> Iterable[tuple[Any, ...]]:
    return frame.select(columns).iter_rows()  # type: ignore[no-any-return]


def tables_from_frames(t: FraudTables) -> Tables:
    """The records of frames that :func:`fraud_tables.normalise` already normalised (local dates, filled
    amounts and service dates, first row per id); items of claims not in ``t.claims`` are dropped."""
    by_id: dict[str, Claim] = {}
    for claim_id, patient, provider, encounter, type_code, created, asof, start, end, total, dx, referral in _rows(
        t.claims,
        "claim_id",
        "patient_id",
        "provider_id",
        "encounter_id",
        "type_code",
        "created",
        "asof",
        "service_start",
        "service_end",
        "total",
        "primary_diagnosis",
        "referral_id",
    ):
        if claim_id not in by_id:
            by_id[claim_id] = Claim(
                claim_id, patient, provider, encounter, type_code, created, asof, total, dx, referral, start, end
            )
    for claim_id, tariff, quantity, unit_price, net, day in _rows(
        t.claim_items, "claim_id", "tariff_code", "quantity", "unit_price", "net", "serviced_date"
    ):
        claim = by_id.get(claim_id)
        if claim is not None:
            _add_item(claim, tariff, quantity, unit_price, net, day)
    claims = list(by_id.values())
    for c in claims:
        c.finish()
    out = Tables(claims=claims)
    for row in _rows(t.encounters, "encounter_id", "patient_id", "organization_id", "class_code", "date"):
        out.encounters.setdefault(row[0], Encounter(*row))
    obs = t.observations
    obs_ids = obs["observation_id"] if "observation_id" in obs.columns else [None] * obs.height
    out.observations = [
        Observation(oid, *row)
        for oid, row in zip(
            obs_ids, _rows(obs, "encounter_id", "patient_id", "loinc_code", "value", "date"), strict=True
        )
    ]
    proc = t.procedures
    proc_ids = proc["procedure_id"] if "procedure_id" in proc.columns else [None] * proc.height
    out.procedures = [
        Procedure(pid, *row)
        for pid, row in zip(proc_ids, _rows(proc, "encounter_id", "patient_id", "date"), strict=True)
    ]
    out.conditions = [
        Condition(*row) for row in _rows(t.conditions, "condition_id", "encounter_id", "icd10_code", "date")
    ]
    for row in _rows(t.patients, "patient_id", "deceased_date", "region"):
        out.patients.setdefault(row[0], Patient(*row))
    for row in _rows(t.organizations, "organization_id", "kind", "region"):
        out.organizations.setdefault(row[0], Organization(*row))
    out.roles = [Role(*row) for row in _rows(t.practitioner_roles, "organization_id", "practitioner_id", "active")]
    out.referrals = [
        Referral(*row)
        for row in _rows(t.service_requests, "service_request_id", "patient_id", "encounter_id", "performer_id", "date")
    ]
    return out

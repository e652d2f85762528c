"""The provider directory: polyclinics and hospitals per region, their practitioners and roles, the Fund (FSMS),
which providers commit which fraud patterns and which ones the Fund's audits review. Its size depends on the
settings, never on the number of patients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines import codes
from pipelines.synth.draws import Draws
from pipelines.synth.ids import IdFactory
from pipelines.synth.people import PersonName, make_name, region_centre
from pipelines.synth.spec import FRAUD_PATTERNS

_ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
# (role code, role display, specialty code, specialty display), SNOMED CT.
_ROLES = {
    "radiologist": ("66862007", "Radiologist", "394914008", "Radiology"),
    "polyclinic": ("62247001", "General practitioner", "394814009", "General practice"),
    "hospital": ("309343006", "Physician", "394802001", "General medicine"),
}
# Regions ordered by population, so that the largest get providers first when there are fewer than 20.
_REGIONS_BY_SIZE = (
    "ALA",
    "YUZ",
    "ALM",
    "AST",
    "SHY",
    "ZHA",
    "KAR",
    "AKT",
    "KUS",
    "KZY",
    "AKM",
    "MAN",
    "PAV",
    "VOS",
    "ATY",
    "ZHT",
    "ZAP",
    "ABA",
    "SEV",
    "ULY",
)
# Clean claims per patient-year, roughly; only sizes the excessive-volume burst days (not any rate).
_CLAIMS_PER_PATIENT_YEAR = 2.0
# Excessive-volume claims (4-6 services each) per practitioner on a burst day: about 25 services a head.
_VOLUME_CLAIMS_PER_STAFF_DAY = 5


@dataclass(frozen=True)
class Practitioner:
    """A practitioner working at one organization."""

    id: str
    identifier: str
    name: PersonName
    sex: str
    role: str  # radiologist | polyclinic | hospital
    ref: str
    role_id: str


@dataclass(frozen=True)
class Org:
    """A provider organization (polyclinic or hospital)."""

    index: int
    id: str
    identifier: str
    kind: str  # polyclinic | hospital
    region: str
    name: str
    name_latin: str
    ref: str
    practitioners: tuple[Practitioner, ...]

    @property
    def radiologist(self) -> Practitioner:
        """The practitioner who reads radiographs here."""
        return self.practitioners[0]

    def clinician(self, d: Draws) -> Practitioner:
        """A practitioner who sees patients (any but the radiologist, when there are others)."""
        staff = self.practitioners
        return staff[0] if len(staff) == 1 else staff[1 + d.below(len(staff) - 1)]


@dataclass(frozen=True)
class Directory:
    """All organizations and practitioners, the Fund, and the fraud assignment."""

    orgs: tuple[Org, ...]
    fsms_id: str
    fsms_ref: str
    polyclinics: Mapping[str, tuple[int, ...]]  # region -> org indices ('*' = all)
    hospitals: Mapping[str, tuple[int, ...]]
    fraud_orgs: tuple[int, ...]
    pattern_orgs: Mapping[str, tuple[int, ...]]  # pattern -> org indices that commit it
    ring: tuple[int, ...]  # collusion ring in referral order (each refers to the next, the last to the first)
    burst_days: Mapping[int, tuple[int, ...]] = field(default_factory=dict)  # excessive volume: org -> day ordinals
    audited: tuple[int, ...] = ()  # providers whose records audits review (registry checks cover every provider)

    def polyclinic_for(self, region: str, d: Draws) -> Org:
        """A polyclinic in the region, or anywhere when the region has none."""
        return self.orgs[d.pick(self.polyclinics.get(region) or self.polyclinics["*"])]

    def hospital_for(self, region: str, d: Draws) -> Org:
        """A hospital in the region, or anywhere when the region has none."""
        return self.orgs[d.pick(self.hospitals.get(region) or self.hospitals["*"])]

    def resources(self) -> list[dict[str, Any]]:
        """Organization (the Fund first), Practitioner and PractitionerRole resources."""
        out: list[dict[str, Any]] = [_fsms(self.fsms_id)]
        out.extend(_organization(o) for o in self.orgs)
        for org in self.orgs:
            out.extend(_practitioner(p) for p in org.practitioners)
        for org in self.orgs:
            out.extend(_role(p, org) for p in org.practitioners)
        return out


def build_directory(
    *,
    seed: int,
    n_organizations: int,
    practitioners_per_organization: int,
    fraud_provider_share: float,
    fraud_rates: Mapping[str, float],
    n_patients: int,
    start_day: int,
    end_day: int,
    bundle: bool,
    audited_provider_share: float = 1.0,
) -> Directory:
    """Make the provider directory.

    Args:
        seed: the cohort seed (the directory has its own random stream).
        n_organizations: number of providers (about one in three is a hospital).
        practitioners_per_organization: staff per provider (the first reads radiographs).
        fraud_provider_share: share of providers that commit fraud (at least one).
        fraud_rates: share of claims per pattern; used only to size the excessive-volume burst days.
        n_patients: cohort size; used only to size the excessive-volume burst days.
        start_day: first day of the window (ordinal).
        end_day: first day after the window (ordinal).
        bundle: whether references are conditional (bundle format) or ``Type/id`` (NDJSON).
        audited_provider_share: share of providers whose records the Fund's audits review, drawn whatever they
            bill (an audit plan, not a fraud detector).
    """
    d = Draws(np.random.default_rng([seed, 1 << 64]))
    ids = IdFactory(seed, "directory")
    fsms_id = ids.next()
    orgs: list[Org] = []
    per_region_kind: dict[tuple[str, str], int] = {}
    for i in range(n_organizations):
        kind = "hospital" if i % 3 == 2 else "polyclinic"
        region = _REGIONS_BY_SIZE[i % len(_REGIONS_BY_SIZE)]
        number = per_region_kind.get((region, kind), 0) + 1
        per_region_kind[(region, kind)] = number
        org_id, identifier = ids.next(), f"ORG{i + 1:04d}"
        staff = []
        for j in range(practitioners_per_organization):
            sex = "female" if d.chance(0.6) else "male"
            pid, pident = ids.next(), f"PR{i + 1:04d}{j + 1:03d}"
            pref = (
                f"Practitioner?identifier={codes.PRACTITIONER_ID_SYSTEM}|{pident}" if bundle else f"Practitioner/{pid}"
            )
            role = "radiologist" if j == 0 else kind
            staff.append(Practitioner(pid, pident, make_name(d, sex, region), sex, role, pref, ids.next()))
        english = codes.REGIONS[region][0]
        centre = region_centre(region)
        if kind == "hospital":
            name, latin = f"Многопрофильная больница №{number}, {centre}", f"Multidisciplinary Hospital No. {number}"
        else:
            name, latin = f"Городская поликлиника №{number}, {centre}", f"City Polyclinic No. {number}"
        oref = f"Organization?identifier={codes.ORG_ID_SYSTEM}|{identifier}" if bundle else f"Organization/{org_id}"
        orgs.append(Org(i, org_id, identifier, kind, region, name, f"{latin}, {english}", oref, tuple(staff)))

    polyclinics = _by_region([o for o in orgs if o.kind == "polyclinic"])
    hospitals = _by_region([o for o in orgs if o.kind == "hospital"])
    fraud_orgs, pattern_orgs, ring = _assign_fraud(d, n_organizations, fraud_provider_share)
    burst = _burst_days(
        d, pattern_orgs["excessive_volume"], fraud_rates, n_patients, start_day, end_day, practitioners_per_organization
    )
    # Drawn last, so that the audit plan never changes the rest of the directory.
    audit_order = sorted(range(n_organizations), key=lambda _: d.u())
    audited = tuple(sorted(audit_order[: round(audited_provider_share * n_organizations)]))
    fsms_ref = (
        f"Organization?identifier={codes.ORG_ID_SYSTEM}|{codes.FSMS_ORG_IDENTIFIER}"
        if bundle
        else f"Organization/{fsms_id}"
    )
    return Directory(
        tuple(orgs), fsms_id, fsms_ref, polyclinics, hospitals, fraud_orgs, pattern_orgs, ring, burst, audited
    )


def _by_region(orgs: list[Org]) -> dict[str, tuple[int, ...]]:
    out: dict[str, list[int]] = {}
    for o in orgs:
        out.setdefault(o.region, []).append(o.index)
    result = {k: tuple(v) for k, v in out.items()}
    result["*"] = tuple(o.index for o in orgs)
    return result


def _assign_fraud(
    d: Draws, n_orgs: int, share: float
) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]], tuple[int, ...]]:
    n_fraud = max(1, min(n_orgs, round(share * n_orgs)))
    order = sorted(range(n_orgs), key=lambda _: d.u())
    fraud = order[:n_fraud]
    ring = tuple(fraud[: min(3, n_fraud)])
    patterns: dict[str, tuple[int, ...]] = {"collusion_ring": ring}
    for pattern in FRAUD_PATTERNS:
        if pattern == "collusion_ring":
            continue
        k = 1 if n_fraud == 1 else d.between(1, 2)
        patterns[pattern] = tuple(sorted(sorted(fraud, key=lambda _: d.u())[:k]))
    others = [p for p in FRAUD_PATTERNS if p != "collusion_ring"]
    for org in fraud:
        if not any(org in orgs for orgs in patterns.values()):
            pattern = d.pick(others)
            patterns[pattern] = tuple(sorted((*patterns[pattern], org)))
    return tuple(sorted(fraud)), {p: patterns[p] for p in FRAUD_PATTERNS}, ring


def _burst_days(
    d: Draws,
    orgs: tuple[int, ...],
    rates: Mapping[str, float],
    n_patients: int,
    start_day: int,
    end_day: int,
    staff: int,
) -> dict[int, tuple[int, ...]]:
    # Concentrate each provider's excessive-volume claims on a few days, a few claims per staff member each day.
    total = sum(rates.values())
    years = (end_day - start_day) / 365.25
    expected = rates.get("excessive_volume", 0.0) * n_patients * _CLAIMS_PER_PATIENT_YEAR * years / max(1e-9, 1 - total)
    per_org = expected / max(1, len(orgs))
    n_days = max(1, min(end_day - start_day, round(per_org / (_VOLUME_CLAIMS_PER_STAFF_DAY * staff))))
    out = {}
    for org in orgs:
        days = {start_day + d.below(end_day - start_day) for _ in range(n_days)}
        out[org] = tuple(sorted(days))
    return out


# --- resources ------------------------------------------------------------------------------------------------


def _region_address(region: str, use: str) -> dict[str, Any]:
    return {
        "extension": [{"url": codes.REGION_EXTENSION, "valueCode": region}],
        "use": use,
        "city": region_centre(region),
        "state": region,
        "country": "KZ",
    }


def _fsms(fsms_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": fsms_id,
        "identifier": [{"system": codes.ORG_ID_SYSTEM, "value": codes.FSMS_ORG_IDENTIFIER}],
        "active": True,
        "type": [{"coding": [{"system": _ORG_TYPE, "code": "pay", "display": "Payer"}]}],
        "name": "НАО «Фонд социального медицинского страхования»",
        "alias": ["Social Health Insurance Fund", "FSMS", "ФСМС"],
        "address": [_region_address("AST", "work")],
    }


def _organization(org: Org) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": org.id,
        "extension": [{"url": codes.ORG_TYPE_EXTENSION, "valueCode": org.kind}],
        "identifier": [{"system": codes.ORG_ID_SYSTEM, "value": org.identifier}],
        "active": True,
        "type": [{"coding": [{"system": _ORG_TYPE, "code": "prov", "display": "Healthcare Provider"}]}],
        "name": org.name,
        "alias": [org.name_latin],
        "address": [_region_address(org.region, "work")],
    }


def _practitioner(p: Practitioner) -> dict[str, Any]:
    return {
        "resourceType": "Practitioner",
        "id": p.id,
        "identifier": [{"system": codes.PRACTITIONER_ID_SYSTEM, "value": p.identifier}],
        "active": True,
        "name": p.name.fhir(),
        "gender": p.sex,
    }


def _role(p: Practitioner, org: Org) -> dict[str, Any]:
    code, display, specialty, specialty_display = _ROLES[p.role]
    return {
        "resourceType": "PractitionerRole",
        "id": p.role_id,
        "active": True,
        "practitioner": {"reference": p.ref},
        "organization": {"reference": org.ref},
        "code": [{"coding": [{"system": codes.SNOMED, "code": code, "display": display}]}],
        "specialty": [{"coding": [{"system": codes.SNOMED, "code": specialty, "display": specialty_display}]}],
    }

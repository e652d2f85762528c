"""Fraud features on hand-built ingest tables (real ingest schemas): each signal, and no look-ahead."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from pipelines.errors import InputError
from pipelines.features.fraud import (
    CATEGORICAL_FEATURES,
    FEATURE_GROUPS,
    ID_COLUMNS,
    NUMERIC_FEATURES,
    RISK_DIRECTION,
    build_claim_features,
    claim_features,
)
from pipelines.features.fraud_graph import label_propagation, strongly_connected
from pipelines.features.fraud_tables import FraudTables, normalise
from pipelines.fhir.schema import TABLES

UTC = dt.UTC
START = dt.date(2024, 1, 1)


def pid(name: str) -> str:
    """A 32-hex pseudonym for a readable test name."""
    return hashlib.md5(name.encode()).hexdigest()


def _ts(day: dt.date, hour: int = 10) -> dt.datetime:
    # Local (UTC+5) clock time as the UTC timestamp ingest stores.
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=UTC) - dt.timedelta(hours=5)


class World:
    """A tiny health system: providers, staff, patients and what they billed, as ingest rows."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self._n = 0
        for org, kind, region, staff in (
            ("P1", "polyclinic", "ALA", 2),
            ("P2", "polyclinic", "ALA", 2),
            ("H1", "hospital", "ALA", 4),
            ("R1", "polyclinic", "KAR", 2),
            ("R2", "polyclinic", "AKT", 2),
            ("R3", "hospital", "PAV", 2),
        ):
            self.rows["organizations"].append(
                {"organization_id": pid(org), "kind": kind, "region": region, "is_fund": False}
            )
            for j in range(staff):
                self.rows["practitioner_roles"].append(
                    {
                        "practitioner_role_id": pid(f"role-{org}-{j}"),
                        "practitioner_id": pid(f"pr-{org}-{j}"),
                        "organization_id": pid(org),
                        "active": True,
                    }
                )

    def patient(self, name: str, region: str = "ALA", deceased: dt.date | None = None) -> None:
        self.rows["patients"].append(
            {
                "patient_id": pid(name),
                "region": region,
                "deceased": deceased is not None,
                "deceased_date": deceased,
            }
        )

    def _id(self, kind: str) -> str:
        self._n += 1
        return pid(f"{kind}-{self._n}")

    def visit(
        self,
        patient: str,
        org: str,
        day: dt.date,
        codes: list[str],
        *,
        encounter: bool = True,
        observations: dict[str, float] | None = None,
        dx: str = "J06.9",
        created_after: int = 2,
        klass: str = "AMB",
        referral: str | None = None,
        refer_to: str | None = None,
        claim: str | None = None,
        encounter_id: str | None = None,
        encounter_org: str | None = None,
        quantity: float = 1.0,
    ) -> str:
        """Document (optionally) and bill a visit; returns the claim id."""
        enc = encounter_id
        if encounter and enc is None:
            enc = self._id("enc")
            self.rows["encounters"].append(
                {
                    "encounter_id": enc,
                    "patient_id": pid(patient),
                    "organization_id": pid(encounter_org or org),
                    "class_code": klass,
                    "period_start": _ts(day),
                }
            )
            self.rows["conditions"].append(
                {"condition_id": self._id("cond"), "encounter_id": enc, "icd10_code": dx, "onset": _ts(day)}
            )
            for loinc, value in (observations or {"8310-5": 36.7, "8867-4": 72.0}).items():
                self.rows["observations"].append(
                    {
                        "observation_id": self._id("obs"),
                        "component_index": 0,
                        "patient_id": pid(patient),
                        "encounter_id": enc,
                        "loinc_code": loinc,
                        "value": value,
                        "effective": _ts(day, 11),
                    }
                )
            if refer_to:
                self.rows["service_requests"].append(
                    {
                        "service_request_id": pid(f"sr-{patient}-{org}-{day}"),
                        "patient_id": pid(patient),
                        "encounter_id": enc,
                        "performer_id": pid(refer_to),
                        "authored_on": _ts(day, 12),
                    }
                )
        cid = claim or self._id("claim")
        prices = {
            "A01": 4500.0,
            "A02": 7800.0,
            "A03": 14500.0,
            "L01": 2100.0,
            "L02": 2900.0,
            "L03": 1200.0,
            "L04": 4300.0,
            "I01": 6500.0,
            "P01": 15000.0,
            "P02": 9800.0,
            "H01": 28000.0,
            "H02": 95000.0,
        }
        total = sum(prices[c] * quantity for c in codes)
        created = day + dt.timedelta(days=created_after)
        self.rows["claims"].append(
            {
                "claim_id": cid,
                "patient_id": pid(patient),
                "encounter_id": enc,
                "provider_id": pid(org),
                "type_code": "professional",
                "created": dt.datetime(created.year, created.month, created.day, tzinfo=UTC),
                "billable_start": dt.datetime(day.year, day.month, day.day, tzinfo=UTC),
                "billable_end": dt.datetime(day.year, day.month, day.day, tzinfo=UTC),
                "total": total,
                "primary_diagnosis": None if encounter else dx,
                "referral_id": pid(referral) if referral else None,
                "item_count": len(codes),
            }
        )
        for seq, code in enumerate(codes, 1):
            self.rows["claim_items"].append(
                {
                    "claim_id": cid,
                    "item_sequence": seq,
                    "patient_id": pid(patient),
                    "provider_id": pid(org),
                    "encounter_id": enc,
                    "tariff_code": code,
                    "quantity": quantity,
                    "unit_price": prices[code],
                    "net": prices[code] * quantity,
                    "serviced_date": day,
                }
            )
        return cid

    def frames(self) -> dict[str, pl.DataFrame]:
        """Ingest-shaped frames (the real table schemas)."""
        return {
            name: pl.from_arrow(pa.Table.from_pylist(rows, schema=TABLES[name].schema))  # type: ignore[misc]
            for name, rows in self.rows.items()
        }

    def tables(self) -> FraudTables:
        return normalise(self.frames())


def background(w: World, n_patients: int = 8) -> None:
    """Ordinary care: GP visits at P1 and P2 over four months (peer history for the medians)."""
    for i in range(n_patients):
        w.patient(f"bg{i}")
        for m in range(4):
            day = START + dt.timedelta(days=30 * m + 3 * i)
            w.visit(f"bg{i}", "P1" if i % 2 else "P2", day, ["A01"])


def feats(w: World) -> pl.DataFrame:
    return claim_features(w.tables())


def row(df: pl.DataFrame, claim_id: str) -> dict[str, Any]:
    return df.filter(pl.col("claim_id") == claim_id).row(0, named=True)


def test_output_columns_and_no_nulls_in_features() -> None:
    w = World()
    background(w)
    out = feats(w)
    assert out.columns[: len(ID_COLUMNS)] == list(ID_COLUMNS)
    assert set(CATEGORICAL_FEATURES) | set(NUMERIC_FEATURES) <= set(out.columns)
    assert out.height == len(w.rows["claims"])
    nullable = {"spo2_min", "temp_max"}
    for col in NUMERIC_FEATURES:
        if col not in nullable:
            assert out[col].null_count() == 0, col
    assert set(RISK_DIRECTION) == set(NUMERIC_FEATURES)
    assert {f for g in FEATURE_GROUPS.values() for f in g} == set(NUMERIC_FEATURES)


def test_phantom_claim_has_no_clinical_trace() -> None:
    w = World()
    background(w)
    w.patient("x")
    ok = w.visit("x", "P1", dt.date(2024, 5, 6), ["A01"])
    ghost = w.visit("x", "P1", dt.date(2024, 5, 20), ["A02", "L01"], encounter=False, dx="R05")
    out = feats(w)
    assert row(out, ghost)["no_clinical_trace"] == 1.0
    assert row(out, ghost)["has_encounter"] == 0.0
    assert row(out, ghost)["dx"] == "R05"
    assert row(out, ok)["no_clinical_trace"] == 0.0
    assert row(out, ok)["encounter_observations"] == 2.0


def test_service_after_death_only_counts_a_death_known_by_the_claim_date() -> None:
    w = World()
    background(w)
    w.patient("d", deceased=dt.date(2024, 5, 1))
    after = w.visit("d", "P1", dt.date(2024, 5, 15), ["A01"])
    before = w.visit("d", "P1", dt.date(2024, 4, 20), ["A01"])
    out = feats(w)
    assert row(out, after)["after_death"] == 1.0
    assert row(out, after)["days_after_death"] == 14.0
    assert row(out, before)["after_death"] == 0.0


def test_duplicate_flags_the_later_claim_only() -> None:
    w = World()
    background(w)
    w.patient("x")
    first = w.visit("x", "P1", dt.date(2024, 5, 6), ["A01", "L01"], created_after=1)
    enc = w.rows["claims"][-1]["encounter_id"]
    again = w.visit("x", "P2", dt.date(2024, 5, 9), ["A01", "L01"], encounter_id=enc, created_after=3)
    out = feats(w)
    a, b = row(out, first), row(out, again)
    assert (a["dup_prior_same_service"], a["dup_prior_same_encounter"]) == (0.0, 0.0)
    assert (b["dup_prior_same_service"], b["dup_prior_same_encounter"]) == (1.0, 1.0)
    assert b["dup_min_days"] == 3.0
    assert b["dup_prior_same_provider"] == 0.0
    assert b["encounter_other_provider"] == 1.0
    assert b["encounter_date_gap"] == 3.0


def test_unbundled_package_components_cost_more_than_the_package() -> None:
    w = World()
    background(w)
    w.patient("dm")
    split = w.visit("dm", "P1", dt.date(2024, 5, 6), ["A02", "L03", "L04"], dx="E11.9")
    package = w.visit("dm", "P1", dt.date(2024, 6, 6), ["P02"], dx="E11.9")
    out = feats(w)
    r = row(out, split)
    assert r["package_unbundled"] == 1.0
    assert r["unbundling_excess_kzt"] == pytest.approx(7800 + 1200 + 4300 - 9800)
    assert r["unbundled_package"] == "P02"
    assert row(out, package)["package_unbundled"] == 0.0


def test_daily_volume_counts_only_that_day_and_claims_known_so_far() -> None:
    w = World()
    background(w)
    day = dt.date(2024, 5, 6)
    ids = []
    for i in range(6):
        w.patient(f"v{i}")
        ids.append(w.visit(f"v{i}", "R1", day, ["A02", "L01"], created_after=1 + i))
    w.patient("other-day")
    w.visit("other-day", "R1", day + dt.timedelta(days=1), ["A02"], created_after=1)
    out = feats(w)
    counts = [row(out, c)["provider_day_services"] for c in ids]
    assert counts == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]  # the other day's claim never counts
    assert row(out, ids[-1])["services_per_staff"] == pytest.approx(12 / 2)  # R1 has two staff
    assert row(out, ids[-1])["provider_day_patients"] == 6.0


def test_referral_loop_is_seen_at_the_claim_that_closes_it() -> None:
    w = World()
    background(w)
    w.patient("ring", region="ALA")
    d0 = dt.date(2024, 5, 2)
    w.visit("ring", "R1", d0, ["A02", "L01", "L02"], refer_to="R2")
    sr1 = f"sr-ring-R1-{d0}"
    d1 = d0 + dt.timedelta(days=10)
    b = w.visit("ring", "R2", d1, ["A02", "L01", "L02"], refer_to="R3", referral=sr1, created_after=1)
    sr2 = f"sr-ring-R2-{d1}"
    d2 = d1 + dt.timedelta(days=10)
    c = w.visit("ring", "R3", d2, ["A02", "L01", "L02"], refer_to="R1", referral=sr2, created_after=1)
    out = feats(w)
    assert row(out, c)["patient_referral_cycle"] == 1.0
    assert row(out, b)["patient_referral_cycle"] == 0.0  # the loop closes after b's date
    assert row(out, b)["referral_passthrough"] == 1.0
    assert row(out, c)["patient_providers_90d"] == 3.0
    assert row(out, c)["out_of_region"] == 1.0


def test_peer_median_comes_from_earlier_months_only() -> None:
    w = World()
    background(w)
    w.patient("u")
    up = w.visit("u", "P1", dt.date(2024, 5, 10), ["A03"])
    out = feats(w)
    r = row(out, up)
    assert r["peer_amount_median"] == 4500.0  # earlier J06.9 visits at ALA polyclinics billed A01
    assert r["amount_ratio_dx"] == pytest.approx(14500 / 4500)
    assert r["service_level_excess"] == 2.0
    first_month = out.filter(pl.col("asof") < dt.date(2024, 2, 1))
    assert (first_month["amount_ratio_dx"] == 1.0).all()  # no history yet: neutral ratio


def _truncate(t: FraudTables, cutoff: dt.date) -> FraudTables:
    """Only what was known on ``cutoff``: later claims, records and deaths removed."""
    claims = t.claims.filter(pl.col("asof") <= cutoff)
    return dataclasses.replace(
        t,
        claims=claims,
        claim_items=t.claim_items.join(claims.select("claim_id"), on="claim_id", how="semi"),
        encounters=t.encounters.filter(pl.col("date") <= cutoff),
        observations=t.observations.filter(pl.col("date") <= cutoff),
        procedures=t.procedures.filter(pl.col("date") <= cutoff),
        conditions=t.conditions.filter(pl.col("date") <= cutoff),
        service_requests=t.service_requests.filter(pl.col("date") <= cutoff),
        patients=t.patients.with_columns(
            pl.when(pl.col("deceased_date") <= cutoff).then(pl.col("deceased_date")).alias("deceased_date")
        ),
    )


def test_records_dated_after_a_claim_never_change_its_features() -> None:
    w = World()
    background(w)
    w.patient("x")
    w.patient("late", deceased=dt.date(2024, 6, 20))
    cutoff = dt.date(2024, 5, 31)
    w.visit("x", "P1", dt.date(2024, 5, 20), ["A02", "L03", "L04"], dx="E11.9", created_after=1)
    w.visit("late", "P1", dt.date(2024, 5, 25), ["A01"], created_after=1)
    # The future: a duplicate, more volume the same day, a referral loop, a death, new peers.
    w.visit("x", "P1", dt.date(2024, 5, 20), ["A02", "L03", "L04"], dx="E11.9", created_after=20)
    for i in range(5):
        w.patient(f"f{i}")
        w.visit(f"f{i}", "P1", dt.date(2024, 5, 25), ["A03", "L01"], created_after=10)
        w.visit(f"f{i}", "P1", dt.date(2024, 6, 10 + i), ["A03"])
    w.visit("late", "P2", dt.date(2024, 6, 25), ["A01"], refer_to="P1")
    full = feats(w).filter(pl.col("asof") <= cutoff)
    past = claim_features(_truncate(w.tables(), cutoff))
    assert past.height == full.height > 0
    # Same values, computed from other tables (other sizes, so other chunks and summation orders): floats within
    # float64 rounding, everything else exactly.
    assert_frame_equal(past, full, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_build_claim_features_reads_parquet_tables(tmp_path: Path) -> None:
    w = World()
    background(w, n_patients=3)
    for name, df in w.frames().items():
        pq.write_table(df.to_arrow(), tmp_path / f"{name}.parquet")
    out = build_claim_features(tmp_path)
    assert out.height == len(w.rows["claims"])
    assert out["created"].is_sorted()


def test_missing_claims_table_is_a_clear_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"claims\.parquet"):
        build_claim_features(tmp_path)


def test_strongly_connected_components_find_the_loop() -> None:
    comps = strongly_connected([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "d")])
    assert {n: size for n, (_, size) in comps.items()} == {"a": 3, "b": 3, "c": 3, "d": 1, "e": 1}
    assert comps["a"][0] == comps["b"][0] == comps["c"][0] == "a"


def test_label_propagation_separates_two_cliques() -> None:
    edges = [
        ("a", "b", 1.0),
        ("b", "c", 1.0),
        ("a", "c", 1.0),
        ("x", "y", 1.0),
        ("y", "z", 1.0),
        ("x", "z", 1.0),
    ]
    labels = label_propagation([*edges, ("c", "x", 0.1)])
    assert labels["a"] == labels["b"] == labels["c"]
    assert labels["x"] == labels["y"] == labels["z"]
    assert labels["a"] != labels["x"]

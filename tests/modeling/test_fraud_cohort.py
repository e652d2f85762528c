"""The fraud library end to end on a small built-in cohort (synthesize + ingest): features, model, reasons.

The cohort is small (400 patients, 18 months) with raised fraud rates so that every pattern appears in the
held-out months; it takes a few seconds to generate and ingest, once for the module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipelines.config import DEMO_PSEUDONYM_KEY, DirtyRates, FraudRates, IngestParams, SynthesizeParams
from pipelines.features.fraud import CATEGORICAL_FEATURES, NUMERIC_FEATURES, claim_features
from pipelines.features.fraud_labels import label_claims, load_fund_findings
from pipelines.features.fraud_splits import temporal_split
from pipelines.features.fraud_tables import FraudTables, load_fraud_tables
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.evaluate import evaluate_fraud
from pipelines.fraud.truth import load_truth
from pipelines.fraud.worklist import build_worklist
from pipelines.modeling.fraud_attribution import explain
from pipelines.modeling.fraud_baselines import RulesBaseline
from pipelines.modeling.fraud_model import FraudModel, train_fraud_model
from pipelines.stages import ingest, synthesize

FRAUD = FraudRates(
    phantom_billing=0.025,
    upcoding=0.03,
    unbundling=0.025,
    duplicate_claim=0.03,
    services_after_death=0.02,
    excessive_volume=0.025,
    collusion_ring=0.025,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fraud-cohort")
    params = SynthesizeParams(
        seed=11,
        n_patients=400,
        months=18,
        image_size=32,
        imaging_rate=0.15,
        deceased_rate=0.12,
        n_organizations=15,
        practitioners_per_organization=3,
        fraud_provider_share=0.4,
        # Unbiased audits (the same share of every pattern, at every provider), so that every pattern has labels
        # even in so small a cohort; the default cohort's biased audits are measured by `shipa evaluate fraud`.
        labelled_share=0.7,
        audited_provider_share=1.0,
        fraud=FRAUD,
        dirty=DirtyRates(**dict.fromkeys(DirtyRates.model_fields, 0.0)),
    )
    synthesize.run(params, root / "raw", progress=False)
    ingest.run(IngestParams(workers=1), root / "raw", root / "interim", key=None, progress=False)
    return root


@pytest.fixture(scope="module")
def frame(cohort: Path) -> pl.DataFrame:
    """Features with audit labels, ground truth (evaluation only) and a temporal split."""
    tables = cohort / "interim" / "tables"
    f = claim_features(load_fraud_tables(tables))
    truth = load_truth(cohort / "raw", Pseudonymizer(DEMO_PSEUDONYM_KEY))
    return (
        f.with_columns(label_claims(f["claim_id"], load_fund_findings(tables)))
        .join(truth, on="claim_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("labelled").fill_null(False),
            temporal_split(f["created"], test_months=8, val_months=2, gap_days=30),
        )
    )


@pytest.fixture(scope="module")
def model(frame: pl.DataFrame) -> FraudModel:
    tr, va = frame.filter(pl.col("split") == "train"), frame.filter(pl.col("split") == "val")
    return train_fraud_model(
        tr,
        tr["label"].to_numpy(),
        va,
        va["label"].to_numpy(),
        numeric=NUMERIC_FEATURES,
        categorical=CATEGORICAL_FEATURES,
        seed=0,
    )


def _truncate(t: FraudTables, cutoff: dt.date) -> FraudTables:
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


def test_cohort_features_ignore_everything_dated_later(cohort: Path) -> None:
    t = load_fraud_tables(cohort / "interim" / "tables")
    full = claim_features(t)
    for cutoff in (dt.date(2023, 8, 14), dt.date(2024, 2, 3)):
        past = claim_features(_truncate(t, cutoff))
        expected = full.filter(pl.col("asof") <= cutoff)
        assert past.height == expected.height > 100
        # Computed from smaller tables (other chunks and summation orders): floats within float64 rounding.
        assert_frame_equal(past, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_model_beats_rules_and_finds_every_pattern(frame: pl.DataFrame, model: FraudModel) -> None:
    test = frame.filter(pl.col("split") == "test")
    y = test["pattern"].is_not_null().cast(pl.Int8).to_numpy()
    k = int(y.sum())
    args = (y, test["total"].to_numpy(), test["pattern"].to_list(), test["labelled"].to_numpy())
    mine = evaluate_fraud(y, model.predict(test), *args[1:], k=k, n_boot=0)
    rules = evaluate_fraud(y, RulesBaseline.fit(frame).predict(test), *args[1:], k=k, n_boot=0)
    assert mine["metrics"]["auprc"]["value"] > rules["metrics"]["auprc"]["value"] + 0.1
    assert mine["metrics"][f"precision_at_{k}"]["value"] >= 0.8
    assert set(mine["recall_at_k_by_pattern"]) == set(FRAUD.model_dump())
    for pattern, rec in mine["recall_at_k_by_pattern"].items():
        assert rec["value"] >= 0.5, pattern
    assert mine["unlabelled_recall_at_k"]["n"] > 0
    assert mine["unlabelled_recall_at_k"]["value"] >= 0.7


# A claim can only be explained by evidence it carries on its date: the sample of each pattern is the claims
# whose own record shows it (a duplicate created before its original does not; an upcoded visit whose peers
# were themselves inflated does not look dear; an excessive-volume claim that also bills a package's
# components separately is unbundled too, and either reason is true).
EVIDENT = {
    "phantom_billing": pl.col("has_encounter") == 0,
    "upcoding": ((pl.col("service_level_excess") > 0) & (pl.col("amount_ratio_dx") > 1))
    | (pl.col("icu_days_unsupported") > 0),
    "unbundling": pl.col("package_unbundled") == 1,
    "duplicate_claim": (pl.col("dup_prior_same_service") > 0)
    | (pl.col("dup_prior_same_encounter") > 0)
    | (pl.col("encounter_other_provider") > 0),
    "services_after_death": pl.col("after_death") == 1,
    "excessive_volume": (pl.col("services_per_staff") > 2) & (pl.col("package_unbundled") == 0),
    "collusion_ring": (pl.col("referral_in") + pl.col("referral_out")) > 0,
}


def test_top_reason_names_the_injected_pattern(frame: pl.DataFrame, model: FraudModel) -> None:
    held_out = frame.filter(pl.col("split").is_in(["val", "test"]))
    for pattern, evident in EVIDENT.items():
        sample = held_out.filter((pl.col("pattern") == pattern) & evident).head(8)
        assert sample.height >= 2, pattern
        reasons = explain(model, sample, top_n=3)
        top = [rs[0].pattern if rs else None for rs in reasons]
        hits = sum(t == pattern for t in top)
        assert hits >= 0.8 * sample.height, (pattern, top)


def test_worklist_of_the_busiest_day(frame: pl.DataFrame, model: FraudModel) -> None:
    test = frame.filter(pl.col("split") == "test")
    day = test.group_by("asof").len().sort(["len", "asof"], descending=[True, False])["asof"][0]
    todays = test.filter(pl.col("asof") == day)
    s = model.predict(todays)
    reasons: list[Any] = explain(model, todays, top_n=3)
    no_rules = [[] for _ in range(todays.height)]  # the model's k alone (rule hits: tests/fraud)
    wl = build_worklist(todays, s, reasons, date=day, k=3, rule_hits=no_rules)
    assert wl.height == 3
    assert wl["probability"].to_list() == sorted(s, reverse=True)[:3]
    money = wl.join(todays.select("claim_id", "total"), on="claim_id", maintain_order="left")
    assert np.array_equal(money["amount_kzt"].to_numpy(), money["total"].to_numpy())
    flagged = wl.filter(pl.col("probability") > 0.5)
    assert (flagged["reason_codes"].str.len_chars() > 0).all()

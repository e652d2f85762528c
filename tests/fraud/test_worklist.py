"""The day's worklist: rule hits whatever the model says, the model's cases under k and the cut-off together,
risk bands, an empty day, the provider summary; and the acceptance check on the default cohort's test months."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.fraud.reason_texts import Reason
from pipelines.fraud.worklist import (
    SUMMARY_COLUMNS,
    WORKLIST_COLUMNS,
    NotPseudonymousError,
    RiskBands,
    build_worklist,
    provider_summary,
    select_cases,
    write_worklist,
)

REPO = Path(__file__).resolve().parents[2]
DAY = dt.date(2024, 10, 1)


def _id(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _claims(rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Claim records of ``DAY`` (unless a row says otherwise): claim ``c<i>``, provider ``p<provider>``."""
    base = {"days_after_death": 0.0, "package_unbundled": 0.0, "encounter_other_provider": 0.0,
            "encounter_date_gap": 0.0, "asof": DAY, "provider": "a", "total": 1000.0}  # fmt: skip
    out = []
    for i, r in enumerate(rows):
        row = {**base, **r}
        out.append(
            {
                "claim_id": _id(f"c{i}"),
                "provider_id": _id(f"p{row.pop('provider')}"),
                "patient_id": _id(f"patient{i}"),
                **row,
            }
        )
    return pl.DataFrame(out)


def _reasons(n: int) -> list[list[Reason]]:
    return [
        [Reason(code="HIGH_AMOUNT", group="amount", weight=1.0, kk=f"kk{i}", ru=f"ru{i}", en=f"en{i}")]
        for i in range(n)
    ]


def test_cutoff_and_k_together() -> None:
    p = [0.9, 0.6, 0.3, 0.15, 0.05, 0.099]
    df = _claims([{} for _ in p])
    top2 = build_worklist(df, p, _reasons(len(p)), date=DAY, k=2, cutoff=0.1)
    assert top2["probability"].to_list() == [0.9, 0.6]
    assert top2["rank"].to_list() == [1, 2]
    above = build_worklist(df, p, _reasons(len(p)), date=DAY, k=10, cutoff=0.1)
    assert above["probability"].to_list() == [0.9, 0.6, 0.3, 0.15]  # fewer than k: none below the cut-off
    assert above["band"].to_list() == ["high", "high", "moderate", "moderate"]
    assert above["reasons_en"].to_list() == ["en0", "en1", "en2", "en3"]
    assert list(above.columns) == list(WORKLIST_COLUMNS)
    everyone = build_worklist(df, p, _reasons(len(p)), date=DAY, k=10)  # no cut-off: the k most probable
    assert everyone.height == len(p)


def test_a_rule_hit_below_the_cutoff_is_listed_first_with_the_models_probability() -> None:
    p = [0.9, 0.02, 0.6, 0.3]
    df = _claims([{}, {"days_after_death": 3.0}, {}, {"encounter_date_gap": 1.0}])
    wl = build_worklist(df, p, _reasons(4), date=DAY, k=1, cutoff=0.1)
    # Both rule hits (k does not count them), by probability; then the model's single most probable claim.
    assert wl["claim_id"].to_list() == [_id("c3"), _id("c1"), _id("c0")]
    assert wl["probability"].to_list() == [0.3, 0.02, 0.9]  # unchanged by the rule
    assert wl["band"].to_list() == ["moderate", "low", "high"]
    assert wl["rule_hits"].to_list() == ["ENCOUNTER_MISMATCH", "SERVICE_AFTER_DEATH", ""]
    assert wl["rules_en"][1] == "Service dated 3 days after the recorded death."
    assert wl["rules_ru"][1] == "Услуга записана через 3 дня после зарегистрированной смерти."
    assert wl["rules_en"][2] == ""
    assert wl["reason_codes"].to_list() == ["HIGH_AMOUNT"] * 3


def test_a_day_without_a_case_is_an_empty_list_with_its_header(tmp_path: Path) -> None:
    df = _claims([{}, {}, {"asof": DAY + dt.timedelta(days=1), "days_after_death": 5.0}])
    wl = build_worklist(df, [0.01, 0.05, 0.9], _reasons(3), date=DAY, k=5, cutoff=0.1)
    assert wl.height == 0  # the other day's rule hit does not count
    assert list(wl.columns) == list(WORKLIST_COLUMNS)
    _, csv = write_worklist(wl, tmp_path)
    assert csv.read_text(encoding="utf-8").strip() == ",".join(WORKLIST_COLUMNS)
    summary = provider_summary(wl)
    assert summary.height == 0 and list(summary.columns) == list(SUMMARY_COLUMNS)


def test_only_the_days_claims_and_ties_by_amount_then_id() -> None:
    df = _claims([{"total": 10.0}, {"total": 30.0}, {"asof": DAY - dt.timedelta(days=1)}, {"total": 30.0}])
    wl = build_worklist(df, [0.5, 0.5, 0.99, 0.5], _reasons(4), date=DAY, k=3, cutoff=0.1)
    assert wl["claim_id"].to_list() == [*sorted([_id("c1"), _id("c3")]), _id("c0")]
    assert (wl["date"] == DAY).all()


def test_risk_band_cutoffs() -> None:
    bands = RiskBands(moderate=0.1, high=0.5)
    assert bands.bands([0.0, 0.0999, 0.1, 0.4999, 0.5, 1.0]) == ["low", "low", "moderate", "moderate", "high", "high"]
    assert RiskBands(moderate=0.2, high=0.3).band(0.25) == "moderate"
    with pytest.raises(ValueError, match="0 < moderate < high <= 1"):
        RiskBands(moderate=0.5, high=0.5)


def test_provider_summary_adds_up() -> None:
    p = [0.9, 0.02, 0.6, 0.3, 0.2, 0.01]
    df = _claims(
        [
            {"provider": "a", "total": 100.0},
            {"provider": "a", "total": 50.0, "package_unbundled": 1.0},
            {"provider": "b", "total": 70.0},
            {"provider": "b", "total": 30.0},
            {"provider": "c", "total": 5.0},
            {"provider": "c", "total": 1.0},  # below the cut-off, no rule: not a case
        ]
    )
    wl = build_worklist(df, p, _reasons(6), date=DAY, k=10, cutoff=0.1)
    summary = provider_summary(wl)
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    rows = {r["provider_id"]: r for r in summary.iter_rows(named=True)}
    a, b, c = rows[_id("pa")], rows[_id("pb")], rows[_id("pc")]
    assert summary["provider_id"][0] == _id("pa")  # the provider with a rule hit first
    assert (a["cases"], a["rule_hits"], a["amount_kzt"], a["max_probability"]) == (2, 1, 150.0, 0.9)
    assert (a["cases_high"], a["cases_moderate"], a["cases_low"]) == (1, 0, 1)
    assert (b["cases"], b["rule_hits"], b["amount_kzt"], b["max_probability"]) == (2, 0, 100.0, 0.6)
    assert (c["cases"], c["amount_kzt"], c["cases_moderate"]) == (1, 5.0, 1)
    assert summary["cases"].sum() == wl.height
    assert summary["amount_kzt"].sum() == wl["amount_kzt"].sum()
    assert summary["rule_hits"].sum() == (wl["rule_hits"] != "").sum()
    assert (summary["cases_high"] + summary["cases_moderate"] + summary["cases_low"]).to_list() == summary[
        "cases"
    ].to_list()


def test_refuses_non_pseudonymous_ids_and_bad_arguments() -> None:
    df = _claims([{}, {}])
    leaked = df.with_columns(pl.lit("870412301234").alias("patient_id"))
    with pytest.raises(NotPseudonymousError) as err:
        build_worklist(leaked, [0.5, 0.5], _reasons(2), date=DAY, k=1)
    assert "870412301234" not in str(err.value)
    with pytest.raises(ValueError, match="k must be at least 1"):
        build_worklist(df, [0.5, 0.5], _reasons(2), date=DAY, k=0)
    with pytest.raises(ValueError, match=r"cutoff must be within \[0, 1\]"):
        build_worklist(df, [0.5, 0.5], _reasons(2), date=DAY, k=1, cutoff=1.5)
    with pytest.raises(ValueError, match="one entry per record"):
        build_worklist(df, [0.5], _reasons(2), date=DAY, k=1)


def test_every_rule_hit_of_the_test_months_is_on_its_days_list() -> None:
    """Acceptance: every services-after-death claim and every exact duplicate of the test months is listed, as a
    rule hit, with the model's own probability beside it."""
    dataset = REPO / "data" / "processed" / "fraud" / "dataset.parquet"
    model_dir = REPO / "models" / "fraud" / "train" / "model"
    truth_file = REPO / "data" / "raw" / "manifest" / "fraud_truth.csv"
    if not (dataset.exists() and model_dir.exists() and truth_file.exists()):
        pytest.skip("the default cohort's features, model and truth are not here (run `make run`)")
    from pipelines.config import DEMO_PSEUDONYM_KEY
    from pipelines.fhir.pseudonym import Pseudonymizer
    from pipelines.fraud.rules import any_hit
    from pipelines.fraud.truth import load_truth
    from pipelines.modeling.fraud_model import load_fraud_model, score

    truth = load_truth(REPO / "data" / "raw", Pseudonymizer(DEMO_PSEUDONYM_KEY))
    test = (
        pl.read_parquet(dataset)
        .filter(pl.col("split") == "test")
        .join(truth, on="claim_id", how="left", maintain_order="left")
    )
    p = score(load_fraud_model(model_dir), test)
    hit = any_hit(test).to_numpy()
    listed: dict[str, tuple[str, float]] = {}
    for day in test["asof"].unique().sort().to_list():
        rows = (test["asof"] == day).to_numpy()
        todays = test.filter(pl.Series(rows))
        wl = build_worklist(todays, p[rows], [[] for _ in range(todays.height)], date=day, k=20, cutoff=0.1)
        listed.update({r["claim_id"]: (r["rule_hits"], r["probability"]) for r in wl.iter_rows(named=True)})
    after_death = test.filter(pl.col("pattern") == "services_after_death")["claim_id"].to_list()
    assert after_death and all("SERVICE_AFTER_DEATH" in listed[c][0] for c in after_death)
    ruled = test.filter(pl.Series(hit))
    assert all(listed[c][0] for c in ruled["claim_id"])
    dup = test.filter(pl.col("pattern") == "duplicate_claim")["claim_id"].to_list()
    assert dup and all("EXACT_DUPLICATE" in listed[c][0] for c in dup)
    probability = dict(zip(test["claim_id"].to_list(), p.tolist(), strict=True))
    assert all(np.isclose(listed[c][1], probability[c], rtol=0, atol=0) for c in ruled["claim_id"])


def test_select_cases_orders_rules_then_model() -> None:
    df = _claims([{}, {}, {}])
    rows = select_cases(df, [0.2, 0.9, 0.05], [False, False, True], date=DAY, k=1, cutoff=0.1)
    assert rows == [2, 1]

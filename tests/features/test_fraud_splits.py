"""Fraud splits, audit labels and the evaluation-only ground truth."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pipelines.errors import InputError
from pipelines.features.fraud_labels import finding_patterns, label_claims
from pipelines.features.fraud_splits import provider_split, split_column, temporal_split
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.fraud.truth import load_truth


def _days(start: dt.date, end: dt.date) -> pl.Series:
    return pl.Series("created", pl.date_range(start, end, "1d", eager=True))


def test_temporal_split_train_val_gap_test_in_time_order() -> None:
    dates = _days(dt.date(2023, 1, 1), dt.date(2024, 12, 31))
    split = temporal_split(dates, test_months=6, val_months=3, gap_days=30)
    df = pl.DataFrame({"d": dates, "split": split})
    bounds = df.group_by("split").agg(pl.col("d").min().alias("lo"), pl.col("d").max().alias("hi")).sort("lo")
    assert bounds["split"].to_list() == ["train", "val", "gap", "test"]
    rows = {r["split"]: r for r in bounds.iter_rows(named=True)}
    assert rows["test"]["lo"] == dt.date(2024, 7, 1)
    assert rows["gap"]["lo"] == dt.date(2024, 6, 1) and rows["gap"]["hi"] == dt.date(2024, 6, 30)
    assert rows["val"]["lo"] == dt.date(2024, 3, 1)
    assert rows["train"]["hi"] == dt.date(2024, 2, 29)


def test_temporal_split_accepts_timestamps_and_an_explicit_start() -> None:
    ts = pl.Series([dt.datetime(2024, m, 15, tzinfo=dt.UTC) for m in range(1, 13)], dtype=pl.Datetime("us", "UTC"))
    split = temporal_split(ts, test_start=dt.date(2024, 10, 1), val_months=2, gap_days=0)
    assert split.to_list() == ["train"] * 7 + ["val"] * 2 + ["test"] * 3


def test_temporal_split_refuses_an_empty_train() -> None:
    with pytest.raises(ValueError, match="train"):
        temporal_split(_days(dt.date(2024, 1, 1), dt.date(2024, 2, 1)), test_months=3)


def test_provider_split_keeps_providers_whole_and_is_seeded() -> None:
    providers = pl.Series([f"p{i % 20}" for i in range(400)])
    labels = pl.Series([int(i % 20 < 4) for i in range(400)])
    a = provider_split(providers, val=0.2, test=0.2, seed=5, labels=labels)
    b = provider_split(providers, val=0.2, test=0.2, seed=5, labels=labels)
    c = provider_split(providers, val=0.2, test=0.2, seed=6, labels=labels)
    assert a.to_list() == b.to_list() and a.to_list() != c.to_list()
    per = (
        pl.DataFrame({"p": providers, "s": a, "y": labels})
        .group_by("p")
        .agg(pl.col("s").n_unique().alias("n"), pl.col("s").first(), pl.col("y").max())
    )
    assert (per["n"] == 1).all()
    assert per.filter(pl.col("y") == 1)["s"].n_unique() > 1  # positive providers spread over splits


def test_split_column_dispatches_on_kind() -> None:
    df = pl.DataFrame({"created": _days(dt.date(2023, 1, 1), dt.date(2023, 12, 31))}).with_columns(
        pl.lit("p").alias("provider_id")
    )
    assert split_column(df, kind="temporal", test_months=2, val_months=1, gap_days=0).name == "split"
    assert set(split_column(df, kind="provider", val=0.0, test=0.0)) == {"train"}
    with pytest.raises(ValueError, match="kind"):
        split_column(df, kind="random")


def test_labels_respect_the_finding_date() -> None:
    findings = pl.DataFrame(
        {
            "claim_id": ["a", "b"],
            "provider_id": ["p", "p"],
            "pattern": ["upcoding", "phantom_billing"],
            "finding_date": [dt.date(2024, 1, 10), dt.date(2024, 6, 1)],
        }
    )
    ids = pl.Series(["a", "b", "c"])
    assert label_claims(ids, findings).to_list() == [1, 1, 0]
    assert label_claims(ids, findings, as_of=dt.date(2024, 3, 1)).to_list() == [1, 0, 0]
    assert finding_patterns(ids, findings).to_list() == ["upcoding", "phantom_billing", None]


def test_truth_maps_raw_claim_ids_to_the_ingest_pseudonyms(tmp_path: Path) -> None:
    (tmp_path / "manifest").mkdir()
    (tmp_path / "manifest" / "fraud_truth.csv").write_text(
        "claim_id,provider_id,pattern,labelled\nc-1,ORG0001,upcoding,true\nc-2,ORG0002,duplicate_claim,false\n"
    )
    p = Pseudonymizer("a-test-key-of-sixteen-bytes")
    truth = load_truth(tmp_path, p)
    assert truth["claim_id"].to_list() == [p.id("Claim", "c-1"), p.id("Claim", "c-2")]
    assert truth["pattern"].to_list() == ["upcoding", "duplicate_claim"]
    assert truth["labelled"].to_list() == [True, False]
    with pytest.raises(InputError, match=r"fraud_truth\.csv"):
        load_truth(tmp_path / "nowhere", p)

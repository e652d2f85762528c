"""The fraud model, baselines, reasons, worklist and evaluation on small generated feature records."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipelines.features.fraud import (
    CATEGORICAL_FEATURES,
    CONTEXT_COLUMNS,
    NUMERIC_FEATURES,
    PROVIDER_FEATURES,
)
from pipelines.fraud.evaluate import beats, comparison_table, evaluate_fraud, kth_score
from pipelines.fraud.reason_texts import LANGUAGES, REASON_CODES, REASON_PATTERN, make_reason
from pipelines.fraud.worklist import NotPseudonymousError, build_worklist, write_worklist
from pipelines.modeling.fraud_attribution import explain, group_attributions
from pipelines.modeling.fraud_baselines import GbmBaseline, RulesBaseline
from pipelines.modeling.fraud_encoding import FeatureSchemaError
from pipelines.modeling.fraud_model import (
    FraudModel,
    FraudModelConfig,
    fit_combination,
    load_fraud_model,
    save_fraud_model,
    score,
    train_fraud_model,
    unlabelled_weights,
)
from pipelines.modeling.fraud_store import ModelFormatError, read_metadata

FAST = FraudModelConfig(hidden=(16, 8), epochs=8, batch_size=128, iforest_trees=20)
PATTERNS = ("phantom_billing", "services_after_death", "duplicate_claim", "excessive_volume")


def pid(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def fake_features(n: int, seed: int, fraud_rate: float = 0.08) -> tuple[pl.DataFrame, np.ndarray, list[str]]:
    """Feature records shaped like ``build_claim_features`` output, with four planted fraud patterns."""
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for name in NUMERIC_FEATURES + PROVIDER_FEATURES:
        cols[name] = np.zeros(n)
    cols["has_encounter"] = np.ones(n)
    cols["encounter_observations"] = rng.integers(2, 7, n).astype(float)
    cols["records_near_service"] = cols["encounter_observations"] + 1  # type: ignore[operator]
    cols["amount_ratio_dx"] = rng.lognormal(0, 0.2, n)
    cols["price_ratio_max"] = np.ones(n)
    cols["quantity_ratio_max"] = np.ones(n)
    cols["dup_min_days"] = np.full(n, 8.0)
    cols["provider_day_services"] = rng.integers(1, 4, n).astype(float)
    cols["services_per_staff"] = cols["provider_day_services"] / 4  # type: ignore[operator]
    cols["provider_day_patients"] = np.ones(n)
    cols["volume_vs_baseline"] = rng.lognormal(0, 0.2, n)
    cols["patient_providers_90d"] = np.ones(n)
    cols["total"] = rng.choice([4500.0, 7800.0, 15000.0], n)
    cols["item_count"] = rng.integers(1, 4, n).astype(float)
    cols["spo2_min"] = np.where(rng.random(n) < 0.2, np.nan, rng.normal(97, 1, n))
    cols["temp_max"] = rng.normal(36.8, 0.3, n)
    y = (rng.random(n) < fraud_rate).astype(np.int64)
    patterns = [PATTERNS[i % len(PATTERNS)] if y[i] else "" for i in range(n)]
    for i, p in enumerate(patterns):
        if p == "phantom_billing":
            cols["has_encounter"][i] = 0.0  # type: ignore[index]
            cols["encounter_observations"][i] = 0.0  # type: ignore[index]
            cols["records_near_service"][i] = 0.0  # type: ignore[index]
            cols["no_clinical_trace"][i] = 1.0  # type: ignore[index]
        elif p == "services_after_death":
            cols["after_death"][i] = 1.0  # type: ignore[index]
            cols["days_after_death"][i] = float(rng.integers(1, 60))  # type: ignore[index]
        elif p == "duplicate_claim":
            cols["dup_prior_same_service"][i] = 1.0  # type: ignore[index]
            cols["dup_prior_same_encounter"][i] = 1.0  # type: ignore[index]
            cols["dup_min_days"][i] = float(rng.integers(0, 5))  # type: ignore[index]
        elif p == "excessive_volume":
            cols["provider_day_services"][i] = float(rng.integers(40, 90))  # type: ignore[index]
            cols["services_per_staff"][i] = cols["provider_day_services"][i] / 4  # type: ignore[index]
            cols["volume_vs_baseline"][i] = cols["provider_day_services"][i] / 2  # type: ignore[index]
    start = dt.date(2024, 1, 1)
    days = sorted(start + dt.timedelta(days=int(d)) for d in rng.integers(0, 60, n))
    df = pl.DataFrame(
        {
            "claim_id": [pid(f"claim-{seed}-{i}") for i in range(n)],
            "provider_id": [pid(f"org-{i % 7}") for i in range(n)],
            "patient_id": [pid(f"pat-{seed}-{i % (n // 2)}") for i in range(n)],
            "created": [dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC) for d in days],
            "main_tariff": rng.choice(["A01", "A02", "P01"], n).tolist(),
            "provider_kind": rng.choice(["polyclinic", "hospital"], n).tolist(),
            "provider_region": rng.choice(["ALA", "AST"], n).tolist(),
            "claim_type": ["professional"] * n,
            "dx": rng.choice(["J06.9", "R05", "I10"], n).tolist(),
            "setting": ["AMB"] * n,
            **{k: v for k, v in cols.items()},
            "asof": days,
            "service_start": [d - dt.timedelta(days=2) for d in days],
            "service_end": [d - dt.timedelta(days=2) for d in days],
            "peer_amount_median": np.full(n, 4500.0),
            "price_peer_code": ["A01"] * n,
            "qty_peer_code": ["A01"] * n,
            "unbundled_package": [None] * n,
            "deceased_date": [None] * n,
            "staff": np.full(n, 4.0),
            "dup_prior_provider_same": [False] * n,
            "out_of_region": np.zeros(n),
        }
    )
    assert set(CONTEXT_COLUMNS) <= set(df.columns)
    return df, y, patterns


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    train, ytr, _ = fake_features(1200, seed=1)
    val, yva, _ = fake_features(400, seed=2)
    test, yte, pats = fake_features(600, seed=3)
    return {"train": train, "ytr": ytr, "val": val, "yva": yva, "test": test, "yte": yte, "patterns": pats}


@pytest.fixture(scope="module")
def model(data: dict[str, object]) -> FraudModel:
    return train_fraud_model(
        data["train"],  # type: ignore[arg-type]
        data["ytr"],  # type: ignore[arg-type]
        data["val"],  # type: ignore[arg-type]
        data["yva"],  # type: ignore[arg-type]
        numeric=NUMERIC_FEATURES,
        categorical=CATEGORICAL_FEATURES,
        config=FAST,
        seed=0,
    )


def test_model_ranks_planted_fraud_first(model: FraudModel, data: dict[str, object]) -> None:
    s = score(model, data["test"])  # type: ignore[arg-type]
    y = data["yte"]
    assert s.shape == (600,) and ((s >= 0) & (s <= 1)).all()
    assert s[y == 1].min() > np.quantile(s[y == 0], 0.95)  # type: ignore[index]


def test_save_load_round_trip_gives_identical_scores(
    model: FraudModel, data: dict[str, object], tmp_path: Path
) -> None:
    test = data["test"]
    gbm = GbmBaseline.fit(data["train"], data["ytr"], numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES)  # type: ignore[arg-type]
    rules = RulesBaseline.fit(data["train"])  # type: ignore[arg-type]
    for name, m in (("model", model), ("gbm", gbm), ("rules", rules)):
        folder = save_fraud_model(m, tmp_path / name)
        meta = read_metadata(folder)
        assert meta["kind"] == m.kind
        again = load_fraud_model(folder)
        assert np.array_equal(score(m, test), score(again, test)), name  # type: ignore[arg-type]
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["feature_names"] == [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
    assert set(meta["encoder"]["vocab"]["main_tariff"]) == {"A01", "A02", "P01"}
    assert meta["encoder"]["indicators"] == ["spo2_min"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "iforest.skops",
        "metadata.json",
        "network.pt",
    ]


def test_training_is_deterministic_for_a_seed(model: FraudModel, data: dict[str, object]) -> None:
    def train(seed: int) -> np.ndarray:
        m = train_fraud_model(
            data["train"],  # type: ignore[arg-type]
            data["ytr"],  # type: ignore[arg-type]
            data["val"],  # type: ignore[arg-type]
            data["yva"],  # type: ignore[arg-type]
            numeric=NUMERIC_FEATURES,
            categorical=CATEGORICAL_FEATURES,
            config=FAST,
            seed=seed,
        )
        return score(m, data["test"])  # type: ignore[arg-type]

    state = torch.random.get_rng_state()
    assert np.array_equal(train(0), score(model, data["test"]))  # type: ignore[arg-type]
    assert not np.array_equal(train(1), score(model, data["test"]))  # type: ignore[arg-type]
    assert torch.equal(state, torch.random.get_rng_state())  # training leaves the global RNG alone


def test_score_never_falls_as_evidence_grows(model: FraudModel, data: dict[str, object]) -> None:
    base = data["test"].head(50)  # type: ignore[attr-defined]
    for name, values in (("services_per_staff", [0.5, 5, 50, 500]), ("days_after_death", [0, 5, 50, 5000])):
        scores = [score(model, base.with_columns(pl.lit(float(v)).alias(name))) for v in values]
        for lo, hi in itertools_pairs(scores):
            assert (hi >= lo - 1e-12).all(), name
    fewer = [score(model, base.with_columns(pl.lit(float(v)).alias("has_encounter"))) for v in (1, 0)]
    assert (fewer[1] >= fewer[0] - 1e-12).all()


def itertools_pairs(xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(itertools.pairwise(xs))


def test_missing_feature_column_is_named(model: FraudModel, data: dict[str, object]) -> None:
    with pytest.raises(FeatureSchemaError, match="after_death"):
        score(model, data["test"].drop("after_death"))  # type: ignore[attr-defined]


def test_labels_must_match_records(data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="y_train"):
        train_fraud_model(
            data["train"],  # type: ignore[arg-type]
            np.zeros(3),
            data["val"],  # type: ignore[arg-type]
            data["yva"],  # type: ignore[arg-type]
            numeric=NUMERIC_FEATURES,
            categorical=CATEGORICAL_FEATURES,
            config=FAST,
        )


def test_config_from_params_mapping() -> None:
    cfg = FraudModelConfig.from_mapping({"hidden": [32, 16], "epochs": 5, "focal_gamma": 2.0})
    assert cfg.hidden == (32, 16) and cfg.epochs == 5 and cfg.focal_gamma == 2.0


def test_platt_combination_recalibrates_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.2).astype(np.int64)
    x = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1, 4000)
    # The true log-odds are 2x + log(0.2 / 0.8); a score of 3x is too sharp by 3/2.
    a, c = fit_combination(3 * x, np.zeros(4000), y)
    assert a == pytest.approx(2 / 3, abs=0.08)
    assert c == pytest.approx(np.log(0.25), abs=0.15)
    assert fit_combination(x, np.zeros(4000), np.zeros(4000, dtype=np.int64)) == (1.0, 0.0)


def test_unusual_unlabelled_claims_count_less_as_clean() -> None:
    y = np.array([1, 0, 0, 0, 1])
    z = np.array([5.0, -1.0, 2.0, 3.0, -1.0])
    w = unlabelled_weights(y, z, margin=2.0, discount=3.0)
    assert w.dtype == np.float32
    # Audit-confirmed fraud keeps full weight; unlabelled claims up to the margin too; beyond it the weight decays.
    assert w.tolist() == pytest.approx([1.0, 1.0, 1.0, np.exp(-3.0), 1.0])
    assert unlabelled_weights(y, z, margin=2.0, discount=0.0).tolist() == [1.0] * 5


def test_a_pattern_no_audit_found_still_ranks_high(data: dict[str, object]) -> None:
    # Audits never found excessive volume: its claims are unlabelled in training and validation.
    train, val, test = data["train"], data["val"], data["test"]
    assert isinstance(train, pl.DataFrame) and isinstance(val, pl.DataFrame) and isinstance(test, pl.DataFrame)
    volume = {name: df["volume_vs_baseline"].to_numpy() > 5 for name, df in (("train", train), ("val", val))}
    ytr = np.where(volume["train"], 0, data["ytr"])  # type: ignore[call-overload]
    yva = np.where(volume["val"], 0, data["yva"])  # type: ignore[call-overload]
    model = train_fraud_model(
        train, ytr, val, yva, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES, config=FAST, seed=0
    )
    assert model.info["unlabelled_discounted"] > 0
    pats = data["patterns"]
    yte = data["yte"]
    assert isinstance(yte, np.ndarray) and isinstance(pats, list)
    labelled = np.array([p not in ("", "excessive_volume") for p in pats])
    rep = evaluate_fraud(yte, model.predict(test), test["total"].to_numpy(), pats, labelled, k=int(yte.sum()), n_boot=0)
    assert rep["recall_at_k_by_pattern"]["excessive_volume"]["value"] >= 0.9
    assert rep["unlabelled_recall_at_k"]["value"] >= 0.9


def test_loading_refuses_foreign_folders_and_untrusted_types(model: FraudModel, tmp_path: Path) -> None:
    import skops.io as sio

    with pytest.raises(ModelFormatError, match=r"metadata\.json"):
        load_fraud_model(tmp_path)
    folder = save_fraud_model(model, tmp_path / "m")
    sio.dump(collections.Counter(a=1), folder / "iforest.skops")
    with pytest.raises(ModelFormatError, match="untrusted"):
        load_fraud_model(folder)
    (folder / "metadata.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelFormatError, match="format"):
        load_fraud_model(folder)


def test_reasons_name_the_planted_pattern(model: FraudModel, data: dict[str, object]) -> None:
    test: pl.DataFrame = data["test"]  # type: ignore[assignment]
    pats: list[str] = data["patterns"]  # type: ignore[assignment]
    idx = [i for i, p in enumerate(pats) if p]
    reasons = explain(model, test[idx], top_n=3)
    for i, rs in zip(idx, reasons, strict=True):
        assert 1 <= len(rs) <= 3
        assert [r.weight for r in rs] == sorted((r.weight for r in rs), reverse=True)
        assert rs[0].pattern == pats[i], (pats[i], [r.code for r in rs])
        for r in rs:
            for lang in LANGUAGES:
                text = getattr(r, lang)
                assert text and "?" not in text and "{" not in text
                assert test["claim_id"][i] not in text and test["patient_id"][i] not in text


def test_attributions_are_zero_for_groups_a_scorer_ignores(data: dict[str, object]) -> None:
    rules = RulesBaseline.fit(data["train"])  # type: ignore[arg-type]
    attr, names = group_attributions(rules, data["test"].head(20))  # type: ignore[attr-defined]
    assert attr.shape == (20, len(names))
    assert (attr[:, names.index("collusion_ring")] == 0).all()


def test_reason_texts_fill_numbers_per_language() -> None:
    record = {
        "dx": "J06.9",
        "amount_ratio_dx": 3.2222,
        "total": 14500.0,
        "peer_amount_median": 4500.0,
        "main_tariff": "A03",
        "abnormal_findings": 0,
    }
    r = make_reason("upcoding", 2.5, record)
    assert r.code == "SERVICE_ABOVE_DIAGNOSIS" and r.pattern == "upcoding" and r.variant == "amount"
    assert r.en == (
        "Billed 3.2 times the regional median for the same diagnosis: 14,500 vs 4,500 KZT "
        "(diagnosis J06.9, main service A03); 0 abnormal findings documented."
    )
    assert r.ru == (
        "Счёт в 3,2 раза выше регионального медианного по тому же диагнозу: 14\u00a0500 против 4\u00a0500 тг "
        "(диагноз J06.9, основная услуга A03); в документации 0 отклонений от нормы."
    )
    assert r.kk == (
        "Шот сол диагноз бойынша өңірлік медианадан 3,2 есе жоғары: 14\u00a0500 / 4\u00a0500 теңге "
        "(диагноз J06.9, негізгі қызмет A03); 0 ауытқу құжатталған."
    )
    dead = make_reason("services_after_death", 1.0, {"days_after_death": 14.0})
    assert dead.en == "Service dated 14 days after the recorded death."
    assert dead.ru == "Дата услуги — через 14 дней после зарегистрированной смерти пациента."
    assert set(REASON_PATTERN) == set(REASON_CODES.values())


def test_worklist_has_k_rows_sorted_with_pseudonyms_only(model: FraudModel, data: dict[str, object]) -> None:
    test: pl.DataFrame = data["test"]  # type: ignore[assignment]
    s = score(model, test)
    reasons = explain(model, test, top_n=2)
    busiest = test.group_by("asof").len().sort(["len", "asof"], descending=[True, False])["asof"][0]
    n_day = int((test["asof"] == busiest).sum())
    no_rules = [[] for _ in range(test.height)]  # the rules are tests/fraud's: here the model's k
    wl = build_worklist(test, s, reasons, date=busiest, k=5, rule_hits=no_rules)
    assert wl.height == 5 <= n_day
    assert wl["probability"].is_sorted(descending=True)
    assert wl["rank"].to_list() == [1, 2, 3, 4, 5]
    assert (wl["date"] == busiest).all()
    for col in ("claim_id", "provider_id", "patient_id"):
        assert wl[col].str.contains(r"^[0-9a-f]{32}$").all()
    assert list(wl.columns) == [
        "rank",
        "date",
        "claim_id",
        "provider_id",
        "patient_id",
        "rule_hits",
        "probability",
        "band",
        "amount_kzt",
        "reason_codes",
        "rules_kk",
        "rules_ru",
        "rules_en",
        "reasons_kk",
        "reasons_ru",
        "reasons_en",
    ]
    day_scores = np.sort(s[(test["asof"] == busiest).to_numpy()])[::-1][:5]
    assert np.allclose(wl["probability"].to_numpy(), day_scores)
    everything = build_worklist(test, s, reasons, date=busiest, k=n_day + 10, rule_hits=no_rules)
    assert everything.height == n_day  # fewer claims that day than k: all of them, none padded
    assert build_worklist(test, s, reasons, date=dt.date(1999, 1, 1), k=5).height == 0


def test_worklist_refuses_non_pseudonymous_ids(model: FraudModel, data: dict[str, object]) -> None:
    test: pl.DataFrame = data["test"].head(10)  # type: ignore[attr-defined]
    leaked = test.with_columns(pl.lit("870412301234").alias("patient_id"))
    with pytest.raises(NotPseudonymousError) as err:
        build_worklist(leaked, np.zeros(10), [[] for _ in range(10)], date=test["asof"][0], k=3)
    assert "870412301234" not in str(err.value)


def test_write_worklist_parquet_and_csv(model: FraudModel, data: dict[str, object], tmp_path: Path) -> None:
    test: pl.DataFrame = data["test"]  # type: ignore[assignment]
    s = score(model, test)
    wl = build_worklist(test, s, explain(model, test), date=test["asof"][0], k=3)
    pq_path, csv_path = write_worklist(wl, tmp_path / "out")
    assert pl.read_parquet(pq_path).equals(wl)
    back = pl.read_csv(csv_path)
    assert back["claim_id"].to_list() == wl["claim_id"].to_list()
    assert back["reasons_ru"].to_list() == wl["reasons_ru"].to_list()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["worklist.csv", "worklist.parquet"]


def test_evaluate_fraud_recall_per_pattern_and_unlabelled() -> None:
    y = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    pats = ["a", "b", "a", None, None, "b", None, None, None, "a"]
    labelled = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], dtype=bool)
    rep = evaluate_fraud(y, s, np.arange(10) * 100.0, pats, labelled, k=4, n_boot=50, seed=3)
    assert rep["k"] == 4
    assert rep["recall_at_k_by_pattern"]["a"]["value"] == pytest.approx(2 / 3)
    assert rep["recall_at_k_by_pattern"]["b"]["value"] == pytest.approx(1 / 2)
    assert rep["unlabelled_recall_at_k"] == {**rep["unlabelled_recall_at_k"], "n": 2, "value": 0.5}
    assert rep["labelled_recall_at_k"]["value"] == pytest.approx(2 / 3)
    assert rep["metrics"]["precision_at_4"]["value"] == pytest.approx(3 / 4)
    assert rep["metrics"]["money_at_4"]["value"] == pytest.approx(0 + 100 + 200)
    assert rep["threshold"] == kth_score(s, 4) == 0.6
    worse = evaluate_fraud(y, s[::-1], np.arange(10) * 100.0, pats, labelled, k=4, n_boot=0)
    table = comparison_table({"model": rep, "rules": worse})
    assert table["scorer"].to_list() == ["model", "rules"]
    assert {"auprc", "precision_at_k", "unlabelled_recall_at_k", "recall_at_k_a"} <= set(table.columns)
    assert beats({"model": rep, "rules": worse}, "model", ["rules"], ["auprc", "precision_at_4"]) == {
        "rules": {"auprc": True, "precision_at_4": True}
    }


@pytest.mark.gpu
def test_cuda_training_matches_cpu_ranking(data: dict[str, object], model: FraudModel, tmp_path: Path) -> None:
    gpu = train_fraud_model(
        data["train"],  # type: ignore[arg-type]
        data["ytr"],  # type: ignore[arg-type]
        data["val"],  # type: ignore[arg-type]
        data["yva"],  # type: ignore[arg-type]
        numeric=NUMERIC_FEATURES,
        categorical=CATEGORICAL_FEATURES,
        config=FAST,
        seed=0,
        device="cuda",
    )
    s_gpu = score(gpu, data["test"])  # type: ignore[arg-type]
    y = data["yte"]
    assert s_gpu[y == 1].min() > np.quantile(s_gpu[y == 0], 0.95)  # type: ignore[index]
    cpu_copy = load_fraud_model(save_fraud_model(gpu, tmp_path / "gpu"), device="cpu")
    assert np.allclose(score(cpu_copy, data["test"]), s_gpu, atol=1e-4)  # type: ignore[arg-type]

"""Rule hits: conditions and their boundaries on hand-made claim records, sentences checked against hand-written
text, and each rule's precision on the built-in cohort (when its data are here)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from pipelines.fraud.reason_texts import count, plural_category
from pipelines.fraud.rules import RULE_CODES, RULES, any_hit, evaluate_rules, hit_matrix, rule_hit, rule_precision

REPO = Path(__file__).resolve().parents[2]
NBSP = "\u00a0"


def _records(*rows: dict[str, Any]) -> pl.DataFrame:
    base = {
        "days_after_death": 0.0,
        "deceased_date": None,
        "package_unbundled": 0.0,
        "unbundled_package": None,
        "unbundling_excess_kzt": 0.0,
        "encounter_other_provider": 0.0,
        "encounter_date_gap": 0.0,
        "dup_prior_same_encounter": 0.0,
        "dup_prior_same_service": 0.0,
        "dup_min_days": 8.0,
    }
    return pl.DataFrame(
        [{**base, **r} for r in rows],
        schema={
            "days_after_death": pl.Float64,
            "deceased_date": pl.Date,
            "package_unbundled": pl.Float64,
            "unbundled_package": pl.String,
            "unbundling_excess_kzt": pl.Float64,
            "encounter_other_provider": pl.Float64,
            "encounter_date_gap": pl.Float64,
            "dup_prior_same_encounter": pl.Float64,
            "dup_prior_same_service": pl.Float64,
            "dup_min_days": pl.Float64,
        },
    )


def _codes(df: pl.DataFrame) -> list[list[str]]:
    return [[h.code for h in hits] for hits in evaluate_rules(df)]


def test_rule_codes() -> None:
    assert RULE_CODES == ("SERVICE_AFTER_DEATH", "PACKAGE_UNBUNDLED", "EXACT_DUPLICATE", "ENCOUNTER_MISMATCH")


def test_conditions_at_their_boundaries() -> None:
    df = _records(
        {},  # an ordinary claim
        {"days_after_death": 0.0, "deceased_date": dt.date(2024, 3, 1)},  # died the day of the service: no hit
        {"days_after_death": 1.0},
        {"days_after_death": None, "package_unbundled": None, "encounter_date_gap": None},  # missing: no hit
        {"package_unbundled": 1.0},
        {"encounter_other_provider": 1.0},
        {"encounter_date_gap": 1.0},
        {"days_after_death": 3.0, "package_unbundled": 1.0, "encounter_date_gap": 2.0},
        {"days_after_death": -2.0, "encounter_date_gap": 0.0},  # never negative in the features; no hit anyway
        {"dup_prior_same_encounter": 1.0, "dup_prior_same_service": 1.0, "dup_min_days": 0.0},
        {"dup_prior_same_encounter": 1.0},  # the encounter billed before, but other services: no hit
        {"dup_prior_same_service": 2.0, "dup_min_days": 0.0},  # same services, same day, another encounter: no hit
        {"dup_prior_same_encounter": None, "dup_prior_same_service": 1.0},  # missing: no hit
        {"dup_prior_same_encounter": 1.0, "dup_prior_same_service": 1.0, "encounter_other_provider": 1.0},
    )
    assert _codes(df) == [
        [],
        [],
        ["SERVICE_AFTER_DEATH"],
        [],
        ["PACKAGE_UNBUNDLED"],
        ["ENCOUNTER_MISMATCH"],
        ["ENCOUNTER_MISMATCH"],
        ["SERVICE_AFTER_DEATH", "PACKAGE_UNBUNDLED", "ENCOUNTER_MISMATCH"],
        [],
        ["EXACT_DUPLICATE"],
        [],
        [],
        [],
        ["EXACT_DUPLICATE", "ENCOUNTER_MISMATCH"],
    ]
    assert any_hit(df).to_list() == [
        False, False, True, False, True, True, True, True, False, True, False, False, False, True
    ]  # fmt: skip
    assert hit_matrix(df).columns == list(RULE_CODES)


def test_a_rule_whose_columns_are_absent_hits_nothing() -> None:
    df = pl.DataFrame({"days_after_death": [4.0, 0.0]})
    assert _codes(df) == [["SERVICE_AFTER_DEATH"], []]
    assert evaluate_rules(pl.DataFrame({"total": [1.0]})) == [[]]


@pytest.mark.parametrize(
    ("n", "ru", "en"),
    [(1, "one", "one"), (2, "few", "other"), (4, "few", "other"), (5, "many", "other"), (0, "many", "other"),
     (11, "many", "other"), (12, "many", "other"), (14, "many", "other"), (21, "one", "other"),
     (22, "few", "other"), (25, "many", "other"), (101, "one", "other"), (111, "many", "other"),
     (0.5, "other", "other"), (1.5, "other", "other")],
)  # fmt: skip
def test_cldr_plural_categories(n: float, ru: str, en: str) -> None:
    # The rules count with pipelines.fraud.reason_texts (Babel): the categories the sentences below rely on.
    assert plural_category(n, "ru") == ru
    assert plural_category(n, "en") == en


@pytest.mark.parametrize(
    ("n", "kk", "ru", "en"),
    [
        (0, "0 күн", "0 дней", "0 days"),
        (0.5, "0,5 күн", "0,5 дня", "0.5 days"),
        (1, "1 күн", "1 день", "1 day"),
        (2, "2 күн", "2 дня", "2 days"),
        (5, "5 күн", "5 дней", "5 days"),
        (21, "21 күн", "21 день", "21 days"),
        (0.96, "1 күн", "1 день", "1 day"),  # the plural agrees with the number as printed
        (1200, f"1{NBSP}200 күн", f"1{NBSP}200 дней", "1,200 days"),
    ],
)
def test_days_are_pluralised(n: float, kk: str, ru: str, en: str) -> None:
    assert (count(n, "day", "kk"), count(n, "day", "ru"), count(n, "day", "en")) == (kk, ru, en)
    after_death = rule_hit(RULES[0], {"days_after_death": n})  # the same phrase inside a rule's sentence
    assert (kk in after_death.kk, ru in after_death.ru, en in after_death.en) == (True, True, True)


def test_after_death_sentences() -> None:
    hits = evaluate_rules(
        _records(
            {"days_after_death": 1.0, "deceased_date": dt.date(2024, 3, 1)},
            {"days_after_death": 22.0},
        )
    )
    one, other = hits[0][0], hits[1][0]
    assert one.pattern == "services_after_death"
    assert one.en == "Service dated 1 day after the recorded death (2024-03-01)."
    assert one.ru == "Услуга записана через 1 день после зарегистрированной смерти (2024-03-01)."
    assert one.kk == "Қызмет тіркелген қайтыс болу күнінен (2024-03-01) 1 күн кейін көрсетілген."
    assert other.en == "Service dated 22 days after the recorded death."  # no date recorded: none printed
    assert other.ru == "Услуга записана через 22 дня после зарегистрированной смерти."
    assert other.kk == "Қызмет тіркелген қайтыс болу күнінен 22 күн кейін көрсетілген."


def test_unbundled_sentences() -> None:
    hits = evaluate_rules(
        _records(
            {"package_unbundled": 1.0, "unbundled_package": "P02", "unbundling_excess_kzt": 3500.0},
            {"package_unbundled": 1.0},
        )
    )
    priced, bare = hits[0][0], hits[1][0]
    assert priced.en == "Every component of package P02 billed separately: 3,500 KZT above the package price."
    assert priced.ru == f"Все компоненты пакета P02 выставлены по отдельности: на 3{NBSP}500 тенге дороже пакета."
    assert priced.kk == (
        f"P02 пакетінің барлық құрамдас бөліктері бөлек есепке қойылған: пакет бағасынан 3{NBSP}500 теңге артық."
    )
    assert bare.en == "Every component of a package billed separately instead of the package."
    assert bare.ru == "Все компоненты пакета выставлены по отдельности вместо пакета."
    assert bare.kk == "Пакеттің барлық құрамдас бөліктері пакеттің орнына бөлек есепке қойылған."


def test_encounter_sentences() -> None:
    hits = evaluate_rules(
        _records(
            {"encounter_other_provider": 1.0},
            {"encounter_date_gap": 2.0},
            {"encounter_other_provider": 1.0, "encounter_date_gap": 5.0},
        )
    )
    other, gap, both = (h[0] for h in hits)
    assert other.en == "Bills an encounter of another provider."
    assert other.ru == "Счёт выставлен за приём другой организации."
    assert other.kk == "Басқа мекеменің қабылдауы үшін шот қойылған."
    assert gap.en == "Bills an encounter 2 days from the billed service."
    assert gap.ru == "Счёт выставлен за приём, отстоящий от услуги на 2 дня."
    assert gap.kk == "Қызмет күнінен 2 күн алшақ қабылдау үшін шот қойылған."
    assert both.en == "Bills an encounter of another provider, 5 days from the billed service."
    assert both.ru == "Счёт выставлен за приём другой организации, отстоящий от услуги на 5 дней."
    assert both.kk == "Басқа мекеменің, қызмет күнінен 5 күн алшақ қабылдауы үшін шот қойылған."
    assert both.as_dict()["code"] == "ENCOUNTER_MISMATCH"


def test_exact_duplicate_sentences() -> None:
    hits = evaluate_rules(
        _records(
            {"dup_prior_same_encounter": 1.0, "dup_prior_same_service": 1.0, "dup_min_days": 0.0},
            {"dup_prior_same_encounter": 2.0, "dup_prior_same_service": 2.0, "dup_min_days": 1.0},
            {"dup_prior_same_encounter": 5.0, "dup_prior_same_service": 1.0, "dup_min_days": 5.0},
            {"dup_prior_same_encounter": 21.0, "dup_prior_same_service": 1.0, "dup_min_days": 2.0},
            {"dup_prior_same_encounter": 1.0, "dup_prior_same_service": 1.0, "dup_min_days": None},
        )
    )
    same_day, one_day, five, many, unknown = (h[0] for h in hits)
    assert same_day.pattern == "duplicate_claim" and same_day.code == "EXACT_DUPLICATE"
    assert same_day.en == (
        "The same encounter was already billed in 1 earlier claim; an earlier claim bills the same services for the "
        "same patient on the same day."
    )
    assert same_day.ru == (
        "Этот же приём уже выставлялся к оплате 1 раз ранее; более ранний счёт содержит те же услуги тому же "
        "пациенту с той же датой услуги."
    )
    assert same_day.kk == (
        "Дәл осы қабылдау бұрын 1 рет есепке қойылған; бұрынғы шотта сол пациентке сол күнгі дәл сол қызметтер бар."
    )
    assert one_day.en == (
        "The same encounter was already billed in 2 earlier claims; an earlier claim bills the same services for "
        "the same patient, dated 1 day apart."
    )
    assert one_day.ru == (
        "Этот же приём уже выставлялся к оплате 2 раза ранее; более ранний счёт содержит те же услуги тому же "
        "пациенту, даты услуг расходятся на 1 день."
    )
    assert one_day.kk == (
        "Дәл осы қабылдау бұрын 2 рет есепке қойылған; бұрынғы шотта сол пациентке дәл сол қызметтер бар, қызмет "
        "күндерінің айырмасы 1 күн."
    )
    assert five.en.endswith("already billed in 5 earlier claims; an earlier claim bills the same services for the "
                            "same patient, dated 5 days apart.")  # fmt: skip
    assert five.ru == (
        "Этот же приём уже выставлялся к оплате 5 раз ранее; более ранний счёт содержит те же услуги тому же "
        "пациенту, даты услуг расходятся на 5 дней."
    )
    assert five.kk.startswith("Дәл осы қабылдау бұрын 5 рет есепке қойылған;") and five.kk.endswith("айырмасы 5 күн.")
    assert many.ru == (
        "Этот же приём уже выставлялся к оплате 21 раз ранее; более ранний счёт содержит те же услуги тому же "
        "пациенту, даты услуг расходятся на 2 дня."
    )
    assert many.en.startswith("The same encounter was already billed in 21 earlier claims;")
    assert unknown.en == (  # the gap not recorded: not printed
        "The same encounter was already billed in 1 earlier claim; an earlier claim bills the same services for the "
        "same patient."
    )
    assert unknown.ru == (
        "Этот же приём уже выставлялся к оплате 1 раз ранее; более ранний счёт содержит те же услуги тому же пациенту."
    )
    assert (
        unknown.kk == "Дәл осы қабылдау бұрын 1 рет есепке қойылған; бұрынғы шотта сол пациентке дәл сол қызметтер бар."
    )


def test_rule_precision_counts_hits_and_positives() -> None:
    df = _records({"days_after_death": 2.0}, {"days_after_death": 3.0}, {"package_unbundled": 1.0}, {}).with_columns(
        pl.Series("y", [1, 0, 1, 1]), pl.Series("split", ["train", "test", "test", "test"])
    )
    overall = rule_precision(df, "y")
    assert overall["SERVICE_AFTER_DEATH"] == {"hits": 2, "positive": 1, "precision": 0.5}
    assert overall["PACKAGE_UNBUNDLED"] == {"hits": 1, "positive": 1, "precision": 1.0}
    assert overall["EXACT_DUPLICATE"] == {"hits": 0, "positive": 0, "precision": None}
    assert overall["ENCOUNTER_MISMATCH"] == {"hits": 0, "positive": 0, "precision": None}
    by_split = rule_precision(df, "y", by="split")
    assert by_split["SERVICE_AFTER_DEATH"]["train"] == {"hits": 1, "positive": 1, "precision": 1.0}
    assert by_split["SERVICE_AFTER_DEATH"]["test"] == {"hits": 1, "positive": 0, "precision": 0.0}


def _cohort() -> pl.DataFrame:
    dataset = REPO / "data" / "processed" / "fraud" / "dataset.parquet"
    raw = REPO / "data" / "raw"
    if not dataset.exists() or not (raw / "manifest" / "fraud_truth.csv").exists():
        pytest.skip("the default cohort's fraud features and truth are not here (run `make run`)")
    from pipelines.config import DEMO_PSEUDONYM_KEY
    from pipelines.fhir.pseudonym import Pseudonymizer
    from pipelines.fraud.truth import load_truth

    truth = load_truth(raw, Pseudonymizer(DEMO_PSEUDONYM_KEY))
    df = pl.read_parquet(dataset).join(truth, on="claim_id", how="left", maintain_order="left")
    return df.with_columns(pl.col("pattern").is_not_null().cast(pl.Int8).alias("is_fraud"))


def test_every_rule_is_certain_on_the_default_cohort() -> None:
    df = _cohort()
    precision = rule_precision(df, "is_fraud", by="split")
    for code, per_split in precision.items():
        assert per_split["test"]["hits"] > 0, code
        for split, stats in per_split.items():
            assert stats["precision"] in (None, 1.0), (code, split, stats)


def test_rule_sentences_have_no_placeholder_or_unpluralised_form() -> None:
    from pipelines.fraud.reason_texts import placeholder_problems

    df = _records(
        *({"days_after_death": float(n)} for n in (1, 2, 5, 11, 21, 22, 111)),
        {"package_unbundled": 1.0},
        {"package_unbundled": 1.0, "unbundled_package": "P01", "unbundling_excess_kzt": 1.0},
        *({"encounter_date_gap": float(n), "dup_prior_same_encounter": 1.0} for n in (1, 2, 5, 21)),
        {"encounter_other_provider": 1.0},
        *(
            {"dup_prior_same_encounter": float(n), "dup_prior_same_service": 1.0, "dup_min_days": float(n % 8)}
            for n in (1, 2, 5, 11, 21, 22)
        ),
    )
    for hits in evaluate_rules(df):
        assert hits
        for h in hits:
            for lang in ("kk", "ru", "en"):
                assert placeholder_problems(getattr(h, lang), lang) == [], (lang, getattr(h, lang))

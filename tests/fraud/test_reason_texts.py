"""Fraud reasons: every code and variant in Kazakh, Russian and English against hand-written sentences, missing
values phrased, no placeholder or unpluralised form on the cohort's records, and thresholds that decide.

The expected sentences and the counted phrases below are written by hand (never made by the code under test or by
Babel), with the numbers 0, 0.5, 1, 2, 5 and 21 for every counted noun.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from pipelines.fraud.reason_texts import (
    AMOUNT_MULTIPLE_MIN,
    FINDINGS,
    LANGUAGES,
    PACKAGE_SHARE_MIN,
    PEER_RATIO_MIN,
    REASON_CODES,
    SERVICES_PER_STAFF_MIN,
    SHARED_PATIENTS_MIN,
    VARIANTS,
    VOLUME_RATIO_MIN,
    NotAFindingError,
    finding,
    make_reason,
    passes_threshold,
    placeholder_problems,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "data" / "processed" / "fraud" / "dataset.parquet"
DOC = ROOT / "docs" / "fraud-reasons.md"
DAY = dt.date(2024, 10, 1)
N = (0, 0.5, 1, 2, 5, 21)
NBSP = "\u00a0"


def _en(one: str, other: str) -> dict[float, str]:
    # English: the singular for exactly 1, the plural for everything else (0, 0.5, 2, 5, 21).
    return {0: f"0 {other}", 0.5: f"0.5 {other}", 1: f"1 {one}", 2: f"2 {other}", 5: f"5 {other}", 21: f"21 {other}"}


def _kk(noun: str) -> dict[float, str]:
    # Kazakh: the noun stays singular after any numeral.
    return {0: f"0 {noun}", 0.5: f"0,5 {noun}", 1: f"1 {noun}", 2: f"2 {noun}", 5: f"5 {noun}", 21: f"21 {noun}"}


COUNTED: dict[str, dict[str, dict[float, str]]] = {
    "en": {
        "day": _en("day", "days"),
        "icu_day": _en("intensive-care day", "intensive-care days"),
        "service": _en("service", "services"),
        "ratio": _en("time", "times"),
        "record": _en("clinical record", "clinical records"),
        "abnormal": _en("abnormal finding", "abnormal findings"),
        "level": _en("level", "levels"),
        "occasions": _en("earlier claim", "earlier claims"),
        "provider": _en("provider", "providers"),
        "shared": _en("patient", "patients"),
        "staff": _en("staff member", "staff members"),
        "item": _en("item", "items"),
    },
    "ru": {
        "day": {0: "0 дней", 0.5: "0,5 дня", 1: "1 день", 2: "2 дня", 5: "5 дней", 21: "21 день"},
        "service": {0: "0 услуг", 0.5: "0,5 услуги", 1: "1 услуга", 2: "2 услуги", 5: "5 услуг", 21: "21 услуга"},
        "ratio": {0: "0 раз", 0.5: "0,5 раза", 1: "1 раз", 2: "2 раза", 5: "5 раз", 21: "21 раз"},
        "record": {0: "0 записей", 0.5: "0,5 записи", 1: "1 запись", 2: "2 записи", 5: "5 записей", 21: "21 запись"},
        "abnormal": {
            0: "0 отклонений от нормы",
            0.5: "0,5 отклонения от нормы",
            1: "1 отклонение от нормы",
            2: "2 отклонения от нормы",
            5: "5 отклонений от нормы",
            21: "21 отклонение от нормы",
        },
        "level": {0: "0 уровней", 0.5: "0,5 уровня", 1: "1 уровень", 2: "2 уровня", 5: "5 уровней", 21: "21 уровень"},
        "occasions": {0: "0 раз", 0.5: "0,5 раза", 1: "1 раз", 2: "2 раза", 5: "5 раз", 21: "21 раз"},
        "provider": {
            0: "0 поставщиков",
            0.5: "0,5 поставщика",
            1: "1 поставщик",
            2: "2 поставщика",
            5: "5 поставщиков",
            21: "21 поставщик",
        },
        "shared": {
            0: "0 общих пациентов",
            0.5: "0,5 общего пациента",
            1: "1 общий пациент",
            2: "2 общих пациента",
            5: "5 общих пациентов",
            21: "21 общий пациент",
        },
        "staff": {
            0: "0 сотрудников",
            0.5: "0,5 сотрудника",
            1: "1 сотрудник",
            2: "2 сотрудника",
            5: "5 сотрудников",
            21: "21 сотрудник",
        },
        "item": {0: "0 позиций", 0.5: "0,5 позиции", 1: "1 позиция", 2: "2 позиции", 5: "5 позиций", 21: "21 позиция"},
    },
    "kk": {
        "day": _kk("күн"),
        "service": _kk("қызмет"),
        "ratio": _kk("есе"),
        "record": _kk("жазба"),
        "abnormal": _kk("ауытқу"),
        "level": _kk("деңгей"),
        "occasions": _kk("рет"),
        "provider": _kk("жеткізуші"),
        "shared": _kk("ортақ пациент"),
        "staff": _kk("қызметкер"),
        "item": _kk("позиция"),
    },
}
COUNTED["en"]["icu"] = COUNTED["en"]["icu_day"]
COUNTED["ru"]["icu"] = COUNTED["ru"]["day"]
COUNTED["kk"]["icu"] = COUNTED["kk"]["day"]
# Numbers that are not counts, as each language writes them (ru and kk group with a no-break space).
AMOUNTS: dict[str, dict[str, dict[float, str]]] = {
    "en": {
        "total": {0: "0", 0.5: "2,250", 1: "4,500", 2: "9,000", 5: "22,500", 21: "94,500"},  # 4,500 x n
        "total6600": {0: "0", 0.5: "3,300", 1: "6,600", 2: "13,200", 5: "33,000", 21: "138,600"},  # 6,600 x n
        "excess": {0: "0", 0.5: "500", 1: "1,000", 2: "2,000", 5: "5,000", 21: "21,000"},  # 1,000 x n
        "level1": {0: "1", 0.5: "1.5", 1: "2", 2: "3", 5: "6", 21: "22"},  # n + 1
    },
    "ru": {
        "total": {0: "0", 0.5: "2 250", 1: "4 500", 2: "9 000", 5: "22 500", 21: "94 500"},
        "total6600": {0: "0", 0.5: "3 300", 1: "6 600", 2: "13 200", 5: "33 000", 21: "138 600"},
        "excess": {0: "0", 0.5: "500", 1: "1 000", 2: "2 000", 5: "5 000", 21: "21 000"},
        "level1": {0: "1", 0.5: "1,5", 1: "2", 2: "3", 5: "6", 21: "22"},
    },
}
for table in AMOUNTS["ru"].values():
    for key, text in table.items():
        table[key] = text.replace(" ", NBSP)
AMOUNTS["kk"] = AMOUNTS["ru"]


def _record(code: str, variant: str, n: float) -> dict[str, Any]:
    """A feature record whose counted numbers are all ``n``."""
    records: dict[tuple[str, str], dict[str, Any]] = {
        ("NO_CLINICAL_TRACE", "none"): {"has_encounter": 0.0, "records_near_service": 0.0, "service_start": DAY},
        ("NO_CLINICAL_TRACE", "no_encounter"): {"has_encounter": 0.0, "records_near_service": n, "service_start": DAY},
        ("NO_CLINICAL_TRACE", "not_near"): {"has_encounter": 1.0, "records_near_service": 0.0, "service_start": DAY},
        ("SERVICE_ABOVE_DIAGNOSIS", "icu"): {"icu_days_unsupported": n, "dx": "J18.9"},
        ("SERVICE_ABOVE_DIAGNOSIS", "amount"): {
            "amount_ratio_dx": n,
            "total": 4500.0 * n,
            "peer_amount_median": 4500.0,
            "dx": "J06.9",
            "main_tariff": "A03",
            "abnormal_findings": n,
        },
        ("SERVICE_ABOVE_DIAGNOSIS", "level"): {"service_level_excess": n, "service_level": n + 1, "dx": "J06.9"},
        ("PRICE_ABOVE_PEERS", "price"): {"price_ratio_max": n, "price_peer_code": "A01"},
        ("PRICE_ABOVE_PEERS", "quantity"): {"quantity_ratio_max": n, "qty_peer_code": "A02"},
        ("PACKAGE_UNBUNDLED", "full"): {
            "package_unbundled": 1.0,
            "unbundled_package": "P01",
            "unbundling_excess_kzt": 1000.0 * n,
        },
        ("PACKAGE_UNBUNDLED", "partial"): {"package_component_share": 0.75, "unbundled_package": "P01"},
        ("DUPLICATE_CLAIM", "encounter"): {"dup_prior_same_encounter": n},
        ("DUPLICATE_CLAIM", "same_provider"): {
            "dup_prior_same_service": 1.0,
            "dup_prior_same_provider": 1.0,
            "dup_min_days": n,
        },
        ("DUPLICATE_CLAIM", "other_provider"): {
            "dup_prior_same_service": 1.0,
            "dup_prior_same_provider": 0.0,
            "dup_min_days": n,
        },
        ("DUPLICATE_CLAIM", "foreign_encounter"): {"encounter_other_provider": 1.0},
        ("DUPLICATE_CLAIM", "date_gap"): {"encounter_date_gap": n},
        ("SERVICE_AFTER_DEATH", ""): {"days_after_death": n},
        ("HIGH_AMOUNT", ""): {"total": 6600.0 * n, "item_count": n},
    }
    volume = {
        "provider_day_services": n,
        "volume_vs_baseline": n,
        "services_per_staff": n,
        "staff": n,
        "service_start": DAY,
    }
    for v in ("both", "staff", "baseline"):
        records[("VOLUME_OVER_CAPACITY", v)] = volume
    ring = {"patient_providers_90d": n, "pair_shared_patients": n}
    records[("REFERRAL_RING", "cycle")] = {**ring, "patient_referral_cycle": 1.0}
    records[("REFERRAL_RING", "loop")] = {**ring, "referral_loop_link": 1.0}
    records[("REFERRAL_RING", "passthrough")] = {**ring, "referral_passthrough": 1.0}
    records[("REFERRAL_RING", "shared")] = ring
    return records[(code, variant)]


# (code, variant) -> language -> the hand-written sentence; {slot}s take COUNTED or AMOUNTS phrases for n.
EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    ("NO_CLINICAL_TRACE", "none"): {
        "en": "No clinical trace: the claim refers to no encounter, and the patient has no encounter, observation or "
        "procedure recorded within ±1 day of the service (2024-10-01).",
        "ru": "Нет клинического следа: счёт не ссылается на обращение, а в интервале ±1 день от даты услуги "
        "(2024-10-01) у пациента нет ни обращений, ни наблюдений, ни процедур.",
        "kk": "Клиникалық із жоқ: шот ешбір қаралуға сілтеме жасамайды, ал қызмет күнінің ±1 күн аралығында "
        "(2024-10-01) пациентке бірде-бір қаралу, бақылау немесе процедура тіркелмеген.",
    },
    ("NO_CLINICAL_TRACE", "no_encounter"): {
        "en": "The claim refers to no encounter, although the patient has {record} within ±1 day of the service "
        "(2024-10-01).",
        "ru": "Счёт не ссылается ни на одно обращение, хотя в интервале ±1 день от даты услуги (2024-10-01) у "
        "пациента есть {record}.",
        "kk": "Шот ешбір қаралуға сілтеме жасамайды, дегенмен қызмет күнінің ±1 күн аралығында (2024-10-01) пациент "
        "бойынша {record} тіркелген.",
    },
    ("NO_CLINICAL_TRACE", "not_near"): {
        "en": "No clinical trace near the service: the patient has no encounter, observation or procedure recorded "
        "within ±1 day of the service (2024-10-01); the encounter the claim refers to lies outside that window.",
        "ru": "Нет клинического следа рядом с услугой: в интервале ±1 день от даты услуги (2024-10-01) у пациента "
        "нет ни обращений, ни наблюдений, ни процедур; обращение, на которое ссылается счёт, лежит вне этого "
        "интервала.",
        "kk": "Қызметтің маңында клиникалық із жоқ: қызмет күнінің ±1 күн аралығында (2024-10-01) пациентке "
        "бірде-бір қаралу, бақылау немесе процедура тіркелмеген; шот сілтеме жасаған қаралу бұл аралықтан тыс.",
    },
    ("SERVICE_ABOVE_DIAGNOSIS", "icu"): {
        "en": "The claim bills {icu} with no documented oxygen saturation below 92% (diagnosis J18.9).",
        "ru": "Счёт включает {icu} интенсивной терапии без документированной сатурации кислорода ниже 92\u00a0% "
        "(диагноз J18.9).",
        "kk": "Шотқа оттегі сатурациясының 92%-дан төмендігі құжатталмаған {icu} қарқынды терапия жазылған "
        "(диагноз J18.9).",
    },
    ("SERVICE_ABOVE_DIAGNOSIS", "amount"): {
        "en": "Billed {ratio} the regional median for the same diagnosis: {total} vs 4,500 KZT (diagnosis J06.9, "
        "main service A03); {abnormal} documented.",
        "ru": "Счёт в {ratio} выше регионального медианного по тому же диагнозу: {total} против 4\u00a0500 тг "
        "(диагноз J06.9, основная услуга A03); в документации {abnormal}.",
        "kk": "Шот сол диагноз бойынша өңірлік медианадан {ratio} жоғары: {total} / 4\u00a0500 теңге (диагноз J06.9, "
        "негізгі қызмет A03); {abnormal} құжатталған.",
    },
    ("SERVICE_ABOVE_DIAGNOSIS", "level"): {
        "en": "The claim's service level is {level} above the usual level for the same diagnosis (level {level1} vs "
        "1; diagnosis J06.9).",
        "ru": "Уровень услуг в счёте на {level} выше обычного для того же диагноза (уровень {level1} против 1; "
        "диагноз J06.9).",
        "kk": "Шоттағы қызмет деңгейі сол диагноз үшін әдеттегіден {level} жоғары (деңгей {level1} / 1; диагноз "
        "J06.9).",
    },
    ("PRICE_ABOVE_PEERS", "price"): {
        "en": "Unit price {ratio} the regional median for tariff code A01.",
        "ru": "Цена за единицу в {ratio} выше регионального медианного для тарифа A01.",
        "kk": "A01 тарифі бойынша бірлік бағасы өңірлік медианадан {ratio} жоғары.",
    },
    ("PRICE_ABOVE_PEERS", "quantity"): {
        "en": "Quantity {ratio} the regional median for tariff code A02.",
        "ru": "Количество в {ratio} больше регионального медианного для тарифа A02.",
        "kk": "A02 тарифі бойынша саны өңірлік медианадан {ratio} көп.",
    },
    ("PACKAGE_UNBUNDLED", "full"): {
        "en": "Components of package P01 billed separately on one day, {excess} KZT more than the package price.",
        "ru": "Компоненты пакета P01 выставлены по отдельности в один день — на {excess} тг дороже цены пакета.",
        "kk": "P01 пакетінің құрамдас бөліктері бір күнде жеке-жеке есепке жазылған — пакет бағасынан {excess} "
        "теңгеге қымбат.",
    },
    ("PACKAGE_UNBUNDLED", "partial"): {
        "en": "75% of the components of package P01 billed separately on one day.",
        "ru": "75\u00a0% компонентов пакета P01 выставлены по отдельности в один день.",
        "kk": "P01 пакетінің құрамдас бөліктерінің 75%-ы бір күнде жеке-жеке есепке жазылған.",
    },
    ("DUPLICATE_CLAIM", "encounter"): {
        "en": "The same encounter was already billed in {occasions}.",
        "ru": "То же обращение уже выставлялось к оплате {occasions} ранее.",
        "kk": "Дәл осы қаралу бұрын {occasions} есепке жазылған.",
    },
    ("DUPLICATE_CLAIM", "same_provider"): {
        "en": "An earlier claim of the same provider bills the same services for the same patient, dated {day} apart.",
        "ru": "Более ранний счёт того же поставщика содержит те же услуги тому же пациенту; даты услуг расходятся "
        "на {day}.",
        "kk": "Сол жеткізушінің бұрынғы шотында сол пациентке дәл сол қызметтер бар; қызмет күндерінің айырмасы {day}.",
    },
    ("DUPLICATE_CLAIM", "other_provider"): {
        "en": "An earlier claim of another provider bills the same services for the same patient, dated {day} apart.",
        "ru": "Более ранний счёт другого поставщика содержит те же услуги тому же пациенту; даты услуг расходятся "
        "на {day}.",
        "kk": "Басқа жеткізушінің бұрынғы шотында сол пациентке дәл сол қызметтер бар; қызмет күндерінің айырмасы "
        "{day}.",
    },
    ("DUPLICATE_CLAIM", "foreign_encounter"): {
        "en": "The claim refers to an encounter at another provider.",
        "ru": "Счёт ссылается на обращение у другого поставщика.",
        "kk": "Шот басқа жеткізушідегі қаралуға сілтеме жасайды.",
    },
    ("DUPLICATE_CLAIM", "date_gap"): {
        "en": "The service is dated {day} away from the encounter the claim refers to.",
        "ru": "Дата услуги отстоит от даты обращения, на которое ссылается счёт, на {day}.",
        "kk": "Қызмет күні шот сілтеме жасаған қаралу күнінен {day} алшақ.",
    },
    ("SERVICE_AFTER_DEATH", ""): {
        "en": "Service dated {day} after the recorded death.",
        "ru": "Дата услуги — через {day} после зарегистрированной смерти пациента.",
        "kk": "Қызмет тіркелген қайтыс болған күннен {day} өткен соң көрсетілген.",
    },
    ("VOLUME_OVER_CAPACITY", "both"): {
        "en": "The provider billed {service} on the service day (2024-10-01), {ratio} its usual daily volume: "
        "{service} per staff member, with {staff}.",
        "ru": "Объём поставщика в день услуги (2024-10-01): {service} — в {ratio} больше обычного дневного; "
        "{service} на сотрудника, штат — {staff}.",
        "kk": "Жеткізуші қызмет күні (2024-10-01) {service} есепке жазған — әдеттегі күндік көлемнен {ratio} көп: "
        "бір қызметкерге {service}, барлығы {staff}.",
    },
    ("VOLUME_OVER_CAPACITY", "staff"): {
        "en": "The provider billed {service} on the service day (2024-10-01): {service} per staff member, with "
        "{staff}.",
        "ru": "Объём поставщика в день услуги (2024-10-01): {service}, {service} на сотрудника, штат — {staff}.",
        "kk": "Жеткізуші қызмет күні (2024-10-01) {service} есепке жазған: бір қызметкерге {service}, барлығы {staff}.",
    },
    ("VOLUME_OVER_CAPACITY", "baseline"): {
        "en": "The provider billed {service} on the service day (2024-10-01), {ratio} its usual daily volume.",
        "ru": "Объём поставщика в день услуги (2024-10-01): {service} — в {ratio} больше обычного дневного.",
        "kk": "Жеткізуші қызмет күні (2024-10-01) {service} есепке жазған — әдеттегі күндік көлемнен {ratio} көп.",
    },
    ("REFERRAL_RING", "cycle"): {
        "en": "The patient's referrals loop back to this provider ({provider} billed this patient within 90 days).",
        "ru": "Направления пациента замыкаются в петлю на этом поставщике (за 90 дней — {provider} со счетами "
        "этому пациенту).",
        "kk": "Пациенттің жолдамалары осы жеткізушіге қайта оралып, тұйық шеңбер құрайды (90 күн ішінде бұл "
        "пациентке {provider} шот жазған).",
    },
    ("REFERRAL_RING", "loop"): {
        "en": "The referral links providers that refer patients to each other in a loop ({provider} billed this "
        "patient within 90 days).",
        "ru": "Направление связывает поставщиков, замкнутых в петлю взаимных направлений (за 90 дней — {provider} "
        "со счетами этому пациенту).",
        "kk": "Жолдама бір-біріне жолдама жіберетін тұйық шеңбердегі жеткізушілерді байланыстырады (90 күн ішінде "
        "бұл пациентке {provider} шот жазған).",
    },
    ("REFERRAL_RING", "passthrough"): {
        "en": "The patient came to this provider on a referral and was referred on from the same encounter "
        "({provider} billed this patient within 90 days).",
        "ru": "Пациент поступил к поставщику по направлению и с того же обращения направлен дальше (за 90 дней — "
        "{provider} со счетами этому пациенту).",
        "kk": "Пациент бұл жеткізушіге жолдамамен келіп, сол қаралудан әрі қарай жолданған (90 күн ішінде бұл "
        "пациентке {provider} шот жазған).",
    },
    ("REFERRAL_RING", "shared"): {
        "en": "{provider} billed this patient within 90 days; the provider shares {shared} with one of them.",
        "ru": "За 90 дней — {provider} со счетами этому пациенту; у поставщика с одним из них {shared}.",
        "kk": "90 күн ішінде бұл пациентке {provider} шот жазған; жеткізуші мен солардың біреуінде {shared} бар.",
    },
    ("HIGH_AMOUNT", ""): {
        "en": "Claim total {total6600} KZT, {ratio} the typical claim (6,600 KZT), in {item}.",
        "ru": "Сумма счёта {total6600} тг — в {ratio} больше типичного счёта (6\u00a0600 тг); в счёте {item}.",
        "kk": "Шот сомасы {total6600} теңге — әдеттегі шоттан (6\u00a0600 теңге) {ratio} көп; шотта {item} бар.",
    },
}
TYPICAL = {"total": 6600.0}
CASES = [(code, variant, n) for (code, variant) in EXPECTED for n in N]


def _expected(code: str, variant: str, lang: str, n: float) -> str:
    slots = {name: table[n] for name, table in COUNTED[lang].items()}
    slots.update({name: table[n] for name, table in AMOUNTS[lang].items()})
    return EXPECTED[(code, variant)][lang].format(**slots)


def test_the_cases_cover_every_code_and_variant() -> None:
    assert set(EXPECTED) == {(f.code, f.variant) for f in FINDINGS}
    assert set(VARIANTS) == set(REASON_CODES.values())


@pytest.mark.parametrize(("code", "variant", "n"), CASES, ids=[f"{c}-{v or 'only'}-{n}" for c, v, n in CASES])
def test_every_variant_in_every_language_with_counted_numbers(code: str, variant: str, n: float) -> None:
    texts = render(code, variant, _record(code, variant, n), TYPICAL)
    for lang in LANGUAGES:
        assert texts[lang] == _expected(code, variant, lang, n), lang
        assert placeholder_problems(texts[lang], lang) == [], (lang, texts[lang])


def test_plural_forms_of_the_issue() -> None:
    volume = {"provider_day_services": 1, "volume_vs_baseline": 2.5, "service_start": DAY}
    en = render("VOLUME_OVER_CAPACITY", "baseline", volume)["en"]
    assert en == "The provider billed 1 service on the service day (2024-10-01), 2.5 times its usual daily volume."
    ru = {k: render("VOLUME_OVER_CAPACITY", "baseline", {**volume, "provider_day_services": k})["ru"] for k in N}
    for k, phrase in {
        1: ": 1 услуга —",
        2: ": 2 услуги —",
        5: ": 5 услуг —",
        21: ": 21 услуга —",
        0.5: ": 0,5 услуги —",
    }.items():
        assert phrase in ru[k]
    assert "в 2,5 раза больше" in ru[1]
    assert "12\u00a0800,5 тг" in render("PACKAGE_UNBUNDLED", "full", {"unbundling_excess_kzt": 12800.5})["ru"]
    assert "12,800.5 KZT" in render("PACKAGE_UNBUNDLED", "full", {"unbundling_excess_kzt": 12800.5})["en"]
    assert "12\u00a0800,5 теңгеге" in render("PACKAGE_UNBUNDLED", "full", {"unbundling_excess_kzt": 12800.5})["kk"]


def test_percent_shares_per_language() -> None:
    for share, en, ru in ((0.5, "50%", "50\u00a0%"), (1.0, "100%", "100\u00a0%"), (0.8, "80%", "80\u00a0%")):
        texts = render("PACKAGE_UNBUNDLED", "partial", {"package_component_share": share, "unbundled_package": "P02"})
        assert texts["en"] == f"{en} of the components of package P02 billed separately on one day."
        assert texts["ru"] == f"{ru} компонентов пакета P02 выставлены по отдельности в один день."
        assert texts["kk"] == f"P02 пакетінің құрамдас бөліктерінің {en}-ы бір күнде жеке-жеке есепке жазылған."


# --- missing values are phrased -----------------------------------------------------------------------------


def test_missing_values_are_phrased_not_printed() -> None:
    amount = {
        "amount_ratio_dx": 3.2222,
        "total": 14500.0,
        "peer_amount_median": float("nan"),
        "dx": None,
        "main_tariff": "none",
        "abnormal_findings": 1,
    }
    assert render("SERVICE_ABOVE_DIAGNOSIS", "amount", amount) == {
        "en": "Billed 3.2 times the regional median for the same diagnosis: 14,500 KZT, regional median not known "
        "(no diagnosis recorded, main service not recorded); 1 abnormal finding documented.",
        "ru": "Счёт в 3,2 раза выше регионального медианного по тому же диагнозу: 14\u00a0500 тг, региональная "
        "медиана неизвестна (диагноз не указан, основная услуга не указана); в документации 1 отклонение от нормы.",
        "kk": "Шот сол диагноз бойынша өңірлік медианадан 3,2 есе жоғары: 14\u00a0500 теңге, өңірлік медиана белгісіз "
        "(диагноз көрсетілмеген, негізгі қызмет көрсетілмеген); 1 ауытқу құжатталған.",
    }
    assert render("SERVICE_AFTER_DEATH", "", {"days_after_death": None}) == {
        "en": "Service dated an unrecorded number of days after the recorded death.",
        "ru": "Дата услуги — через неизвестное число дней после зарегистрированной смерти пациента.",
        "kk": "Қызмет тіркелген қайтыс болған күннен күн (саны көрсетілмеген) өткен соң көрсетілген.",
    }
    trace = render("NO_CLINICAL_TRACE", "none", {"service_start": None})
    assert trace["en"].endswith("within ±1 day of the service (service date not recorded).")
    assert "(дата услуги не указана)" in trace["ru"]
    assert "(қызмет күні көрсетілмеген)" in trace["kk"]
    assert render("PRICE_ABOVE_PEERS", "price", {"price_ratio_max": 2.0, "price_peer_code": "?"}) == {
        "en": "Unit price 2 times the regional median for a tariff whose code is not recorded.",
        "ru": "Цена за единицу в 2 раза выше регионального медианного для тарифа с неуказанным кодом.",
        "kk": "Коды көрсетілмеген тариф бойынша бірлік бағасы өңірлік медианадан 2 есе жоғары.",
    }
    assert render("PACKAGE_UNBUNDLED", "full", {"package_unbundled": 1.0}) == {
        "en": "Components of a package whose code is not recorded billed separately on one day.",
        "ru": "Компоненты пакета с неуказанным кодом выставлены по отдельности в один день.",
        "kk": "Коды көрсетілмеген пакеттің құрамдас бөліктері бір күнде жеке-жеке есепке жазылған.",
    }
    assert render("HIGH_AMOUNT", "", {"total": 19800.0, "item_count": 4}) == {
        "en": "Claim total 19,800 KZT, in 4 items.",
        "ru": "Сумма счёта 19\u00a0800 тг; в счёте 4 позиции.",
        "kk": "Шот сомасы 19\u00a0800 теңге; шотта 4 позиция бар.",
    }


MISSING_COLUMNS = sorted(
    {c for f in FINDINGS for c in f.features}
    | {
        "dx",
        "main_tariff",
        "service_start",
        "peer_amount_median",
        "price_peer_code",
        "qty_peer_code",
        "unbundled_package",
        "staff",
        "dup_prior_provider_same",
        "unbundling_excess_kzt",
        "abnormal_findings",
        "service_level",
        "dup_min_days",
        "provider_day_services",
        "patient_providers_90d",
        "item_count",
    }
)
MISSING_RECORDS = {
    "empty": {},
    "none": dict.fromkeys(MISSING_COLUMNS),
    "nan": dict.fromkeys(MISSING_COLUMNS, float("nan")),
    "text": dict.fromkeys(MISSING_COLUMNS, "none"),
}


@pytest.mark.parametrize("kind", list(MISSING_RECORDS))
def test_no_variant_prints_a_placeholder_for_missing_values(kind: str) -> None:
    record = MISSING_RECORDS[kind]
    for f in FINDINGS:
        texts = render(f.code, f.variant, record, {"total": float("nan")})
        for lang in LANGUAGES:
            assert placeholder_problems(texts[lang], lang) == [], (f.code, f.variant, lang, texts[lang])
        # a missing value is never evidence
        assert finding(f.code, record, {"total": 6600.0}) is None, (f.code, kind)


# --- the scanner ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "text", "found"),
    [
        ("en", "1 providers billed this patient.", "1 'providers'"),
        ("en", "The provider billed 1 services.", "1 'services'"),
        ("en", "within 2 day of the service", "2 'day'"),
        ("en", "Billed 2.5 times the median for diagnosis none.", "'none'"),
        ("en", "Claim total ? KZT.", "'?'"),
        ("en", "Claim total nan KZT.", "'nan'"),
        ("en", "Diagnosis None.", "'None'"),
        ("ru", "Поставщик выставил 3 услуг.", "3 'услуг'"),
        ("ru", "В счёте 21 позиций.", "21 'позиций'"),
        ("ru", "Через 0,5 дней после смерти.", "0,5 'дней'"),
        ("ru", "Объём: 12\u00a0801 услуг.", "12\u00a0801 'услуг'"),
        ("ru", "На 2 день позже.", "2 'день'"),
        ("kk", "Жеткізуші 5 қызметтер есепке жазған.", "5 'қызметтер'"),
        ("kk", "90 күн ішінде 2 жеткізушілер шот жазған.", "2 'жеткізушілер'"),
        ("kk", "Диагноз {dx}.", "'{'"),
    ],
)
def test_scanner_finds_placeholders_and_unpluralised_forms(lang: str, text: str, found: str) -> None:
    problems = placeholder_problems(text, lang)
    assert any(found in p for p in problems), problems


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("en", "1 provider, 2 providers, 0.5 services, 1 service, 21 days, 1 day, 12,800.5 KZT, diagnosis J06.9."),
        ("ru", "1 услуга, 2 услуги, 5 услуг, 21 услуга, 0,5 услуги, 11 дней, 12\u00a0800,5 тг, диагноз J06.9."),
        ("kk", "5 қызмет, 1 күн, 21 жеткізуші, 0,5 есе, 12\u00a0800,5 теңге, 2024-10-01."),
    ],
)
def test_scanner_accepts_correct_forms(lang: str, text: str) -> None:
    assert placeholder_problems(text, lang) == []


# --- thresholds -----------------------------------------------------------------------------------------------

EPS = 1e-6
# code -> (a record just below its threshold, the same just above it, the variant above)
EDGES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "SERVICE_ABOVE_DIAGNOSIS",
        {"amount_ratio_dx": PEER_RATIO_MIN - EPS, "peer_amount_median": 7800.0},
        {"amount_ratio_dx": PEER_RATIO_MIN, "peer_amount_median": 7800.0},
        "amount",
    ),
    ("SERVICE_ABOVE_DIAGNOSIS", {"service_level_excess": 0.0}, {"service_level_excess": 0.5}, "level"),
    ("SERVICE_ABOVE_DIAGNOSIS", {"icu_days_unsupported": 0.0}, {"icu_days_unsupported": 1.0}, "icu"),
    ("PRICE_ABOVE_PEERS", {"price_ratio_max": PEER_RATIO_MIN - EPS}, {"price_ratio_max": PEER_RATIO_MIN}, "price"),
    (
        "PRICE_ABOVE_PEERS",
        {"quantity_ratio_max": PEER_RATIO_MIN - EPS, "price_ratio_max": 1.0},
        {"quantity_ratio_max": PEER_RATIO_MIN, "price_ratio_max": 1.0},
        "quantity",
    ),
    (
        "VOLUME_OVER_CAPACITY",
        {"volume_vs_baseline": VOLUME_RATIO_MIN - EPS, "services_per_staff": 0.5},
        {"volume_vs_baseline": VOLUME_RATIO_MIN, "services_per_staff": 0.5},
        "baseline",
    ),
    (
        "VOLUME_OVER_CAPACITY",
        {"services_per_staff": SERVICES_PER_STAFF_MIN - EPS, "volume_vs_baseline": 1.0},
        {"services_per_staff": SERVICES_PER_STAFF_MIN, "volume_vs_baseline": 1.0},
        "staff",
    ),
    (
        "VOLUME_OVER_CAPACITY",
        {"services_per_staff": SERVICES_PER_STAFF_MIN - EPS, "volume_vs_baseline": VOLUME_RATIO_MIN - EPS},
        {"services_per_staff": SERVICES_PER_STAFF_MIN, "volume_vs_baseline": VOLUME_RATIO_MIN},
        "both",
    ),
    (
        "PACKAGE_UNBUNDLED",
        {"package_component_share": PACKAGE_SHARE_MIN - EPS, "package_unbundled": 0.0},
        {"package_component_share": PACKAGE_SHARE_MIN, "package_unbundled": 0.0},
        "partial",
    ),
    ("PACKAGE_UNBUNDLED", {"package_unbundled": 0.0}, {"package_unbundled": 1.0}, "full"),
    (
        "REFERRAL_RING",
        {"pair_shared_patients": SHARED_PATIENTS_MIN - 1},
        {"pair_shared_patients": SHARED_PATIENTS_MIN},
        "shared",
    ),
    ("REFERRAL_RING", {"patient_referral_cycle": 0.0}, {"patient_referral_cycle": 1.0}, "cycle"),
    ("REFERRAL_RING", {"referral_loop_link": 0.0}, {"referral_loop_link": 1.0}, "loop"),
    ("REFERRAL_RING", {"referral_passthrough": 0.0}, {"referral_passthrough": 1.0}, "passthrough"),
    ("SERVICE_AFTER_DEATH", {"days_after_death": 0.0}, {"days_after_death": 0.5}, ""),
    (
        "HIGH_AMOUNT",
        {"total": AMOUNT_MULTIPLE_MIN * 6600.0 - 1},
        {"total": AMOUNT_MULTIPLE_MIN * 6600.0},
        "",
    ),
    ("DUPLICATE_CLAIM", {"dup_prior_same_encounter": 0.0}, {"dup_prior_same_encounter": 1.0}, "encounter"),
    (
        "DUPLICATE_CLAIM",
        {"dup_prior_same_service": 0.0, "dup_prior_same_provider": 0.0},
        {"dup_prior_same_service": 1.0, "dup_prior_same_provider": 1.0},
        "same_provider",
    ),
    (
        "DUPLICATE_CLAIM",
        {"dup_prior_same_service": 0.0, "dup_prior_same_provider": 0.0},
        {"dup_prior_same_service": 1.0, "dup_prior_same_provider": 0.0},
        "other_provider",
    ),
    ("DUPLICATE_CLAIM", {"encounter_other_provider": 0.0}, {"encounter_other_provider": 1.0}, "foreign_encounter"),
    ("DUPLICATE_CLAIM", {"encounter_date_gap": 1.0}, {"encounter_date_gap": 2.0}, "date_gap"),
    (
        "NO_CLINICAL_TRACE",
        {"has_encounter": 1.0, "records_near_service": 1.0},
        {"has_encounter": 0.0, "records_near_service": 0.0},
        "none",
    ),
    (
        "NO_CLINICAL_TRACE",
        {"has_encounter": 1.0, "records_near_service": 3.0},
        {"has_encounter": 0.0, "records_near_service": 3.0},
        "no_encounter",
    ),
    (
        "NO_CLINICAL_TRACE",
        {"has_encounter": 1.0, "records_near_service": 1.0},
        {"has_encounter": 1.0, "records_near_service": 0.0},
        "not_near",
    ),
]


@pytest.mark.parametrize(("code", "below", "above", "variant"), EDGES, ids=[f"{e[0]}-{e[3]}" for e in EDGES])
def test_just_below_a_threshold_no_reason_just_above_the_reason(
    code: str, below: dict[str, Any], above: dict[str, Any], variant: str
) -> None:
    group = next(g for g, c in REASON_CODES.items() if c == code)
    assert finding(code, below, TYPICAL) is None
    assert not passes_threshold(group, below, TYPICAL)
    with pytest.raises(NotAFindingError, match=code):
        make_reason(group, 1.0, below, TYPICAL)
    assert finding(code, above, TYPICAL) == variant
    assert passes_threshold(group, above, TYPICAL)
    reason = make_reason(group, 1.0, above, TYPICAL)
    assert (reason.code, reason.variant, reason.group) == (code, variant, group)
    assert reason.en == render(code, variant, above, TYPICAL)["en"]


def test_the_issues_non_findings_give_no_reason() -> None:
    # "1.0 times the regional median (7,800 vs 7,800)" and "0.5 times its usual daily volume"
    assert finding("upcoding", {"amount_ratio_dx": 1.0, "peer_amount_median": 7800.0, "total": 7800.0}) is None
    assert finding("excessive_volume", {"volume_vs_baseline": 0.5, "services_per_staff": 0.25}) is None
    # a ratio above the threshold against an unknown peer median is no finding either
    assert finding("upcoding", {"amount_ratio_dx": 3.0, "peer_amount_median": None}) is None
    # without the typical claim total, a total cannot be called high
    assert finding("HIGH_AMOUNT", {"total": 1e9}) is None


def test_the_variant_is_the_one_whose_condition_holds() -> None:
    # quantity above its threshold and above the price ratio: the quantity sentence, and the reverse
    assert finding("PRICE_ABOVE_PEERS", {"price_ratio_max": 1.6, "quantity_ratio_max": 3.0}) == "quantity"
    assert finding("PRICE_ABOVE_PEERS", {"price_ratio_max": 3.0, "quantity_ratio_max": 1.6}) == "price"
    # a quantity ratio above the price ratio but below the threshold does not take the sentence from the price
    assert finding("PRICE_ABOVE_PEERS", {"price_ratio_max": 1.6, "quantity_ratio_max": 1.4}) == "price"
    # an ICU day without support outranks the amount; the level is quoted only when it is the finding
    assert finding("upcoding", {"icu_days_unsupported": 1, "amount_ratio_dx": 3, "peer_amount_median": 1}) == "icu"
    assert finding("upcoding", {"amount_ratio_dx": 1.2, "peer_amount_median": 1, "service_level_excess": 1}) == "level"


def test_the_document_lists_every_threshold() -> None:
    text = DOC.read_text(encoding="utf-8")
    for f in FINDINGS:
        assert f"`{f.code}`" in text, f.code
        if f.variant:
            assert f"`{f.variant}`" in text, (f.code, f.variant)
    for value in ("1.5", "2", "0.75", "40", "3"):
        assert value in text


# --- the cohort -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort() -> pl.DataFrame:
    if not DATASET.exists():
        pytest.skip(f"{DATASET} is absent (run the features stage of the built-in cohort)")
    return pl.read_parquet(DATASET)


def test_no_variant_prints_a_placeholder_on_cohort_records(cohort: pl.DataFrame) -> None:
    typical = {"total": float(cohort.filter(pl.col("split") == "train")["total"].median())}  # type: ignore[arg-type]
    # every labelled claim and a spread of the others, with some values blanked as a request may leave them
    rows = pl.concat([cohort.filter(pl.col("label") == 1), cohort.filter(pl.col("label") == 0).gather_every(40)])
    records = rows.to_dicts()
    for i, record in enumerate(records):
        if i % 3 == 0:
            record.update(dx=None, main_tariff="none", service_start=None, peer_amount_median=float("nan"))
        for f in FINDINGS:
            texts = render(f.code, f.variant, record, typical)
            for lang in LANGUAGES:
                assert placeholder_problems(texts[lang], lang) == [], (f.code, f.variant, lang, texts[lang])


@pytest.fixture(scope="module")
def cohort_model(cohort: pl.DataFrame) -> Any:
    from pipelines.features.fraud import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from pipelines.modeling.fraud_model import FraudModelConfig, train_fraud_model

    train = cohort.filter(pl.col("split") == "train")
    val = cohort.filter(pl.col("split") == "val")
    return train_fraud_model(
        train,
        train["label"].to_numpy(),
        val,
        val["label"].to_numpy(),
        numeric=[c for c in NUMERIC_FEATURES if c in cohort.columns],
        categorical=[c for c in CATEGORICAL_FEATURES if c in cohort.columns],
        config=FraudModelConfig(hidden=(16, 8), epochs=4, batch_size=256, iforest_trees=20),
        seed=0,
    )


def test_explained_reasons_are_findings_that_raise_the_score(cohort: pl.DataFrame, cohort_model: Any) -> None:
    from pipelines.modeling.fraud_attribution import explain, group_attributions

    test = cohort.filter(pl.col("split") == "test")
    top = np.argsort(-cohort_model.predict(test))[:300]
    sample = pl.concat([test[top.tolist()], test.gather_every(10)])
    reasons = explain(cohort_model, sample, top_n=3)
    attr, names = group_attributions(cohort_model, sample)
    reference = {"total": cohort_model.reference["total"]}
    rows = sample.to_dicts()
    shown = 0
    for i, claim in enumerate(reasons):
        assert len(claim) <= 3
        assert [r.weight for r in claim] == sorted((r.weight for r in claim), reverse=True)
        for r in claim:
            shown += 1
            assert r.weight > 0 and math.isclose(r.weight, attr[i, names.index(r.group)])
            assert passes_threshold(r.code, rows[i], reference), (r.code, r.en)
            assert r.variant == finding(r.code, rows[i], reference)
            for lang in LANGUAGES:
                assert placeholder_problems(getattr(r, lang), lang) == [], getattr(r, lang)
        # a group that raises the score and passes its threshold is never left out for a weaker one
        kept = {r.group for r in claim}
        passing = [
            j
            for j in np.argsort(-attr[i], kind="stable")
            if attr[i, j] > 0 and passes_threshold(names[j], rows[i], reference)
        ]
        assert kept == {names[j] for j in passing[:3]}
    assert shown > 50  # the sample has findings to show

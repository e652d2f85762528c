"""Reason codes of a fraud flag and their sentences in Kazakh, Russian and English, filled with the claim's
numbers.

One reason code per feature group of :data:`pipelines.features.fraud.FEATURE_GROUPS`; :data:`REASON_PATTERN`
maps each code to the fraud pattern it points to (``None`` for the claim amount, which points to none).
Sentences
never name a person: they carry amounts, dates, tariff and ICD-10 codes and counts only.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# feature group -> reason code
REASON_CODES: dict[str, str] = {
    "phantom_billing": "NO_CLINICAL_TRACE",
    "upcoding": "SERVICE_ABOVE_DIAGNOSIS",
    "price": "PRICE_ABOVE_PEERS",
    "unbundling": "PACKAGE_UNBUNDLED",
    "duplicate_claim": "DUPLICATE_CLAIM",
    "services_after_death": "SERVICE_AFTER_DEATH",
    "excessive_volume": "VOLUME_OVER_CAPACITY",
    "collusion_ring": "REFERRAL_RING",
    "amount": "HIGH_AMOUNT",
}
# reason code -> the fraud pattern it is evidence of (price deviations are the upcoding family).
REASON_PATTERN: dict[str, str | None] = {
    "NO_CLINICAL_TRACE": "phantom_billing",
    "SERVICE_ABOVE_DIAGNOSIS": "upcoding",
    "PRICE_ABOVE_PEERS": "upcoding",
    "PACKAGE_UNBUNDLED": "unbundling",
    "DUPLICATE_CLAIM": "duplicate_claim",
    "SERVICE_AFTER_DEATH": "services_after_death",
    "VOLUME_OVER_CAPACITY": "excessive_volume",
    "REFERRAL_RING": "collusion_ring",
    "HIGH_AMOUNT": None,
}
LANGUAGES = ("kk", "ru", "en")


@dataclass(frozen=True)
class Reason:
    """One reason a claim was flagged.

    Attributes:
        code: reason code (see :data:`REASON_CODES`).
        group: the feature group it comes from.
        weight: its attribution (log-odds the group adds to the score against a typical claim).
        kk: the sentence in Kazakh.
        ru: the sentence in Russian.
        en: the sentence in English.
    """

    code: str
    group: str
    weight: float
    kk: str
    ru: str
    en: str

    @property
    def pattern(self) -> str | None:
        """The fraud pattern this reason points to."""
        return REASON_PATTERN.get(self.code)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "code": self.code,
            "group": self.group,
            "weight": self.weight,
            "kk": self.kk,
            "ru": self.ru,
            "en": self.en,
        }


def _num(value: float, lang: str, digits: int = 0) -> str:
    """A number the way each language writes it: ``12,800.5`` (en), ``12 800,5`` (ru, kk)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "?"
    text = f"{value:,.{digits}f}"
    if lang == "en":
        return text
    return text.replace(",", " ").replace(".", ",")


def _date(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return "?" if value is None else str(value)[:10]


def _f(row: Mapping[str, Any], name: str, default: float = 0.0) -> float:
    value = row.get(name)
    if value is None:
        return default
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


Texts = dict[str, str]

# (reason code, variant) -> sentence templates; ``{name}`` placeholders are filled per language by ``_fill``.
TEMPLATES: dict[tuple[str, str], Texts] = {
    ("NO_CLINICAL_TRACE", "none"): {
        "kk": "Клиникалық із жоқ: {day} күнгі қызметке бірде-бір қаралу, бақылау немесе процедура тіркелмеген.",
        "ru": "Нет клинического следа: на услугу от {day} не зарегистрировано ни обращения, ни наблюдения, "
        "ни процедуры.",
        "en": "No clinical trace: no encounter, observation or procedure is recorded for the service on {day}.",
    },
    ("NO_CLINICAL_TRACE", "thin"): {
        "kk": "Есепке жазылған қызметтің құжаттамасы аз: {obs} бақылау және {proc} процедура ({day}).",
        "ru": "Услуга слабо документирована: {obs} наблюдений и {proc} процедур ({day}).",
        "en": "Thin documentation for the billed service: {obs} observations and {proc} procedures ({day}).",
    },
    ("SERVICE_ABOVE_DIAGNOSIS", "icu"): {
        "kk": "{icu} тәулік қарқынды терапия 92 %-дан төмен оттегі сатурациясы құжатталмай есепке жазылған "
        "(диагноз {dx}).",
        "ru": "Оплачено {icu} сут. интенсивной терапии без документированной сатурации ниже 92 % (диагноз {dx}).",
        "en": "{icu} intensive-care day(s) billed with no documented oxygen saturation below 92 % (diagnosis {dx}).",
    },
    ("SERVICE_ABOVE_DIAGNOSIS", "amount"): {
        "kk": "{dx} диагнозы бойынша шот өңірлік медианадан {ratio} есе жоғары ({total} / {median} теңге, "
        "негізгі қызмет {tariff}); құжатталған ауытқулар: {abn}.",
        "ru": "Счёт в {ratio} раза выше регионального медианного для диагноза {dx} ({total} против {median} "
        "тг, основная услуга {tariff}); задокументировано отклонений: {abn}.",
        "en": "Billed {ratio} times the regional median for diagnosis {dx} ({total} vs {median} KZT, main "
        "service {tariff}); {abn} abnormal findings documented.",
    },
    ("PRICE_ABOVE_PEERS", "quantity"): {
        "kk": "{code} тарифі бойынша саны өңірлік медианадан {ratio} есе көп.",
        "ru": "Количество в {ratio} раза больше регионального медианного для тарифа {code}.",
        "en": "Quantity {ratio} times the regional median for tariff code {code}.",
    },
    ("PRICE_ABOVE_PEERS", "price"): {
        "kk": "{code} тарифі бойынша бірлік бағасы өңірлік медианадан {ratio} есе жоғары.",
        "ru": "Цена за единицу в {ratio} раза выше регионального медианного для тарифа {code}.",
        "en": "Billed {ratio} times the regional median unit price for tariff code {code}.",
    },
    ("PACKAGE_UNBUNDLED", "full"): {
        "kk": "{package} пакетінің құрамдас бөліктері бір күнде жеке-жеке есепке жазылған — пакет бағасынан "
        "{excess} теңгеге қымбат.",
        "ru": "Компоненты пакета {package} выставлены по отдельности в один день — на {excess} тг дороже цены пакета.",
        "en": "Components of package {package} billed separately on one day, {excess} KZT more than the package price.",
    },
    ("PACKAGE_UNBUNDLED", "partial"): {
        "kk": "{package} пакеті құрамдас бөліктерінің {share} %-ы бір күнде жеке есепке жазылған.",
        "ru": "{share} % компонентов пакета {package} выставлены по отдельности в один день.",
        "en": "{share} % of the components of package {package} billed separately on one day.",
    },
    ("DUPLICATE_CLAIM", "encounter"): {
        "kk": "Дәл осы қаралу бұрын {n} шотта есепке жазылған.",
        "ru": "Это же обращение уже выставлено в более ранних счетах: {n}.",
        "en": "The same encounter was already billed in {n} earlier claim(s).",
    },
    ("DUPLICATE_CLAIM", "same_provider"): {
        "kk": "Дәл сол қызметтер сол пациентке {days} күн бұрын сол жеткізушімен есепке жазылған.",
        "ru": "Те же услуги тому же пациенту выставлены на {days} дн. раньше тем же поставщиком.",
        "en": "The same services for the same patient were billed {days} day(s) earlier by the same provider.",
    },
    ("DUPLICATE_CLAIM", "other_provider"): {
        "kk": "Дәл сол қызметтер сол пациентке {days} күн бұрын басқа жеткізушімен есепке жазылған.",
        "ru": "Те же услуги тому же пациенту выставлены на {days} дн. раньше другим поставщиком.",
        "en": "The same services for the same patient were billed {days} day(s) earlier by another provider.",
    },
    ("DUPLICATE_CLAIM", "foreign_encounter"): {
        "kk": "Шот басқа жеткізушідегі қаралуға сілтеме жасайды.",
        "ru": "Счёт ссылается на обращение у другого поставщика.",
        "en": "The claim refers to an encounter at another provider.",
    },
    ("DUPLICATE_CLAIM", "date_gap"): {
        "kk": "Қызмет күні шот сілтеме жасаған қаралу күнінен {gap} күнге өзгеше.",
        "ru": "Дата услуги отличается на {gap} дн. от даты обращения, на которое ссылается счёт.",
        "en": "Service dated {gap} day(s) away from the encounter the claim refers to.",
    },
    ("SERVICE_AFTER_DEATH", ""): {
        "kk": "Қызмет тіркелген қайтыс болған күннен {days} күн өткен соң көрсетілген.",
        "ru": "Услуга датирована {days} дн. после зарегистрированной смерти.",
        "en": "Service dated {days} days after the recorded death.",
    },
    ("VOLUME_OVER_CAPACITY", ""): {
        "kk": "Жеткізуші {day} күні {n} қызмет есепке жазған: бір қызметкерге {per} (қызметкерлер: {staff}), "
        "әдеттегі күндік көлемнен {vs} есе көп.",
        "ru": "Поставщик выставил {n} услуг за {day}: {per} на сотрудника (сотрудников: {staff}), в {vs} "
        "раза больше обычного дневного объёма.",
        "en": "The provider billed {n} services on {day}: {per} per staff member ({staff} staff), {vs} times "
        "its usual daily volume.",
    },
    ("REFERRAL_RING", "cycle"): {
        "kk": "Пациенттің жолдамалары осы жеткізушіге қайта оралып, тұйық шеңбер құрайды (90 күнде пациентке "
        "{k} жеткізуші шот жазған).",
        "ru": "Направления пациента замыкаются в петлю на этом поставщике (за 90 дней пациенту выставляли "
        "счета поставщиков: {k}).",
        "en": "The patient's referrals loop back to this provider ({k} providers billed the patient within 90 days).",
    },
    ("REFERRAL_RING", "loop"): {
        "kk": "Жолдама жолдамалар шеңберіндегі жеткізушілерді байланыстырады; 90 күнде бұл пациентке {k} "
        "жеткізуші шот жазған.",
        "ru": "Направление связывает поставщиков, замкнутых в петлю направлений; за 90 дней этому пациенту "
        "выставляли счета поставщиков: {k}.",
        "en": "The referral links providers that refer to each other in a loop; {k} providers billed this "
        "patient within 90 days.",
    },
    ("REFERRAL_RING", "shared"): {
        "kk": "90 күнде бұл пациентке {k} жеткізуші шот жазған; жеткізушінің солардың бірімен {shared} ортақ "
        "пациенті бар.",
        "ru": "За 90 дней этому пациенту выставляли счета поставщиков: {k}; у поставщика {shared} общих "
        "пациентов с одним из них.",
        "en": "{k} providers billed this patient within 90 days; the provider shares {shared} patients with "
        "one of them.",
    },
    ("HIGH_AMOUNT", ""): {
        "kk": "Шот сомасы {total} теңге (позициялар: {items}).",
        "ru": "Сумма счёта {total} тг (позиций: {items}).",
        "en": "Claim total {total} KZT ({items} items).",
    },
}

# A value to fill in: a number with its decimals (formatted per language) or text.
Value = tuple[float, int] | str


def _fill(code: str, variant: str, values: Mapping[str, Value]) -> Texts:
    out = {}
    for lang, template in TEMPLATES[(code, variant)].items():
        filled = {k: v if isinstance(v, str) else _num(v[0], lang, v[1]) for k, v in values.items()}
        out[lang] = template.format(**filled)
    return out


def _int(row: Mapping[str, Any], name: str, default: float = 0.0) -> tuple[float, int]:
    return (float(int(_f(row, name, default))), 0)


def _no_trace(r: Mapping[str, Any]) -> Texts:
    day = _date(r.get("service_start"))
    if _f(r, "has_encounter") <= 0:
        return _fill("NO_CLINICAL_TRACE", "none", {"day": day})
    obs, proc = _int(r, "encounter_observations"), _int(r, "encounter_procedures")
    return _fill("NO_CLINICAL_TRACE", "thin", {"day": day, "obs": obs, "proc": proc})


def _above_diagnosis(r: Mapping[str, Any]) -> Texts:
    dx = str(r.get("dx") or "?")
    icu = _f(r, "icu_days_unsupported")
    if icu > 0:
        return _fill("SERVICE_ABOVE_DIAGNOSIS", "icu", {"icu": (icu, 0), "dx": dx})
    values: dict[str, Value] = {
        "dx": dx,
        "ratio": (_f(r, "amount_ratio_dx", 1.0), 1),
        "total": (_f(r, "total"), 0),
        "median": (_f(r, "peer_amount_median", float("nan")), 0),
        "tariff": str(r.get("main_tariff") or "?"),
        "abn": _int(r, "abnormal_findings"),
    }
    return _fill("SERVICE_ABOVE_DIAGNOSIS", "amount", values)


def _price(r: Mapping[str, Any]) -> Texts:
    pr, qr = _f(r, "price_ratio_max", 1.0), _f(r, "quantity_ratio_max", 1.0)
    if qr > pr:
        return _fill("PRICE_ABOVE_PEERS", "quantity", {"code": str(r.get("qty_peer_code") or "?"), "ratio": (qr, 1)})
    return _fill("PRICE_ABOVE_PEERS", "price", {"code": str(r.get("price_peer_code") or "?"), "ratio": (pr, 1)})


def _unbundled(r: Mapping[str, Any]) -> Texts:
    pkg = str(r.get("unbundled_package") or "?")
    if _f(r, "package_unbundled") > 0:
        return _fill("PACKAGE_UNBUNDLED", "full", {"package": pkg, "excess": (_f(r, "unbundling_excess_kzt"), 0)})
    return _fill("PACKAGE_UNBUNDLED", "partial", {"package": pkg, "share": (100 * _f(r, "package_component_share"), 0)})


def _duplicate(r: Mapping[str, Any]) -> Texts:
    if _f(r, "dup_prior_same_encounter") > 0:
        return _fill("DUPLICATE_CLAIM", "encounter", {"n": _int(r, "dup_prior_same_encounter")})
    if _f(r, "dup_prior_same_service") > 0:
        variant = "same_provider" if r.get("dup_prior_provider_same") else "other_provider"
        return _fill("DUPLICATE_CLAIM", variant, {"days": _int(r, "dup_min_days")})
    if _f(r, "encounter_other_provider") > 0:
        return _fill("DUPLICATE_CLAIM", "foreign_encounter", {})
    return _fill("DUPLICATE_CLAIM", "date_gap", {"gap": _int(r, "encounter_date_gap")})


def _after_death(r: Mapping[str, Any]) -> Texts:
    return _fill("SERVICE_AFTER_DEATH", "", {"days": _int(r, "days_after_death")})


def _volume(r: Mapping[str, Any]) -> Texts:
    values: dict[str, Value] = {
        "n": _int(r, "provider_day_services"),
        "staff": _int(r, "staff", 1.0),
        "per": (_f(r, "services_per_staff"), 1),
        "vs": (_f(r, "volume_vs_baseline", 1.0), 1),
        "day": _date(r.get("service_start")),
    }
    return _fill("VOLUME_OVER_CAPACITY", "", values)


def _ring(r: Mapping[str, Any]) -> Texts:
    k = _int(r, "patient_providers_90d", 1.0)
    if _f(r, "patient_referral_cycle") > 0:
        return _fill("REFERRAL_RING", "cycle", {"k": k})
    if _f(r, "referral_loop_link") > 0:
        return _fill("REFERRAL_RING", "loop", {"k": k})
    return _fill("REFERRAL_RING", "shared", {"k": k, "shared": _int(r, "pair_shared_patients")})


def _amount(r: Mapping[str, Any]) -> Texts:
    return _fill("HIGH_AMOUNT", "", {"total": (_f(r, "total"), 0), "items": _int(r, "item_count")})


_RENDER: dict[str, Callable[[Mapping[str, Any]], Texts]] = {
    "NO_CLINICAL_TRACE": _no_trace,
    "SERVICE_ABOVE_DIAGNOSIS": _above_diagnosis,
    "PRICE_ABOVE_PEERS": _price,
    "PACKAGE_UNBUNDLED": _unbundled,
    "DUPLICATE_CLAIM": _duplicate,
    "SERVICE_AFTER_DEATH": _after_death,
    "VOLUME_OVER_CAPACITY": _volume,
    "REFERRAL_RING": _ring,
    "HIGH_AMOUNT": _amount,
}


def make_reason(group: str, weight: float, record: Mapping[str, Any]) -> Reason:
    """The reason of a feature group for one claim, its sentences filled from the claim's feature record.

    Args:
        group: a key of :data:`REASON_CODES`.
        weight: the group's attribution.
        record: the claim's feature record (one row of the feature frame, as a dict).

    Raises:
        KeyError: an unknown group.
    """
    code = REASON_CODES[group]
    texts = _RENDER[code](record)
    return Reason(code=code, group=group, weight=float(weight), kk=texts["kk"], ru=texts["ru"], en=texts["en"])

"""Reason codes of a fraud flag: when a reason is a finding, and its sentences in Kazakh, Russian and English.

One reason code per feature group of :data:`pipelines.features.fraud.FEATURE_GROUPS`; :data:`REASON_PATTERN`
maps each code to the fraud pattern it points to (``None`` for the claim amount, which points to none).

A reason is shown only when it is a *finding* for the claim: :data:`FINDINGS` is the one table of the
thresholds, one row per reason code and text variant, and :func:`finding` picks the first variant of a code
whose threshold the claim's feature record passes (the sentence then states exactly what passed). Attribution
(:mod:`pipelines.modeling.fraud_attribution`) adds the other half: the group must also raise the claim's score.
``docs/fraud-reasons.md`` documents both.

Sentences follow the CLDR plural rules of each language (Babel): every counted noun agrees with the number
shown (1 service / 2 services; 1 услуга, 2 услуги, 5 услуг, 21 услуга, 0,5 услуги; Kazakh nouns stay singular
after a numeral: 5 қызмет), numbers are written as the locale writes them (``12,800.5``; ``12 800,5`` with a
no-break space), and a missing value is phrased ("no diagnosis recorded"), never printed. Sentences never name a
person: they carry amounts, dates, tariff and ICD-10 codes and counts only. :func:`placeholder_problems` checks a
text for placeholders and unpluralised forms (tests and worklist checks use it).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache, lru_cache
from typing import Any

from babel import Locale
from babel.numbers import format_decimal, format_percent

from pipelines.features.fraud import FraudFeatureOptions

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
GROUP_OF_CODE: dict[str, str] = {code: group for group, code in REASON_CODES.items()}
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

# Windows of the feature definitions that the sentences quote (the defaults of the features stage).
_FEATURE_OPTIONS = FraudFeatureOptions()
TRACE_DAYS = _FEATURE_OPTIONS.trace_days
NEAR_DAYS = _FEATURE_OPTIONS.near_days

# Thresholds of the findings. Chosen on the train split of the built-in cohort
# (data/processed/fraud/dataset.parquet, 8,412 claims, 109 labelled fraudulent); docs/fraud-reasons.md has the table.
# - Peer ratios (amount for the diagnosis, unit price, quantity): 1.5 times the peer median. 8.2 % of training
#   claims bill 1.5 times their diagnosis median (29 of the 109 labelled frauds), 23 % reach 1.25 (ordinary spread
#   of a diagnosis' claims); price and quantity ratios almost never leave 1 in the cohort, so 1.5 is a clear
#   departure from the peers and the same yardstick for all three.
PEER_RATIO_MIN = 1.5
# - Day volume against the provider's own mean day: 2. A small provider's day varies a lot: 14.5 % of training
#   claims fall on a day of 1.5 times the mean (the "0.5 times its usual daily volume" came from such
#   days), 5.7 % reach 2, 0.9 % reach 3.
VOLUME_RATIO_MIN = 2.0
# - Services per staff member on the day: 2. No training claim reaches it (maximum 1.375, 99th percentile 0.75),
#   so a day at 2 is beyond anything the cohort's honest providers bill; on real data set it from the Fund's
#   own capacity norms.
SERVICES_PER_STAFF_MIN = 2.0
# - Share of a package's components billed separately on one day (when the package is not fully unbundled): 0.75.
#   The 95th percentile of training claims; a quarter or a third of a package is routine (47 % reach 0.25).
PACKAGE_SHARE_MIN = 0.75
# - Patients the provider shares with another provider of the patient: 40. Honest providers share patients
#   (training 90th percentile 9, 99th 36; the count grows with the history behind it), and in the cohort the ring's
#   claims share 0 to 17, fewer than many honest pairs: the ring shows in its referral loops, not here. min_shared
#   (3), the edge of the community graph, would make it a reason on 15 % of training claims; 40 is reached by
#   0.75 %, so the sentence stays for data where a ring does share unusually many patients.
SHARED_PATIENTS_MIN = 40.0
# - Claim total against the typical (training median) claim: 3 times. 6.1 % of training claims reach 3 times the
#   median (6,600 KZT), 17.8 % reach 2 times.
AMOUNT_MULTIPLE_MIN = 3.0
# Features whose typical value (the model's training median, else the records' median) a threshold needs.
REFERENCE_COLUMNS = ("total",)


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
        variant: the text variant of :data:`FINDINGS` whose threshold the claim passed ("" for a code with one).
    """

    code: str
    group: str
    weight: float
    kk: str
    ru: str
    en: str
    variant: str = ""

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


class NotAFindingError(ValueError):
    """A reason was asked for a claim whose feature record passes none of its code's thresholds."""


# --- reading a feature record: a missing or non-finite value is None, never a number or a text ---------------

_UNKNOWN_TEXT = frozenset({"", "none", "null", "nan", "unknown", "?"})


def _num(record: Mapping[str, Any], name: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _text(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    text = str(value).strip()
    return None if text.lower() in _UNKNOWN_TEXT else text


def _iso_day(record: Mapping[str, Any], name: str) -> str | None:
    value = record.get(name)
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and re.match(r"\d{4}-\d{2}-\d{2}", value):
        return value[:10]
    return None


def _ge(record: Mapping[str, Any], name: str, threshold: float) -> bool:
    value = _num(record, name)
    return value is not None and value >= threshold


def _gt(record: Mapping[str, Any], name: str, threshold: float) -> bool:
    value = _num(record, name)
    return value is not None and value > threshold


def _is_zero(record: Mapping[str, Any], name: str) -> bool:
    value = _num(record, name)
    return value is not None and value <= 0


def _same_provider_duplicates(record: Mapping[str, Any]) -> float | None:
    """Earlier same-services claims of the same provider (from the count, else the context flag)."""
    count = _num(record, "dup_prior_same_provider")
    if count is not None:
        return count
    flag = record.get("dup_prior_provider_same")
    return None if flag is None else float(bool(flag))


# --- the thresholds: one table ------------------------------------------------------------------------------

Reference = Mapping[str, float]


def _amount_multiple(record: Mapping[str, Any], reference: Reference) -> float | None:
    total, typical = _num(record, "total"), reference.get("total")
    if total is None or typical is None or not math.isfinite(typical) or typical <= 0:
        return None
    return total / typical


@dataclass(frozen=True)
class Finding:
    """One row of the threshold table: when a reason code's text variant states a finding.

    Attributes:
        code: reason code.
        variant: text variant ("" for a code with one).
        features: the feature record's columns the condition reads.
        threshold: the condition, in words (the table of docs/fraud-reasons.md).
        holds: the condition on a feature record and the typical values (:data:`REFERENCE_COLUMNS`).
    """

    code: str
    variant: str
    features: tuple[str, ...]
    threshold: str
    holds: Callable[[Mapping[str, Any], Reference], bool]


# Per code, the variants in order of preference: the first whose condition holds is the sentence shown.
FINDINGS: tuple[Finding, ...] = (
    Finding(
        "NO_CLINICAL_TRACE",
        "none",
        ("has_encounter", "records_near_service"),
        f"no encounter referenced and no encounter, observation or procedure of the patient within "
        f"±{TRACE_DAYS} day of the service",
        lambda r, _: _is_zero(r, "has_encounter") and _is_zero(r, "records_near_service"),
    ),
    Finding(
        "NO_CLINICAL_TRACE",
        "no_encounter",
        ("has_encounter",),
        "the claim refers to no encounter",
        lambda r, _: _is_zero(r, "has_encounter"),
    ),
    Finding(
        "NO_CLINICAL_TRACE",
        "not_near",
        ("records_near_service",),
        f"no encounter, observation or procedure of the patient within ±{TRACE_DAYS} day of the service",
        lambda r, _: _is_zero(r, "records_near_service"),
    ),
    Finding(
        "SERVICE_ABOVE_DIAGNOSIS",
        "icu",
        ("icu_days_unsupported",),
        "intensive-care days without a documented SpO2 below 92 % > 0",
        lambda r, _: _gt(r, "icu_days_unsupported", 0),
    ),
    Finding(
        "SERVICE_ABOVE_DIAGNOSIS",
        "amount",
        ("amount_ratio_dx", "peer_amount_median"),
        f"claim total ≥ {PEER_RATIO_MIN:g} × the peer median of its diagnosis, the median known",
        lambda r, _: _ge(r, "amount_ratio_dx", PEER_RATIO_MIN) and _gt(r, "peer_amount_median", 0),
    ),
    Finding(
        "SERVICE_ABOVE_DIAGNOSIS",
        "level",
        ("service_level_excess",),
        "service level above the peers' median level for the diagnosis (excess > 0)",
        lambda r, _: _gt(r, "service_level_excess", 0),
    ),
    Finding(
        "PRICE_ABOVE_PEERS",
        "price",
        ("price_ratio_max", "quantity_ratio_max"),
        f"unit price ≥ {PEER_RATIO_MIN:g} × the peer median of its tariff code (and not below the quantity ratio)",
        lambda r, _: (
            _ge(r, "price_ratio_max", PEER_RATIO_MIN)
            and (_num(r, "price_ratio_max") or 0.0) >= (_num(r, "quantity_ratio_max") or 0.0)
        ),
    ),
    Finding(
        "PRICE_ABOVE_PEERS",
        "quantity",
        ("quantity_ratio_max",),
        f"quantity ≥ {PEER_RATIO_MIN:g} × the peer median of its tariff code",
        lambda r, _: _ge(r, "quantity_ratio_max", PEER_RATIO_MIN),
    ),
    Finding(
        "PACKAGE_UNBUNDLED",
        "full",
        ("package_unbundled",),
        "every component of a package billed separately on one day, the package itself not billed",
        lambda r, _: _gt(r, "package_unbundled", 0),
    ),
    Finding(
        "PACKAGE_UNBUNDLED",
        "partial",
        ("package_component_share",),
        f"share of a package's components billed separately on one day ≥ {PACKAGE_SHARE_MIN:g}",
        lambda r, _: _ge(r, "package_component_share", PACKAGE_SHARE_MIN),
    ),
    Finding(
        "DUPLICATE_CLAIM",
        "encounter",
        ("dup_prior_same_encounter",),
        "the same encounter billed in an earlier claim (> 0)",
        lambda r, _: _gt(r, "dup_prior_same_encounter", 0),
    ),
    Finding(
        "DUPLICATE_CLAIM",
        "same_provider",
        ("dup_prior_same_service", "dup_prior_same_provider"),
        f"an earlier claim of the same provider with the same services, service dates within "
        f"{_FEATURE_OPTIONS.duplicate_days} days",
        lambda r, _: _gt(r, "dup_prior_same_service", 0) and (_same_provider_duplicates(r) or 0.0) > 0,
    ),
    Finding(
        "DUPLICATE_CLAIM",
        "other_provider",
        ("dup_prior_same_service", "dup_prior_same_provider"),
        f"an earlier claim of another provider with the same services, service dates within "
        f"{_FEATURE_OPTIONS.duplicate_days} days",
        lambda r, _: (
            _gt(r, "dup_prior_same_service", 0)
            and (same := _same_provider_duplicates(r)) is not None
            and (_num(r, "dup_prior_same_service") or 0.0) > same
        ),
    ),
    Finding(
        "DUPLICATE_CLAIM",
        "foreign_encounter",
        ("encounter_other_provider",),
        "the claim refers to an encounter of another provider",
        lambda r, _: _gt(r, "encounter_other_provider", 0),
    ),
    Finding(
        "DUPLICATE_CLAIM",
        "date_gap",
        ("encounter_date_gap",),
        f"service date more than trace_days ({TRACE_DAYS}) away from the claim's encounter",
        lambda r, _: _gt(r, "encounter_date_gap", TRACE_DAYS),
    ),
    Finding(
        "SERVICE_AFTER_DEATH",
        "",
        ("days_after_death",),
        "days between a recorded death and the service > 0",
        lambda r, _: _gt(r, "days_after_death", 0),
    ),
    Finding(
        "VOLUME_OVER_CAPACITY",
        "both",
        ("services_per_staff", "volume_vs_baseline"),
        "both of the two conditions below",
        lambda r, _: (
            _ge(r, "services_per_staff", SERVICES_PER_STAFF_MIN) and _ge(r, "volume_vs_baseline", VOLUME_RATIO_MIN)
        ),
    ),
    Finding(
        "VOLUME_OVER_CAPACITY",
        "staff",
        ("services_per_staff",),
        f"services of the provider's day per staff member ≥ {SERVICES_PER_STAFF_MIN:g}",
        lambda r, _: _ge(r, "services_per_staff", SERVICES_PER_STAFF_MIN),
    ),
    Finding(
        "VOLUME_OVER_CAPACITY",
        "baseline",
        ("volume_vs_baseline",),
        f"services of the provider's day ≥ {VOLUME_RATIO_MIN:g} × its mean day",
        lambda r, _: _ge(r, "volume_vs_baseline", VOLUME_RATIO_MIN),
    ),
    Finding(
        "REFERRAL_RING",
        "cycle",
        ("patient_referral_cycle",),
        "the patient's referrals loop back to the provider",
        lambda r, _: _gt(r, "patient_referral_cycle", 0),
    ),
    Finding(
        "REFERRAL_RING",
        "loop",
        ("referral_loop_link",),
        "the claim's referral links two providers of one referral loop",
        lambda r, _: _gt(r, "referral_loop_link", 0),
    ),
    Finding(
        "REFERRAL_RING",
        "passthrough",
        ("referral_passthrough",),
        "the patient came on a referral and was referred on from the same encounter",
        lambda r, _: _gt(r, "referral_passthrough", 0),
    ),
    Finding(
        "REFERRAL_RING",
        "shared",
        ("pair_shared_patients",),
        f"patients shared with another provider of the patient ≥ {SHARED_PATIENTS_MIN:g}",
        lambda r, _: _ge(r, "pair_shared_patients", SHARED_PATIENTS_MIN),
    ),
    Finding(
        "HIGH_AMOUNT",
        "",
        ("total",),
        f"claim total ≥ {AMOUNT_MULTIPLE_MIN:g} × the typical (training median) claim total",
        lambda r, ref: (m := _amount_multiple(r, ref)) is not None and m >= AMOUNT_MULTIPLE_MIN,
    ),
)
VARIANTS: dict[str, tuple[str, ...]] = {
    code: tuple(f.variant for f in FINDINGS if f.code == code) for code in REASON_PATTERN
}


def _code(code_or_group: str) -> str:
    if code_or_group in REASON_PATTERN:
        return code_or_group
    return REASON_CODES[code_or_group]


def finding(code_or_group: str, record: Mapping[str, Any], reference: Reference | None = None) -> str | None:
    """The text variant whose threshold the claim passes (the first in :data:`FINDINGS` order), or None.

    Args:
        code_or_group: a reason code or its feature group.
        record: the claim's feature record (one row of the feature frame, as a dict).
        reference: typical values of :data:`REFERENCE_COLUMNS` (the model's training medians); without one,
            HIGH_AMOUNT is never a finding.

    Raises:
        KeyError: an unknown code or group.
    """
    code = _code(code_or_group)
    ref = reference or {}
    for row in FINDINGS:
        if row.code == code and row.holds(record, ref):
            return row.variant
    return None


def passes_threshold(code_or_group: str, record: Mapping[str, Any], reference: Reference | None = None) -> bool:
    """Whether the claim's feature record passes one of the code's thresholds (see :func:`finding`)."""
    return finding(code_or_group, record, reference) is not None


# --- numbers and counted nouns per language ------------------------------------------------------------------

_ONE_DECIMAL = Decimal("0.1")


def _decimal(value: float) -> Decimal:
    """The value as shown: one decimal at most, a whole number without one (the plural form reads the same)."""
    d = Decimal(repr(float(value))).quantize(_ONE_DECIMAL, rounding=ROUND_HALF_UP)
    if d == d.to_integral_value():
        d = d.quantize(Decimal(1))
    return Decimal(0) if d.is_zero() else d


@cache
def _locale(lang: str) -> Locale:
    return Locale.parse(lang)


# Babel takes about 30 us a number and 12 us a plural form; a claim's reasons quote a dozen of them in three
# languages, and the service explains every claim it scores. Amounts, counts and ratios repeat, so a cache of the
# pure functions below answers most of them in well under a microsecond.
_TEXT_CACHE = 65536


@lru_cache(maxsize=_TEXT_CACHE)
def number(value: float, lang: str) -> str:
    """A number the way the language writes it: ``12,800.5`` (en), ``12 800,5`` (ru, kk; CLDR's no-break space)."""
    return str(format_decimal(_decimal(value), format="#,##0.#", locale=lang))


def plural_category(value: float | Decimal, lang: str) -> str:
    """The CLDR plural category (one, few, many, other) of the number as shown."""
    d = value if isinstance(value, Decimal) else _decimal(value)
    # Keyed by the text: 1 and 1.0 are equal numbers of different categories in Russian (one, other).
    return _plural_of(str(d), lang)


@lru_cache(maxsize=_TEXT_CACHE)
def _plural_of(shown: str, lang: str) -> str:
    return str(_locale(lang).plural_form(Decimal(shown)))


def _kk(form: str) -> dict[str, str]:
    # Kazakh keeps the noun singular after a numeral, whatever the number.
    return {"one": form, "other": form}


def _ru(one: str, few: str, many: str, other: str) -> dict[str, str]:
    return {"one": one, "few": few, "many": many, "other": other}


def _en(one: str, other: str) -> dict[str, str]:
    return {"one": one, "other": other}


# language -> counted noun -> its form per CLDR plural category (Russian: nominative, which the sentences use).
NOUNS: dict[str, dict[str, dict[str, str]]] = {
    "en": {
        "day": _en("day", "days"),
        "icu_day": _en("intensive-care day", "intensive-care days"),
        "service": _en("service", "services"),
        "times": _en("time", "times"),
        "record": _en("clinical record", "clinical records"),
        "abnormal_finding": _en("abnormal finding", "abnormal findings"),
        "level": _en("level", "levels"),
        "earlier_claim": _en("earlier claim", "earlier claims"),
        "provider": _en("provider", "providers"),
        "patient": _en("patient", "patients"),
        "staff_member": _en("staff member", "staff members"),
        "item": _en("item", "items"),
    },
    "ru": {
        "day": _ru("день", "дня", "дней", "дня"),
        "service": _ru("услуга", "услуги", "услуг", "услуги"),
        "times": _ru("раз", "раза", "раз", "раза"),
        "record": _ru("запись", "записи", "записей", "записи"),
        "abnormal_finding": _ru(
            "отклонение от нормы", "отклонения от нормы", "отклонений от нормы", "отклонения от нормы"
        ),
        "level": _ru("уровень", "уровня", "уровней", "уровня"),
        "provider": _ru("поставщик", "поставщика", "поставщиков", "поставщика"),
        "shared_patient": _ru("общий пациент", "общих пациента", "общих пациентов", "общего пациента"),
        "staff_member": _ru("сотрудник", "сотрудника", "сотрудников", "сотрудника"),
        "item": _ru("позиция", "позиции", "позиций", "позиции"),
    },
    "kk": {
        "day": _kk("күн"),
        "service": _kk("қызмет"),
        "ratio": _kk("есе"),
        "times": _kk("рет"),
        "record": _kk("жазба"),
        "abnormal_finding": _kk("ауытқу"),
        "level": _kk("деңгей"),
        "provider": _kk("жеткізуші"),
        "shared_patient": _kk("ортақ пациент"),
        "staff_member": _kk("қызметкер"),
        "item": _kk("позиция"),
    },
}
# A count that is not known is phrased with the noun's plural: English "other", Russian genitive plural ("many").
_UNKNOWN_COUNT = {
    "en": lambda noun: f"an unrecorded number of {noun['other']}",
    "ru": lambda noun: f"неизвестное число {noun['many']}",
    "kk": lambda noun: f"{noun['other']} (саны көрсетілмеген)",
}


def count(value: float | None, noun: str, lang: str) -> str:
    """``value`` and the noun in the form its number takes: ``2 services``, ``5 услуг``, ``21 услуга``, ``5 қызмет``.

    Args:
        value: the number (None: not known, phrased).
        noun: a key of :data:`NOUNS` for the language.
        lang: kk, ru or en.
    """
    forms = NOUNS[lang][noun]
    if value is None or not math.isfinite(value):
        return _UNKNOWN_COUNT[lang](forms)
    d = _decimal(value)
    return f"{number(value, lang)} {forms[plural_category(d, lang)]}"


def _percent(share: float, lang: str) -> str:
    return str(format_percent(share, locale=lang))


# --- the sentences ------------------------------------------------------------------------------------------

Texts = dict[str, str]


def _counts(value: float | None, nouns: Mapping[str, str]) -> Texts:
    return {lang: count(value, nouns[lang], lang) for lang in LANGUAGES}


def _same(noun: str) -> dict[str, str]:
    return dict.fromkeys(LANGUAGES, noun)


def _numbers(value: float | None, unknown: Texts) -> Texts:
    return {lang: unknown[lang] if value is None else number(value, lang) for lang in LANGUAGES}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _service_day(r: Mapping[str, Any]) -> Texts:
    day = _iso_day(r, "service_start")
    if day is not None:
        return _same(day)
    return {"kk": "қызмет күні көрсетілмеген", "ru": "дата услуги не указана", "en": "service date not recorded"}


def _diagnosis(r: Mapping[str, Any]) -> Texts:
    dx = _text(r, "dx")
    if dx is not None:
        return {"kk": f"диагноз {dx}", "ru": f"диагноз {dx}", "en": f"diagnosis {dx}"}
    return {"kk": "диагноз көрсетілмеген", "ru": "диагноз не указан", "en": "no diagnosis recorded"}


def _main_service(r: Mapping[str, Any]) -> Texts:
    code = _text(r, "main_tariff")
    if code is not None:
        return {"kk": f"негізгі қызмет {code}", "ru": f"основная услуга {code}", "en": f"main service {code}"}
    return {"kk": "негізгі қызмет көрсетілмеген", "ru": "основная услуга не указана", "en": "main service not recorded"}


def _tariff(r: Mapping[str, Any], name: str) -> Texts:
    code = _text(r, name)
    if code is not None:
        return {"kk": f"{code} тарифі бойынша", "ru": f"тарифа {code}", "en": f"tariff code {code}"}
    return {
        "kk": "коды көрсетілмеген тариф бойынша",
        "ru": "тарифа с неуказанным кодом",
        "en": "a tariff whose code is not recorded",
    }


def _package(r: Mapping[str, Any]) -> Texts:
    code = _text(r, "unbundled_package")
    if code is not None:
        return {"kk": f"{code} пакетінің", "ru": f"пакета {code}", "en": f"package {code}"}
    return {
        "kk": "коды көрсетілмеген пакеттің",
        "ru": "пакета с неуказанным кодом",
        "en": "a package whose code is not recorded",
    }


_NOT_KNOWN = {"kk": "белгісіз", "ru": "неизвестно", "en": "not known"}
_RATIO = {"kk": "ratio", "ru": "times", "en": "times"}


def _trace_window() -> Texts:
    return _counts(TRACE_DAYS, _same("day"))


def _no_trace_none(r: Mapping[str, Any], ref: Reference) -> Texts:
    w, day = _trace_window(), _service_day(r)
    return {
        "kk": f"Клиникалық із жоқ: шот ешбір қаралуға сілтеме жасамайды, ал қызмет күнінің ±{w['kk']} аралығында "
        f"({day['kk']}) пациентке бірде-бір қаралу, бақылау немесе процедура тіркелмеген.",
        "ru": f"Нет клинического следа: счёт не ссылается на обращение, а в интервале ±{w['ru']} от даты услуги "
        f"({day['ru']}) у пациента нет ни обращений, ни наблюдений, ни процедур.",
        "en": f"No clinical trace: the claim refers to no encounter, and the patient has no encounter, observation "
        f"or procedure recorded within ±{w['en']} of the service ({day['en']}).",
    }


def _no_trace_no_encounter(r: Mapping[str, Any], ref: Reference) -> Texts:
    w, day = _trace_window(), _service_day(r)
    n = _counts(_num(r, "records_near_service"), _same("record"))
    return {
        "kk": f"Шот ешбір қаралуға сілтеме жасамайды, дегенмен қызмет күнінің ±{w['kk']} аралығында ({day['kk']}) "
        f"пациент бойынша {n['kk']} тіркелген.",
        "ru": f"Счёт не ссылается ни на одно обращение, хотя в интервале ±{w['ru']} от даты услуги ({day['ru']}) у "
        f"пациента есть {n['ru']}.",
        "en": f"The claim refers to no encounter, although the patient has {n['en']} within ±{w['en']} of the "
        f"service ({day['en']}).",
    }


def _no_trace_not_near(r: Mapping[str, Any], ref: Reference) -> Texts:
    w, day = _trace_window(), _service_day(r)
    return {
        "kk": f"Қызметтің маңында клиникалық із жоқ: қызмет күнінің ±{w['kk']} аралығында ({day['kk']}) пациентке "
        f"бірде-бір қаралу, бақылау немесе процедура тіркелмеген; шот сілтеме жасаған қаралу бұл аралықтан тыс.",
        "ru": f"Нет клинического следа рядом с услугой: в интервале ±{w['ru']} от даты услуги ({day['ru']}) у "
        f"пациента нет ни обращений, ни наблюдений, ни процедур; обращение, на которое ссылается счёт, лежит вне "
        f"этого интервала.",
        "en": f"No clinical trace near the service: the patient has no encounter, observation or procedure "
        f"recorded within ±{w['en']} of the service ({day['en']}); the encounter the claim refers to lies outside "
        f"that window.",
    }


def _above_dx_icu(r: Mapping[str, Any], ref: Reference) -> Texts:
    days = _num(r, "icu_days_unsupported")
    n = _counts(days, {"kk": "day", "ru": "day", "en": "icu_day"})
    dx = _diagnosis(r)
    spo2 = {lang: _percent(0.92, lang) for lang in LANGUAGES}
    return {
        "kk": f"Шотқа оттегі сатурациясының {spo2['kk']}-дан төмендігі құжатталмаған {n['kk']} қарқынды терапия "
        f"жазылған ({dx['kk']}).",
        "ru": f"Счёт включает {n['ru']} интенсивной терапии без документированной сатурации кислорода ниже "
        f"{spo2['ru']} ({dx['ru']}).",
        "en": f"The claim bills {n['en']} with no documented oxygen saturation below {spo2['en']} ({dx['en']}).",
    }


def _money(total: float | None, median: float | None) -> Texts:
    if total is None:
        return {"kk": "сомасы көрсетілмеген", "ru": "сумма не указана", "en": "claim total not recorded"}
    t = _numbers(total, _NOT_KNOWN)
    if median is None or median <= 0:
        return {
            "kk": f"{t['kk']} теңге, өңірлік медиана белгісіз",
            "ru": f"{t['ru']} тг, региональная медиана неизвестна",
            "en": f"{t['en']} KZT, regional median not known",
        }
    m = _numbers(median, _NOT_KNOWN)
    return {
        "kk": f"{t['kk']} / {m['kk']} теңге",
        "ru": f"{t['ru']} против {m['ru']} тг",
        "en": f"{t['en']} vs {m['en']} KZT",
    }


def _above_dx_amount(r: Mapping[str, Any], ref: Reference) -> Texts:
    ratio = _counts(_num(r, "amount_ratio_dx"), _RATIO)
    money = _money(_num(r, "total"), _num(r, "peer_amount_median"))
    dx, main = _diagnosis(r), _main_service(r)
    abn = _counts(_num(r, "abnormal_findings"), _same("abnormal_finding"))
    return {
        "kk": f"Шот сол диагноз бойынша өңірлік медианадан {ratio['kk']} жоғары: {money['kk']} ({dx['kk']}, "
        f"{main['kk']}); {abn['kk']} құжатталған.",
        "ru": f"Счёт в {ratio['ru']} выше регионального медианного по тому же диагнозу: {money['ru']} ({dx['ru']}, "
        f"{main['ru']}); в документации {abn['ru']}.",
        "en": f"Billed {ratio['en']} the regional median for the same diagnosis: {money['en']} ({dx['en']}, "
        f"{main['en']}); {abn['en']} documented.",
    }


def _above_dx_level(r: Mapping[str, Any], ref: Reference) -> Texts:
    excess, level = _num(r, "service_level_excess"), _num(r, "service_level")
    x = _counts(excess, _same("level"))
    dx = _diagnosis(r)
    if excess is not None and level is not None:
        lv, peer = _numbers(level, _NOT_KNOWN), _numbers(level - excess, _NOT_KNOWN)
        levels = {
            "kk": f"деңгей {lv['kk']} / {peer['kk']}",
            "ru": f"уровень {lv['ru']} против {peer['ru']}",
            "en": f"level {lv['en']} vs {peer['en']}",
        }
    else:
        levels = {"kk": "деңгейлері көрсетілмеген", "ru": "уровни не указаны", "en": "levels not recorded"}
    return {
        "kk": f"Шоттағы қызмет деңгейі сол диагноз үшін әдеттегіден {x['kk']} жоғары ({levels['kk']}; {dx['kk']}).",
        "ru": f"Уровень услуг в счёте на {x['ru']} выше обычного для того же диагноза ({levels['ru']}; {dx['ru']}).",
        "en": f"The claim's service level is {x['en']} above the usual level for the same diagnosis ({levels['en']}; "
        f"{dx['en']}).",
    }


def _price_price(r: Mapping[str, Any], ref: Reference) -> Texts:
    ratio = _counts(_num(r, "price_ratio_max"), _RATIO)
    code = _tariff(r, "price_peer_code")
    return {
        "kk": f"{_cap(code['kk'])} бірлік бағасы өңірлік медианадан {ratio['kk']} жоғары.",
        "ru": f"Цена за единицу в {ratio['ru']} выше регионального медианного для {code['ru']}.",
        "en": f"Unit price {ratio['en']} the regional median for {code['en']}.",
    }


def _price_quantity(r: Mapping[str, Any], ref: Reference) -> Texts:
    ratio = _counts(_num(r, "quantity_ratio_max"), _RATIO)
    code = _tariff(r, "qty_peer_code")
    return {
        "kk": f"{_cap(code['kk'])} саны өңірлік медианадан {ratio['kk']} көп.",
        "ru": f"Количество в {ratio['ru']} больше регионального медианного для {code['ru']}.",
        "en": f"Quantity {ratio['en']} the regional median for {code['en']}.",
    }


def _unbundled_full(r: Mapping[str, Any], ref: Reference) -> Texts:
    pkg = _package(r)
    excess = _num(r, "unbundling_excess_kzt")
    if excess is None:
        more = _same("")
    else:
        x = _numbers(excess, _NOT_KNOWN)
        more = {
            "kk": f" — пакет бағасынан {x['kk']} теңгеге қымбат",
            "ru": f" — на {x['ru']} тг дороже цены пакета",
            "en": f", {x['en']} KZT more than the package price",
        }
    return {
        "kk": f"{_cap(pkg['kk'])} құрамдас бөліктері бір күнде жеке-жеке есепке жазылған{more['kk']}.",
        "ru": f"Компоненты {pkg['ru']} выставлены по отдельности в один день{more['ru']}.",
        "en": f"Components of {pkg['en']} billed separately on one day{more['en']}.",
    }


def _unbundled_partial(r: Mapping[str, Any], ref: Reference) -> Texts:
    pkg = _package(r)
    share = _num(r, "package_component_share")
    if share is None:
        part = {"kk": "бір бөлігі", "ru": "Некоторые компоненты", "en": "Some of the components"}
    else:
        pct = {lang: _percent(share, lang) for lang in LANGUAGES}
        part = {"kk": f"{pct['kk']}-ы", "ru": f"{pct['ru']} компонентов", "en": f"{pct['en']} of the components"}
    return {
        "kk": f"{_cap(pkg['kk'])} құрамдас бөліктерінің {part['kk']} бір күнде жеке-жеке есепке жазылған.",
        "ru": f"{part['ru']} {pkg['ru']} выставлены по отдельности в один день.",
        "en": f"{part['en']} of {pkg['en']} billed separately on one day.",
    }


def _dup_encounter(r: Mapping[str, Any], ref: Reference) -> Texts:
    n = _counts(_num(r, "dup_prior_same_encounter"), {"kk": "times", "ru": "times", "en": "earlier_claim"})
    return {
        "kk": f"Дәл осы қаралу бұрын {n['kk']} есепке жазылған.",
        "ru": f"То же обращение уже выставлялось к оплате {n['ru']} ранее.",
        "en": f"The same encounter was already billed in {n['en']}.",
    }


def _dup_services(r: Mapping[str, Any], same_provider: bool) -> Texts:
    d = _counts(_num(r, "dup_min_days"), _same("day"))
    who = (
        {"kk": "Сол жеткізушінің", "ru": "того же поставщика", "en": "the same provider"}
        if same_provider
        else {"kk": "Басқа жеткізушінің", "ru": "другого поставщика", "en": "another provider"}
    )
    return {
        "kk": f"{who['kk']} бұрынғы шотында сол пациентке дәл сол қызметтер бар; қызмет күндерінің айырмасы {d['kk']}.",
        "ru": f"Более ранний счёт {who['ru']} содержит те же услуги тому же пациенту; даты услуг расходятся на "
        f"{d['ru']}.",
        "en": f"An earlier claim of {who['en']} bills the same services for the same patient, dated {d['en']} apart.",
    }


def _dup_foreign(r: Mapping[str, Any], ref: Reference) -> Texts:
    return {
        "kk": "Шот басқа жеткізушідегі қаралуға сілтеме жасайды.",
        "ru": "Счёт ссылается на обращение у другого поставщика.",
        "en": "The claim refers to an encounter at another provider.",
    }


def _dup_date_gap(r: Mapping[str, Any], ref: Reference) -> Texts:
    g = _counts(_num(r, "encounter_date_gap"), _same("day"))
    return {
        "kk": f"Қызмет күні шот сілтеме жасаған қаралу күнінен {g['kk']} алшақ.",
        "ru": f"Дата услуги отстоит от даты обращения, на которое ссылается счёт, на {g['ru']}.",
        "en": f"The service is dated {g['en']} away from the encounter the claim refers to.",
    }


def _after_death(r: Mapping[str, Any], ref: Reference) -> Texts:
    d = _counts(_num(r, "days_after_death"), _same("day"))
    return {
        "kk": f"Қызмет тіркелген қайтыс болған күннен {d['kk']} өткен соң көрсетілген.",
        "ru": f"Дата услуги — через {d['ru']} после зарегистрированной смерти пациента.",
        "en": f"Service dated {d['en']} after the recorded death.",
    }


def _volume(r: Mapping[str, Any], *, staff: bool, baseline: bool) -> Texts:
    day = _service_day(r)
    n = _counts(_num(r, "provider_day_services"), _same("service"))
    v = _counts(_num(r, "volume_vs_baseline"), _RATIO)
    p = _counts(_num(r, "services_per_staff"), _same("service"))
    s = _counts(_num(r, "staff"), _same("staff_member"))
    head = {
        "kk": f"Жеткізуші қызмет күні ({day['kk']}) {n['kk']} есепке жазған",
        "ru": f"Объём поставщика в день услуги ({day['ru']}): {n['ru']}",
        "en": f"The provider billed {n['en']} on the service day ({day['en']})",
    }
    vs = {
        "kk": f" — әдеттегі күндік көлемнен {v['kk']} көп",
        "ru": f" — в {v['ru']} больше обычного дневного",
        "en": f", {v['en']} its usual daily volume",
    }
    per = {
        "kk": f": бір қызметкерге {p['kk']}, барлығы {s['kk']}",
        "ru": f"{';' if baseline else ','} {p['ru']} на сотрудника, штат — {s['ru']}",
        "en": f": {p['en']} per staff member, with {s['en']}",
    }
    return {
        lang: head[lang] + (vs[lang] if baseline else "") + (per[lang] if staff else "") + "." for lang in LANGUAGES
    }


def _providers_nearby(r: Mapping[str, Any]) -> Texts:
    k = _counts(_num(r, "patient_providers_90d"), _same("provider"))
    w = _counts(NEAR_DAYS, _same("day"))
    return {
        "kk": f"{w['kk']} ішінде бұл пациентке {k['kk']} шот жазған",
        "ru": f"за {w['ru']} — {k['ru']} со счетами этому пациенту",
        "en": f"{k['en']} billed this patient within {w['en']}",
    }


def _ring(r: Mapping[str, Any], sentence: Texts) -> Texts:
    near = _providers_nearby(r)
    return {lang: f"{sentence[lang]} ({near[lang]})." for lang in LANGUAGES}


def _ring_cycle(r: Mapping[str, Any], ref: Reference) -> Texts:
    return _ring(
        r,
        {
            "kk": "Пациенттің жолдамалары осы жеткізушіге қайта оралып, тұйық шеңбер құрайды",
            "ru": "Направления пациента замыкаются в петлю на этом поставщике",
            "en": "The patient's referrals loop back to this provider",
        },
    )


def _ring_loop(r: Mapping[str, Any], ref: Reference) -> Texts:
    return _ring(
        r,
        {
            "kk": "Жолдама бір-біріне жолдама жіберетін тұйық шеңбердегі жеткізушілерді байланыстырады",
            "ru": "Направление связывает поставщиков, замкнутых в петлю взаимных направлений",
            "en": "The referral links providers that refer patients to each other in a loop",
        },
    )


def _ring_passthrough(r: Mapping[str, Any], ref: Reference) -> Texts:
    return _ring(
        r,
        {
            "kk": "Пациент бұл жеткізушіге жолдамамен келіп, сол қаралудан әрі қарай жолданған",
            "ru": "Пациент поступил к поставщику по направлению и с того же обращения направлен дальше",
            "en": "The patient came to this provider on a referral and was referred on from the same encounter",
        },
    )


def _ring_shared(r: Mapping[str, Any], ref: Reference) -> Texts:
    near = _providers_nearby(r)
    s = _counts(_num(r, "pair_shared_patients"), {"kk": "shared_patient", "ru": "shared_patient", "en": "patient"})
    return {
        "kk": f"{_cap(near['kk'])}; жеткізуші мен солардың біреуінде {s['kk']} бар.",
        "ru": f"{_cap(near['ru'])}; у поставщика с одним из них {s['ru']}.",
        "en": f"{_cap(near['en'])}; the provider shares {s['en']} with one of them.",
    }


def _high_amount(r: Mapping[str, Any], ref: Reference) -> Texts:
    total = _num(r, "total")
    t = _numbers(total, _NOT_KNOWN)
    items = _counts(_num(r, "item_count"), _same("item"))
    multiple = _amount_multiple(r, ref)
    typical = ref.get("total")
    if total is None:
        head = {"kk": "Шот сомасы көрсетілмеген", "ru": "Сумма счёта не указана", "en": "Claim total not recorded"}
    elif multiple is None or typical is None:
        head = {
            "kk": f"Шот сомасы {t['kk']} теңге",
            "ru": f"Сумма счёта {t['ru']} тг",
            "en": f"Claim total {t['en']} KZT",
        }
    else:
        m, typ = _counts(multiple, _RATIO), _numbers(typical, _NOT_KNOWN)
        head = {
            "kk": f"Шот сомасы {t['kk']} теңге — әдеттегі шоттан ({typ['kk']} теңге) {m['kk']} көп",
            "ru": f"Сумма счёта {t['ru']} тг — в {m['ru']} больше типичного счёта ({typ['ru']} тг)",
            "en": f"Claim total {t['en']} KZT, {m['en']} the typical claim ({typ['en']} KZT)",
        }
    return {
        "kk": f"{head['kk']}; шотта {items['kk']} бар.",
        "ru": f"{head['ru']}; в счёте {items['ru']}.",
        "en": f"{head['en']}, in {items['en']}.",
    }


Renderer = Callable[[Mapping[str, Any], Reference], Texts]
_RENDER: dict[tuple[str, str], Renderer] = {
    ("NO_CLINICAL_TRACE", "none"): _no_trace_none,
    ("NO_CLINICAL_TRACE", "no_encounter"): _no_trace_no_encounter,
    ("NO_CLINICAL_TRACE", "not_near"): _no_trace_not_near,
    ("SERVICE_ABOVE_DIAGNOSIS", "icu"): _above_dx_icu,
    ("SERVICE_ABOVE_DIAGNOSIS", "amount"): _above_dx_amount,
    ("SERVICE_ABOVE_DIAGNOSIS", "level"): _above_dx_level,
    ("PRICE_ABOVE_PEERS", "price"): _price_price,
    ("PRICE_ABOVE_PEERS", "quantity"): _price_quantity,
    ("PACKAGE_UNBUNDLED", "full"): _unbundled_full,
    ("PACKAGE_UNBUNDLED", "partial"): _unbundled_partial,
    ("DUPLICATE_CLAIM", "encounter"): _dup_encounter,
    ("DUPLICATE_CLAIM", "same_provider"): lambda r, _: _dup_services(r, True),
    ("DUPLICATE_CLAIM", "other_provider"): lambda r, _: _dup_services(r, False),
    ("DUPLICATE_CLAIM", "foreign_encounter"): _dup_foreign,
    ("DUPLICATE_CLAIM", "date_gap"): _dup_date_gap,
    ("SERVICE_AFTER_DEATH", ""): _after_death,
    ("VOLUME_OVER_CAPACITY", "both"): lambda r, _: _volume(r, staff=True, baseline=True),
    ("VOLUME_OVER_CAPACITY", "staff"): lambda r, _: _volume(r, staff=True, baseline=False),
    ("VOLUME_OVER_CAPACITY", "baseline"): lambda r, _: _volume(r, staff=False, baseline=True),
    ("REFERRAL_RING", "cycle"): _ring_cycle,
    ("REFERRAL_RING", "loop"): _ring_loop,
    ("REFERRAL_RING", "passthrough"): _ring_passthrough,
    ("REFERRAL_RING", "shared"): _ring_shared,
    ("HIGH_AMOUNT", ""): _high_amount,
}


def render(code: str, variant: str, record: Mapping[str, Any], reference: Reference | None = None) -> Texts:
    """The sentences of one text variant, filled from a feature record, whether or not its threshold holds.

    Args:
        code: a reason code.
        variant: one of ``VARIANTS[code]``.
        record: the claim's feature record.
        reference: typical values of :data:`REFERENCE_COLUMNS` (HIGH_AMOUNT quotes the typical total).

    Returns:
        Language -> sentence.

    Raises:
        KeyError: an unknown code or variant.
    """
    return _RENDER[(code, variant)](record, reference or {})


def make_reason(group: str, weight: float, record: Mapping[str, Any], reference: Reference | None = None) -> Reason:
    """The reason of a feature group for one claim: the variant whose threshold it passes, filled from its record.

    Args:
        group: a key of :data:`REASON_CODES`.
        weight: the group's attribution.
        record: the claim's feature record (one row of the feature frame, as a dict).
        reference: typical values of :data:`REFERENCE_COLUMNS` (the model's training medians).

    Raises:
        KeyError: an unknown group.
        NotAFindingError: the record passes none of the code's thresholds.
    """
    code = REASON_CODES[group]
    variant = finding(code, record, reference)
    if variant is None:
        raise NotAFindingError(f"{code}: the claim passes none of its thresholds (see FINDINGS)")
    texts = render(code, variant, record, reference)
    return Reason(
        code=code, group=group, weight=float(weight), kk=texts["kk"], ru=texts["ru"], en=texts["en"], variant=variant
    )


# --- checking texts -------------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\b(?:None|none|null|NULL|nan|NaN|inf|Infinity)\b|[?{}]")
_NUMBER = {
    "en": re.compile(r"(?<![\w.,\-])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\d\w])"),
    "ru": re.compile(r"(?<![\w.,\-])(\d{1,3}(?:[\u00a0\u202f ]\d{3})+|\d+)(?:,(\d+))?(?![\d\w])"),
}
_NUMBER["kk"] = _NUMBER["ru"]
_KK_PLURAL = "(?:лар|лер|дар|дер|тар|тер)"


def placeholder_problems(text: str, lang: str) -> list[str]:
    """What is wrong in a reason text: a placeholder, or a counted noun not in the form its number takes.

    Looks for ``None``/``none``/``nan``/``null``/``inf`` as words, ``?`` and template braces; and, after every
    number, for a noun of :data:`NOUNS` in a form other than the one CLDR gives that number (``1 services``,
    ``3 услуг``), or, in Kazakh, a plural noun after a numeral (``5 қызметтер``).

    Args:
        text: a sentence or several (a worklist cell).
        lang: kk, ru or en.

    Returns:
        One line per problem (empty when none).
    """
    problems = [f"placeholder {m.group(0)!r} at {m.start()}" for m in _PLACEHOLDER.finditer(text)]
    nouns = NOUNS[lang]
    forms = sorted({f for noun in nouns.values() for f in noun.values()}, key=len, reverse=True)
    for m in _NUMBER[lang].finditer(text):
        rest = text[m.end() :]
        gap = re.match(r"[ \u00a0]+", rest)
        if gap is None:
            continue
        after = rest[gap.end() :]
        whole, frac = m.group(1), m.group(2)
        digits = re.sub(r"[^\d]", "", whole) + (f".{frac}" if frac else "")
        try:
            value = Decimal(digits)
        except InvalidOperation:
            continue
        category = plural_category(value, lang)
        shown = f"{m.group(0)} "
        if lang == "kk":
            plural = re.match(rf"({'|'.join(map(re.escape, forms))}){_KK_PLURAL}\w*", after)
            if plural:
                problems.append(f"{shown}{plural.group(0)!r}: Kazakh keeps the noun singular after a numeral")
            continue
        word = next((f for f in forms if after.startswith(f) and not after[len(f) : len(f) + 1].isalpha()), None)
        if word is None:
            continue
        expected = [noun[category] for noun in nouns.values() if word in noun.values()]
        if word not in expected:
            problems.append(f"{shown}{word!r}: the number takes {' or '.join(sorted(set(expected)))!r}")
    return problems

"""Rule hits: deterministic evidence in a claim's feature record that puts it on the investigators' list.

A rule hit is a fact a person can check in the records, not a score: the model's probability is shown beside it,
never changed by it. Each rule reads columns of the claim feature records (``data/processed/fraud/dataset.parquet``,
see :data:`pipelines.features.fraud.FEATURE_GROUPS`):

- ``SERVICE_AFTER_DEATH``: ``days_after_death > 0``, the last service is dated after a death recorded by the
  claim's date.
- ``PACKAGE_UNBUNDLED``: ``package_unbundled > 0``, every component of a package tariff billed separately (the
  package itself not billed) to one patient by one provider on one day.
- ``EXACT_DUPLICATE``: ``dup_prior_same_encounter > 0`` and ``dup_prior_same_service > 0``, the claim bills an
  encounter that an earlier claim already billed, and an earlier claim of the patient billed the same services
  within the duplicate window (``duplicate_days`` of the features stage).
- ``ENCOUNTER_MISMATCH``: ``encounter_other_provider > 0`` or ``encounter_date_gap > 0``, the claim bills an
  encounter documented by another provider, or dated on another day than the billed service.

A missing value never hits. Only rules that are certain on the built-in cohort are kept (every hit a fraudulent
claim, on the training, validation and test months alike; ``shipa evaluate fraud`` reports each rule's precision
against the cohort's truth and the audit findings, see docs/fraud-worklist.md). ``EXACT_DUPLICATE`` reads the
order in which claims were billed: the copy billed later is the duplicate. A Fund's resubmission comes after the
bill it copies, and the cohort's generator now creates each duplicate at least a day after its original (an
earlier generator sometimes created the copy first, so the rule flagged the clean original and was left out).
"The same services for the patient on the same day" alone is not evidence: it is mostly a patient's repeat visit.
On the cohort every ``ENCOUNTER_MISMATCH`` hit is also an ``EXACT_DUPLICATE`` hit; it stays because it names a
different fact (whose encounter, which day) and needs no earlier claim in the history.

Sentences quote the claim's numbers in Kazakh, Russian and English with the CLDR plural forms and number formats
of :mod:`pipelines.fraud.reason_texts` (Babel): 1 день, 2 дня, 5 дней; 1 day, 2 days; Kazakh nouns after a
numeral do not inflect (5 күн).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from pipelines.fraud.reason_texts import count, number

SEPARATOR = " | "


@dataclass(frozen=True)
class Rule:
    """One deterministic rule.

    Attributes:
        code: the rule code shown in worklists and by the service.
        pattern: the fraud pattern it is evidence of.
        columns: the feature columns it reads.
        condition: the condition in words (documentation; :attr:`holds` is the definition).
        holds: whether the rule hits one claim record (a dict of its columns; a missing or non-finite value
            counts as 0, so it never hits). Plain Python rather than a polars expression: the service checks one
            claim at a time, where a polars query costs about half a millisecond and this a microsecond.
    """

    code: str
    pattern: str
    columns: tuple[str, ...]
    condition: str
    holds: Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class RuleHit:
    """A rule that hit one claim, with its sentence in each language.

    Attributes:
        code: the rule code.
        pattern: the fraud pattern it is evidence of.
        kk: the sentence in Kazakh.
        ru: the sentence in Russian.
        en: the sentence in English.
    """

    code: str
    pattern: str
    kk: str
    ru: str
    en: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready fields."""
        return {"code": self.code, "pattern": self.pattern, "kk": self.kk, "ru": self.ru, "en": self.en}


def _positive(row: Mapping[str, Any], column: str) -> bool:
    return _value(row, column) > 0


RULES: tuple[Rule, ...] = (
    Rule(
        "SERVICE_AFTER_DEATH",
        "services_after_death",
        ("days_after_death",),
        "days_after_death > 0: the last service is dated after a death recorded by the claim's date",
        lambda r: _positive(r, "days_after_death"),
    ),
    Rule(
        "PACKAGE_UNBUNDLED",
        "unbundling",
        ("package_unbundled",),
        "package_unbundled > 0: every component of a package tariff billed separately to one patient by one "
        "provider on one day, the package itself not billed",
        lambda r: _positive(r, "package_unbundled"),
    ),
    Rule(
        "EXACT_DUPLICATE",
        "duplicate_claim",
        ("dup_prior_same_encounter", "dup_prior_same_service"),
        "dup_prior_same_encounter > 0 and dup_prior_same_service > 0: an earlier claim already billed the same "
        "encounter, and an earlier claim of the patient billed the same services within the duplicate window",
        lambda r: _positive(r, "dup_prior_same_encounter") and _positive(r, "dup_prior_same_service"),
    ),
    Rule(
        "ENCOUNTER_MISMATCH",
        "duplicate_claim",
        ("encounter_other_provider", "encounter_date_gap"),
        "encounter_other_provider > 0 or encounter_date_gap > 0: the claim bills an encounter documented by "
        "another provider, or dated on another day than the billed service",
        lambda r: _positive(r, "encounter_other_provider") or _positive(r, "encounter_date_gap"),
    ),
)
RULE_CODES: tuple[str, ...] = tuple(r.code for r in RULES)


# --- reading a record ------------------------------------------------------------------------------------------


def _value(row: Mapping[str, Any], name: str) -> float:
    v = row.get(name)
    if v is None:
        return 0.0
    f = float(v)
    return f if math.isfinite(f) else 0.0


def _date(row: Mapping[str, Any], name: str) -> str | None:
    v = row.get(name)
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    return None


# --- sentences ----------------------------------------------------------------------------------------------------


def _after_death(row: Mapping[str, Any]) -> dict[str, str]:
    n = _value(row, "days_after_death")
    died = _date(row, "deceased_date")
    if died is None:
        return {
            "kk": f"Қызмет тіркелген қайтыс болу күнінен {count(n, 'day', 'kk')} кейін көрсетілген.",
            "ru": f"Услуга записана через {count(n, 'day', 'ru')} после зарегистрированной смерти.",
            "en": f"Service dated {count(n, 'day', 'en')} after the recorded death.",
        }
    return {
        "kk": f"Қызмет тіркелген қайтыс болу күнінен ({died}) {count(n, 'day', 'kk')} кейін көрсетілген.",
        "ru": f"Услуга записана через {count(n, 'day', 'ru')} после зарегистрированной смерти ({died}).",
        "en": f"Service dated {count(n, 'day', 'en')} after the recorded death ({died}).",
    }


def _unbundled(row: Mapping[str, Any]) -> dict[str, str]:
    package = row.get("unbundled_package")
    excess = _value(row, "unbundling_excess_kzt")
    if package:
        kk_p, ru_p, en_p = f"{package} пакетінің", f"пакета {package}", f"package {package}"
    else:
        kk_p, ru_p, en_p = "Пакеттің", "пакета", "a package"
    if excess > 0:
        return {
            "kk": f"{kk_p} барлық құрамдас бөліктері бөлек есепке қойылған: пакет бағасынан "
            f"{number(excess, 'kk')} теңге артық.",
            "ru": f"Все компоненты {ru_p} выставлены по отдельности: на {number(excess, 'ru')} тенге дороже пакета.",
            "en": f"Every component of {en_p} billed separately: {number(excess, 'en')} KZT above the package price.",
        }
    return {
        "kk": f"{kk_p} барлық құрамдас бөліктері пакеттің орнына бөлек есепке қойылған.",
        "ru": f"Все компоненты {ru_p} выставлены по отдельности вместо пакета.",
        "en": f"Every component of {en_p} billed separately instead of the package.",
    }


def _encounter(row: Mapping[str, Any]) -> dict[str, str]:
    other = _value(row, "encounter_other_provider") > 0
    gap = _value(row, "encounter_date_gap")
    if other and gap > 0:
        kk = f"Басқа мекеменің, қызмет күнінен {count(gap, 'day', 'kk')} алшақ қабылдауы үшін шот қойылған"
        ru = f"Счёт выставлен за приём другой организации, отстоящий от услуги на {count(gap, 'day', 'ru')}"
        en = f"Bills an encounter of another provider, {count(gap, 'day', 'en')} from the billed service"
    elif other:
        kk = "Басқа мекеменің қабылдауы үшін шот қойылған"
        ru = "Счёт выставлен за приём другой организации"
        en = "Bills an encounter of another provider"
    else:
        kk = f"Қызмет күнінен {count(gap, 'day', 'kk')} алшақ қабылдау үшін шот қойылған"
        ru = f"Счёт выставлен за приём, отстоящий от услуги на {count(gap, 'day', 'ru')}"
        en = f"Bills an encounter {count(gap, 'day', 'en')} from the billed service"
    return {"kk": kk + ".", "ru": ru + ".", "en": en + "."}


def _duplicate(row: Mapping[str, Any]) -> dict[str, str]:
    n = _value(row, "dup_prior_same_encounter")
    earlier = {
        "kk": f"Дәл осы қабылдау бұрын {count(n, 'times', 'kk')} есепке қойылған",
        "ru": f"Этот же приём уже выставлялся к оплате {count(n, 'times', 'ru')} ранее",
        "en": f"The same encounter was already billed in {count(n, 'earlier_claim', 'en')}",
    }
    days = row.get("dup_min_days")
    if days is None or not math.isfinite(float(days)):
        # The features always record the gap when an earlier claim has the same services; phrase it if not.
        same = {
            "kk": "; бұрынғы шотта сол пациентке дәл сол қызметтер бар.",
            "ru": "; более ранний счёт содержит те же услуги тому же пациенту.",
            "en": "; an earlier claim bills the same services for the same patient.",
        }
    elif float(days) <= 0:
        same = {
            "kk": "; бұрынғы шотта сол пациентке сол күнгі дәл сол қызметтер бар.",
            "ru": "; более ранний счёт содержит те же услуги тому же пациенту с той же датой услуги.",
            "en": "; an earlier claim bills the same services for the same patient on the same day.",
        }
    else:
        d = float(days)
        same = {
            "kk": f"; бұрынғы шотта сол пациентке дәл сол қызметтер бар, қызмет күндерінің айырмасы "
            f"{count(d, 'day', 'kk')}.",
            "ru": f"; более ранний счёт содержит те же услуги тому же пациенту, даты услуг расходятся на "
            f"{count(d, 'day', 'ru')}.",
            "en": f"; an earlier claim bills the same services for the same patient, dated {count(d, 'day', 'en')} "
            "apart.",
        }
    return {lang: earlier[lang] + same[lang] for lang in ("kk", "ru", "en")}


_TEXTS: dict[str, Callable[[Mapping[str, Any]], dict[str, str]]] = {
    "SERVICE_AFTER_DEATH": _after_death,
    "PACKAGE_UNBUNDLED": _unbundled,
    "EXACT_DUPLICATE": _duplicate,
    "ENCOUNTER_MISMATCH": _encounter,
}


def rule_hit(rule: Rule, row: Mapping[str, Any]) -> RuleHit:
    """The hit of ``rule`` on one claim record (a dict of its columns), with its sentences."""
    texts = _TEXTS[rule.code](row)
    return RuleHit(rule.code, rule.pattern, texts["kk"], texts["ru"], texts["en"])


def _flags(features_df: pl.DataFrame, rules: Sequence[Rule]) -> list[list[bool]]:
    """Per record, whether each rule hits it (a rule whose columns are absent from the records hits nothing)."""
    present = set(features_df.columns)
    usable = [set(r.columns) <= present for r in rules]
    columns = sorted({c for r, ok in zip(rules, usable, strict=True) if ok for c in r.columns})
    # Column lists rather than a select: a polars query costs more than the rules on a request's few claims.
    values = [features_df.get_column(c).to_list() for c in columns]
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)] if columns else None
    return [
        [ok and r.holds(rows[i] if rows is not None else {}) for r, ok in zip(rules, usable, strict=True)]
        for i in range(features_df.height)
    ]


def hit_matrix(features_df: pl.DataFrame, rules: Sequence[Rule] = RULES) -> pl.DataFrame:
    """One boolean column per rule code, true where the rule hits a record (row order kept).

    A rule whose columns are absent from the records hits nothing.
    """
    flags = _flags(features_df, rules)
    return pl.DataFrame(
        {r.code: [f[j] for f in flags] for j, r in enumerate(rules)}, schema={r.code: pl.Boolean for r in rules}
    )


def any_hit(features_df: pl.DataFrame, rules: Sequence[Rule] = RULES) -> pl.Series:
    """Whether any rule hits each record (boolean, row order kept)."""
    if not rules:
        return pl.Series("rule_hit", [False] * features_df.height, dtype=pl.Boolean)
    m = hit_matrix(features_df, rules)
    return m.select(pl.any_horizontal(pl.all()).alias("rule_hit")).to_series()


def evaluate_rules(features_df: pl.DataFrame, rules: Sequence[Rule] = RULES) -> list[list[RuleHit]]:
    """The rule hits of each record, in :data:`RULES` order, with sentences (empty list: no hit)."""
    out: list[list[RuleHit]] = []
    for i, flags in enumerate(_flags(features_df, rules)):
        if not any(flags):
            out.append([])
            continue
        row = features_df.row(i, named=True)
        out.append([rule_hit(r, row) for r, hit in zip(rules, flags, strict=True) if hit])
    return out


def rule_precision(
    features_df: pl.DataFrame, truth: str, rules: Sequence[Rule] = RULES, by: str | None = None
) -> dict[str, dict[str, Any]]:
    """Hits and precision of each rule against a 0/1 truth column, overall or per value of ``by`` (e.g. split).

    Returns:
        rule code -> (group ->) ``{"hits", "positive", "precision"}`` (precision None without hits).
    """
    m = hit_matrix(features_df, rules)
    y = features_df[truth].cast(pl.Int64).fill_null(0)
    frame = m.with_columns(y.alias("_y"))
    if by is not None:
        frame = frame.with_columns(features_df[by].cast(pl.String).alias("_by"))

    def stats(f: pl.DataFrame, code: str) -> dict[str, Any]:
        hits = f.filter(pl.col(code))
        n, pos = hits.height, int(hits["_y"].sum())
        return {"hits": n, "positive": pos, "precision": pos / n if n else None}

    out: dict[str, dict[str, Any]] = {}
    for r in rules:
        if by is None:
            out[r.code] = stats(frame, r.code)
        else:
            out[r.code] = {
                str(g): stats(frame.filter(pl.col("_by") == g), r.code)
                for g in sorted(frame["_by"].drop_nulls().unique().to_list())
            }
    return out


def join_codes(hits: Sequence[RuleHit]) -> str:
    """The codes of one claim's hits joined with :data:`SEPARATOR` (empty string: none)."""
    return SEPARATOR.join(h.code for h in hits)

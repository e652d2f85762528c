"""The service's human-readable texts in Kazakh, Russian and English, and the choice of language per request.

Only texts for people live here (conclusions, displays, CDS Hooks cards, risk bands); codes stay codes. The
fraud reason sentences come with the model's reasons (:mod:`pipelines.fraud.reason_texts`) in the same three
languages.
"""

from __future__ import annotations

import math
from typing import Literal

Language = Literal["kk", "ru", "en"]
LANGUAGES: tuple[Language, ...] = ("kk", "ru", "en")
DEFAULT_LANGUAGE: Language = "en"

# Task names as a clinician reads them; an unknown task shows its own name.
TASK_NAMES: dict[str, dict[Language, str]] = {
    "pneumonia": {"kk": "пневмония", "ru": "пневмония", "en": "pneumonia"},
    "bronchitis": {"kk": "бронхит", "ru": "бронхит", "en": "bronchitis"},
}

TEXTS: dict[str, dict[Language, str]] = {
    "conclusion.positive": {
        "kk": "«{task}» ауруының белгілері анықталды: ықтималдығы {p} (шегі {t}). Жасанды интеллекттің "
        "алдын ала нәтижесі, дәрігердің растауын қажет етеді.",
        "ru": "Выявлены признаки заболевания «{task}»: вероятность {p} (порог {t}). Предварительный "
        "результат ИИ, требует подтверждения врачом.",
        "en": "Findings suggestive of {task}: probability {p} (threshold {t}). Preliminary AI result; a "
        "physician must confirm it.",
    },
    "conclusion.negative": {
        "kk": "«{task}» ауруының белгілері анықталмады: ықтималдығы {p} (шегі {t}). Жасанды интеллекттің "
        "алдын ала нәтижесі, дәрігердің растауын қажет етеді.",
        "ru": "Признаки заболевания «{task}» не выявлены: вероятность {p} (порог {t}). Предварительный "
        "результат ИИ, требует подтверждения врачом.",
        "en": "No findings suggestive of {task}: probability {p} (threshold {t}). Preliminary AI result; a "
        "physician must confirm it.",
    },
    "probability.display": {
        "kk": "«{task}» ықтималдығы (модель бағасы)",
        "ru": "Вероятность заболевания «{task}» (оценка модели)",
        "en": "Probability of {task} (model estimate)",
    },
    "outcome.display": {"kk": "{task}", "ru": "{task}", "en": "{task}"},
    "not_detected.display": {
        "kk": "Анықталмады",
        "ru": "Не выявлено",
        "en": "Not detected",
    },
    "method.display": {
        "kk": "Рентгенограмма мен электрондық денсаулық жазбасы бойынша машиналық оқыту моделі",
        "ru": "Модель машинного обучения по рентгенограмме и электронной медицинской карте",
        "en": "Machine-learning model over the radiograph and the electronic health record",
    },
    "device.type": {
        "kk": "Жасанды интеллект моделі (шешім қабылдауды қолдау)",
        "ru": "Модель искусственного интеллекта (поддержка принятия решений)",
        "en": "Artificial-intelligence model (decision support)",
    },
    "saliency.title": {
        "kk": "Grad-CAM маңыздылық картасы: модель назар аударған аймақтар",
        "ru": "Карта значимости Grad-CAM: области, на которые опиралась модель",
        "en": "Grad-CAM saliency map: the regions the model relied on",
    },
    "card.summary.positive": {
        "kk": "Шипа: «{task}» белгілері анықталды (ықтималдығы {p})",
        "ru": "Шипа: выявлены признаки «{task}» (вероятность {p})",
        "en": "Shipa: findings suggestive of {task} (probability {p})",
    },
    "card.summary.negative": {
        "kk": "Шипа: «{task}» белгілері анықталмады (ықтималдығы {p})",
        "ru": "Шипа: признаки «{task}» не выявлены (вероятность {p})",
        "en": "Shipa: no findings suggestive of {task} (probability {p})",
    },
    "card.detail": {
        "kk": "{conclusion}\n\nМодель: {model}, нұсқа {version}. Нәтиже диагноз емес: оны дәрігер тексереді.",
        "ru": "{conclusion}\n\nМодель: {model}, версия {version}. Результат не является диагнозом: его проверяет врач.",
        "en": "{conclusion}\n\nModel: {model}, version {version}. This is not a diagnosis: a physician reviews it.",
    },
    "card.warnings": {
        "kk": "Сұраудың кейбір бөліктері ескерілмеді:",
        "ru": "Часть запроса не учтена:",
        "en": "Parts of the request were left out:",
    },
    "fraud.no_reason": {
        "kk": "Айқын себеп жоқ: шот әдеттегі шоттардан ерекшеленбейді.",
        "ru": "Явных причин нет: счёт не отличается от обычных.",
        "en": "No specific reason: the claim does not stand out from typical claims.",
    },
    "fraud.method": {
        "kk": "Шоттарды тексеру моделі (тергеушіге көмек, шешім емес)",
        "ru": "Модель проверки счетов (помощь следователю, не решение)",
        "en": "Claims review model (supports an investigator, does not decide)",
    },
    "fraud.outcome": {
        "kk": "Алаяқтық белгілері бар шот",
        "ru": "Счёт с признаками мошенничества",
        "en": "Claim with signs of fraud",
    },
    "fraud.rule_hit": {
        "kk": "Ереже бойынша анықталған: жазбалардағы факт, ықтималдық емес; шот модельдің бағасына қарамастан "
        "тексеруге жіберіледі.",
        "ru": "Сработало правило: это факт в записях, а не вероятность; счёт идёт на проверку независимо от оценки "
        "модели.",
        "en": "Rule hit: a fact in the records, not a probability; the claim is listed for review whatever the "
        "model's score.",
    },
}

RISK_BANDS: dict[str, dict[Language, str]] = {
    "low": {"kk": "Төмен тәуекел", "ru": "Низкий риск", "en": "Low risk"},
    "moderate": {"kk": "Орташа тәуекел", "ru": "Умеренный риск", "en": "Moderate risk"},
    "high": {"kk": "Жоғары тәуекел", "ru": "Высокий риск", "en": "High risk"},
}


def negotiate_language(accept_language: str | None) -> Language:
    """The best of kk/ru/en for an ``Accept-Language`` header (q-values honoured), else the default.

    ``kk-KZ`` counts as ``kk``; ``*`` and unknown languages fall through to the default.
    """
    if not accept_language:
        return DEFAULT_LANGUAGE
    best: tuple[float, int, Language] | None = None
    for position, part in enumerate(accept_language.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().lower().split("-", 1)[0]
        if primary not in LANGUAGES:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if not math.isfinite(quality) or quality <= 0:
            continue
        # Higher quality first, then the earlier position in the header.
        candidate = (quality, -position, primary)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best is not None else DEFAULT_LANGUAGE


def number(value: float, lang: Language, digits: int = 2) -> str:
    """A decimal number the way each language writes it: ``0.83`` (en), ``0,83`` (ru, kk)."""
    text = f"{value:.{digits}f}"
    return text if lang == "en" else text.replace(".", ",")


def task_name(task: str, lang: Language) -> str:
    """The task's name in ``lang`` (the task code itself when no translation is known)."""
    return TASK_NAMES.get(task, {}).get(lang, task)


def text(key: str, lang: Language, **values: object) -> str:
    """The text ``key`` in ``lang`` with ``{placeholders}`` filled.

    Raises:
        KeyError: an unknown key.
    """
    return TEXTS[key][lang].format(**values)


def risk_band(band: str, lang: Language) -> str:
    """Display of a qualitative risk band (``low``, ``moderate``, ``high``)."""
    return RISK_BANDS[band][lang]

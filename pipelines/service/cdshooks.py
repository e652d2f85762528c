"""CDS Hooks cards (``{"cards": [...]}``) for EHRs that call the service at the point of care.

A card carries a summary under 140 characters, an indicator (``info``, ``warning`` or ``critical``), the
source (the model and its version) and a Markdown detail; like the FHIR output it names the patient by no
identifier.
"""

from __future__ import annotations

import uuid
from typing import Any

from pipelines.service import i18n
from pipelines.service.fhir_out import DiagnosisOutcome, conclusion_text
from pipelines.service.i18n import Language

MAX_SUMMARY_CHARS = 139  # the CDS Hooks specification: "<140 characters"


def indicator(outcome: DiagnosisOutcome) -> str:
    """The card's indicator of the outcome's risk band: ``info`` (low), ``warning`` (moderate), ``critical`` (high)."""
    return {"low": "info", "moderate": "warning", "high": "critical"}[outcome.band]


def _clip(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def diagnosis_cards(outcome: DiagnosisOutcome, lang: Language) -> dict[str, Any]:
    """The CDS Hooks response for one diagnosis prediction: one card."""
    task = i18n.task_name(outcome.task, lang)
    key = "card.summary.positive" if outcome.positive else "card.summary.negative"
    summary = i18n.text(key, lang, task=task, p=i18n.number(outcome.probability, lang))
    detail = i18n.text(
        "card.detail",
        lang,
        conclusion=conclusion_text(outcome, lang),
        model=outcome.model.name,
        version=outcome.model.version,
    )
    if outcome.warnings:
        # What was left out of the request (a malformed lab value, an IIN-shaped id) changes what the card means:
        # the clinician sees it here as the Bundle answer shows it in an OperationOutcome. The reasons name FHIR
        # paths and stay in English; the heading follows the language.
        lines = "\n".join(f"- {where}: {why}" for where, why in outcome.warnings)
        detail = f"{detail}\n\n{i18n.text('card.warnings', lang)}\n{lines}"
    card = {
        "uuid": str(uuid.uuid4()),
        "summary": _clip(summary),
        "indicator": indicator(outcome),
        "detail": detail,
        "source": {
            "label": f"Shipa {outcome.model.name} v{outcome.model.version}",
            "topic": {
                "system": "https://shipa.kz/fhir/CodeSystem/model-output",
                "code": f"{outcome.task}-risk",
            },
        },
    }
    return {"cards": [card]}

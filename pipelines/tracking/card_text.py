"""The human-written parts of a model card (intended use, users, limits), with presets for Shipa's models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CardText:
    """What a model is for and not for, what goes in and out, where it fails. Plain text, no personal data.

    ``intended_input`` describes the input domain recorded with the model (DICOM attribute -> accepted values,
    from :meth:`pipelines.imaging.domain.InputDomain.describe`); the service refuses anything outside it.
    """

    task: str
    intended_use: str
    intended_users: tuple[str, ...]
    out_of_scope_uses: tuple[str, ...]
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    limitations: tuple[str, ...] = ()
    failure_modes: tuple[str, ...] = ()
    intended_input: dict[str, str] = field(default_factory=dict)


def diagnosis_card_text(task: str = "pneumonia", intended_input: Mapping[str, str] | None = None) -> CardText:
    """The card text of a diagnosis model (``shipa-diagnosis-<task>``): radiographs plus EHR features.

    Args:
        task: the task name.
        intended_input: the recorded input domain in words (``InputDomain.describe()``); None: not recorded.
    """
    return CardText(
        task=f"Binary {task} detection from a frontal chest radiograph and recent EHR observations",
        intended_use=(
            f"Decision support: flag studies likely to show {task} so that a clinician reviews them sooner. "
            "The clinician makes the diagnosis; the model's output is a preliminary probability."
        ),
        intended_users=("radiologists", "emergency and primary-care physicians", "clinical quality teams"),
        out_of_scope_uses=(
            "autonomous diagnosis or treatment decisions without a clinician",
            "patients under 1 year, lateral views, CT or other modalities",
            "screening populations whose prevalence differs greatly from the evaluation data",
            "any use on data from outside the evaluated regions before local validation",
        ),
        inputs={
            "image": "chest radiograph, de-identified DICOM resampled to the training image size, grey scale",
            "ehr": "vital signs and laboratory values (LOINC) from the encounter, with missingness flags",
        },
        outputs={
            "probability": f"calibrated probability of {task} (0-1)",
            "label": "positive when the probability is at or above the documented threshold",
        },
        limitations=(
            "trained and evaluated on the built-in synthetic cohort unless the lineage names other data",
            "probabilities are calibrated on the evaluation population only",
            "subgroups below the minimum size have no reported metrics",
        ),
        failure_modes=(
            "images with devices, rotation or heavy noise may be scored unreliably",
            "missing laboratory values lower the model's information and its confidence",
        ),
        intended_input=dict(intended_input or {}),
    )


def fraud_card_text() -> CardText:
    """The card text of the claims-fraud model (``shipa-fraud``)."""
    return CardText(
        task="Ranking health-insurance claims by the probability that an audit would find them fraudulent",
        intended_use=(
            "Prioritise claims for investigators: each flag carries reasons a person can check. "
            "The model supports investigators; it never decides a payment or a sanction."
        ),
        intended_users=("FSMS claim investigators and auditors",),
        out_of_scope_uses=(
            "automatic denial of payment or sanctions against a provider",
            "judging individual patients or clinicians",
            "claim types or tariff lists the model was not trained on",
        ),
        inputs={"claim": "claim, provider and patient-history features built from de-identified tables"},
        outputs={
            "probability": "probability that the claim is fraudulent (0-1)",
            "reasons": "the features that contributed most to the score",
        },
        limitations=(
            "labels come from audit findings: fraud that audits never found is invisible to training",
            "evaluated on later months than it was trained on; patterns change over time",
        ),
        failure_modes=(
            "new fraud patterns absent from the audit findings are not ranked high",
            "providers with very few claims have unstable provider-level features",
        ),
    )

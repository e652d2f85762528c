"""``POST /diagnosis/{task}`` (clinician): a chest radiograph (DICOM, multipart) and optionally a FHIR Bundle in;
a FHIR Bundle (DiagnosticReport, Observation, RiskAssessment, Device, Provenance, Grad-CAM map) or CDS Hooks cards
out."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import APIRouter, Depends, File, Header, Path, Query, UploadFile
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.predictionlog.log import AuditOutcome
from pipelines.service import cdshooks, fhir_out
from pipelines.service.batching import DiagnosisScore, DiagnosisScoring, diagnosis_scoring
from pipelines.service.deps import ClinicianPrincipal, RequestAudit, RequestAuditDep
from pipelines.service.diagnosis_case import DiagnosisCase, build_case
from pipelines.service.errors import FhirHTTPError
from pipelines.service.i18n import Language, negotiate_language
from pipelines.service.mlflow_source import DiagnosisModel, IinSystemsDep, ModelsDep, PseudonymizerDep
from pipelines.service.schemas import ERROR_RESPONSES, OperationOutcomeOut

log = logging.getLogger(__name__)
router = APIRouter(tags=["diagnosis"], responses=ERROR_RESPONSES)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": OperationOutcomeOut,
        "description": "not a DICOM file, a truncated one, or a bundle not in JSON",
    },
    404: {"model": OperationOutcomeOut, "description": "no model is served for the task"},
    422: {
        "model": OperationOutcomeOut,
        "description": (
            "unusable DICOM (reason code), invalid FHIR (the field), or a study outside the model's intended use "
            "(code not-supported: a header attribute, or an image unlike the training images)"
        ),
    },
    503: {"model": OperationOutcomeOut, "description": "models not loaded"},
}


def input_digest(dicom: bytes, bundle: bytes | None) -> str:
    """The audited input hash of a multipart request: sha256 over the DICOM bytes, then the bundle bytes."""
    digest = hashlib.sha256(dicom)
    if bundle is not None:
        digest.update(bundle)
    return digest.hexdigest()


def served_model(models: ModelsDep, task: str) -> DiagnosisModel:
    model = models.diagnosis.get(task)
    if model is None:
        served = ", ".join(sorted(models.diagnosis)) or "none"
        raise FhirHTTPError(404, "not-found", f"no diagnosis model is served for task '{task}' (served: {served})")
    return model


def _saliency(model: DiagnosisModel, case: DiagnosisCase) -> bytes | None:
    """The Grad-CAM overlay PNG, or None (an EHR-only model, or a map that could not be made)."""
    if model.explainer is None or case.image is None:
        return None
    try:
        import torch

        from pipelines.modeling.data import preprocess_image
        from pipelines.service.gradcam import overlay_png

        image = preprocess_image(case.image, model.predictor.meta.image_size)
        ehr = model.ehr_inputs(case.raw)
        cam = model.explainer.saliency(image, torch.from_numpy(ehr) if ehr is not None else None)
        return overlay_png(image[0].numpy(), cam)
    except Exception as exc:  # the map is an aid: a diagnosis without it is still an answer
        log.warning("Grad-CAM failed for %s: %s", model.ref.name, type(exc).__name__)
        return None


def _predict(model: DiagnosisModel, case: DiagnosisCase, scoring: DiagnosisScoring) -> DiagnosisScore:
    """The model's answer for the case, in a call shared with concurrent requests (from this request's thread)."""
    row: dict[str, Any] = dict(case.raw)
    if case.image is not None:
        row["image"] = case.image
    return anyio.from_thread.run(scoring.predict, model, row)


def out_of_distribution_error(score: DiagnosisScore, threshold: float) -> FhirHTTPError:
    """The 422 of an image whose pixels do not look like the training radiographs (whatever its header says)."""
    return FhirHTTPError(
        422,
        "not-supported",
        "the image is outside this model's intended use: it does not look like the radiographs the model was "
        f"trained on (image out-of-distribution score {score.ood_score:.1f} above the threshold {threshold:.1f})",
    )


def _audit_rejection(
    audit: RequestAudit,
    model: DiagnosisModel,
    digest: str,
    exc: FhirHTTPError,
    context: dict[str, Any] | None = None,
) -> None:
    audit.record(
        model_name=model.ref.name,
        model_version=model.ref.version,
        model_alias=model.ref.alias,
        output={"error": exc.code, "status": exc.status_code, **(context or {})},
        outcome=AuditOutcome.minor_failure,
        outcome_desc=exc.diagnostics[:500],
        input_sha256=digest,
    )


@dataclass(frozen=True)
class Diagnosed:
    """One study scored: the answer and what its audit record needs.

    Attributes:
        model: the served model that answered.
        case: the de-identified model inputs.
        outcome: the prediction, ready for :func:`fhir_out.diagnosis_bundle` or the CDS Hooks cards.
        digest: the audited input hash.
    """

    model: DiagnosisModel
    case: DiagnosisCase
    outcome: fhir_out.DiagnosisOutcome
    digest: str


def run_diagnosis(
    model: DiagnosisModel,
    dicom: bytes,
    bundle_bytes: bytes | None,
    *,
    audit: RequestAudit,
    pseudonymizer: Pseudonymizer,
    iin_systems: frozenset[str],
    scoring: DiagnosisScoring,
    saliency: bool,
    context: dict[str, Any] | None = None,
) -> Diagnosed:
    """The diagnosis path every route shares: de-identify and check the study, score it, refuse an image unlike
    the training images, and make the answer (with the Grad-CAM overlay when ``saliency``).

    A refusal or a model failure is audited here (the request's one record) and raised; an answer is not: the
    caller records it with :func:`record_answer` once it has done its own part. ``context`` (pseudonymous facts
    of the route, e.g. the PACS study's pseudonym) is added to the output of those records.

    Raises:
        FhirHTTPError: the upload route's refusals (DICOM reason code, outside the input domain, invalid Bundle,
            image out of distribution) and 500 when the model fails.
        ValidationError: an invalid FHIR Bundle (audited; answered 422 by the service's handler).
    """
    digest = input_digest(dicom, bundle_bytes)
    try:
        case = build_case(
            dicom,
            bundle_bytes,
            pseudonymizer=pseudonymizer,
            iin_systems=iin_systems,
            observations=model.observations,
            lookback_hours=model.lookback_hours,
            ingest_image_size=model.ingest_image_size if model.uses_image else None,
            input_domain=model.input_domain,  # the study must be what the model was made for, image or not
        )
    except FhirHTTPError as exc:
        _audit_rejection(audit, model, digest, exc, context)
        raise
    except ValidationError:
        _audit_rejection(audit, model, digest, FhirHTTPError(422, "invalid", "invalid FHIR Bundle"), context)
        raise
    ref = model.ref
    try:
        score = _predict(model, case, scoring)
    except Exception as exc:
        log.error("diagnosis model %s failed: %s", ref.name, type(exc).__name__)
        audit.record(
            model_name=ref.name,
            model_version=ref.version,
            model_alias=ref.alias,
            output={"error": type(exc).__name__, **(context or {})},
            patient_pseudonym=case.patient.pseudonym,
            outcome=AuditOutcome.serious_failure,
            outcome_desc="the model failed on this input",
            input_sha256=digest,
        )
        raise FhirHTTPError(500, "exception", "the model could not score this study; the failure is audited") from None
    ood = model.predictor.image_ood if model.uses_image else None
    if score.out_of_distribution and ood is not None:
        # Refused like a header outside the domain: no probability leaves the service, and the audit keeps only
        # the score that refused it.
        refusal = out_of_distribution_error(score, ood.threshold)
        _audit_rejection(audit, model, digest, refusal, context)
        raise refusal
    outcome = fhir_out.DiagnosisOutcome(
        task=model.task,
        probability=score.probability,
        threshold=float(model.predictor.threshold),
        positive=score.positive,
        model=ref,
        patient=case.patient,
        study_uid=case.study_uid,
        study_time=case.study_time,
        icd10_prefixes=model.icd10_prefixes,
        observations=tuple(case.observations),
        saliency_png=_saliency(model, case) if saliency else None,
        subject=case.answer.subject,
        study=case.answer.study,
        observation_refs=case.answer.observations,
        warnings=tuple(case.warnings),
    )
    return Diagnosed(model, case, outcome, digest)


def record_answer(audit: RequestAudit, diagnosed: Diagnosed, extra: dict[str, Any]) -> None:
    """The audit record of an answered diagnosis: the probability, threshold and missing EHR, plus ``extra``
    (the answer's format and language, and a route's own facts)."""
    ref, case, outcome = diagnosed.model.ref, diagnosed.case, diagnosed.outcome
    audit.record(
        model_name=ref.name,
        model_version=ref.version,
        model_alias=ref.alias,
        output={
            "task": outcome.task,
            "probability": round(outcome.probability, 6),
            "positive": outcome.positive,
            "threshold": round(outcome.threshold, 6),
            "missing_ehr": case.missing,
            **extra,
            **({"warnings": [where for where, _ in case.warnings]} if case.warnings else {}),
        },
        patient_pseudonym=case.patient.pseudonym,
        input_sha256=diagnosed.digest,
    )


@router.post(
    "/diagnosis/{task}",
    response_model=None,
    responses={
        **_ERRORS,
        200: {"description": "a FHIR Bundle (application/fhir+json), or CDS Hooks cards with format=cds-hooks"},
    },
)
def diagnose(
    task: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9\-]{0,60}$", description="the task, e.g. pneumonia")],
    principal: ClinicianPrincipal,
    audit: RequestAuditDep,
    models: ModelsDep,
    pseudonymizer: PseudonymizerDep,
    iin_systems: IinSystemsDep,
    scoring: Annotated[DiagnosisScoring, Depends(diagnosis_scoring)],
    file: Annotated[UploadFile, File(description="the radiograph as a DICOM file")],
    bundle: Annotated[
        UploadFile | None,
        File(description="optional FHIR Bundle (JSON) with the Patient and recent Observations"),
    ] = None,
    format: Annotated[Literal["fhir", "cds-hooks"], Query(description="fhir: a Bundle; cds-hooks: cards")] = "fhir",
    accept_language: Annotated[str | None, Header(description="kk, ru or en")] = None,
) -> JSONResponse:
    """Predict the task's finding on one radiograph with the champion model, de-identifying everything
    first. Uploads that arrive together share one call of the network (:class:`DiagnosisScoring`)."""
    dicom = file.file.read()
    bundle_bytes = bundle.file.read() if bundle is not None else None
    digest = input_digest(dicom, bundle_bytes)
    audit.input_sha256 = digest  # the record of a refusal below carries it too (RequestAudit.settle)
    model = served_model(models, task)
    audit.model = (model.ref.name, model.ref.version, model.ref.alias)
    lang: Language = negotiate_language(accept_language)
    diagnosed = run_diagnosis(
        model,
        dicom,
        bundle_bytes,
        audit=audit,
        pseudonymizer=pseudonymizer,
        iin_systems=iin_systems,
        scoring=scoring,
        saliency=format == "fhir",
    )
    outcome = diagnosed.outcome
    record_answer(audit, diagnosed, {"format": format, "language": lang})
    if format == "cds-hooks":
        return JSONResponse(cdshooks.diagnosis_cards(outcome, lang), headers={"Content-Language": lang})
    return JSONResponse(
        fhir_out.diagnosis_bundle(outcome, lang),
        media_type=fhir_out.FHIR_JSON,
        headers={"Content-Language": lang},
    )

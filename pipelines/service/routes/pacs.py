"""``POST /diagnosis/{task}/studies/{StudyInstanceUID}`` (clinician): a study pulled from the hospital PACS over
DICOMweb, scored exactly as an upload is, and the result stored back into the study.

The PACS is ``SHIPA_SERVICE_DICOMWEB_URL`` (without it the route answers 404: no PACS is deployed), signed in with
``SHIPA_SERVICE_DICOMWEB_TOKEN`` (bearer) or ``SHIPA_SERVICE_DICOMWEB_USER``/``_PASSWORD`` (basic). The route
reads the headers of the study's instances (QIDO-RS, WADO-RS metadata; at most
``SHIPA_SERVICE_DICOMWEB_MAX_INSTANCES``), retrieves the first one inside the model's input domain (WADO-RS;
at most ``SHIPA_SERVICE_DICOMWEB_MAX_BYTES`` received in all), runs the upload route's diagnosis path on it
(:func:`~pipelines.service.routes.diagnosis.run_diagnosis`), and stores a Basic Text Structured Report and a
Secondary Capture of the Grad-CAM overlay into the study (STOW-RS).

The answer is the upload's FHIR Bundle plus one more entry: an ImagingStudy of the source study listing the
series and instances stored (their UIDs, modality SR and OT, SOP classes). The audit record is the upload's, with
the study's pseudonym (``pacs_study``) and the stored objects' UIDs; the study's own UID never enters a log. A
PACS that cannot be reached, times out, fails or refuses the service's credentials is answered 502, never 500.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query
from fastapi.responses import JSONResponse

from pipelines.pacs.client import DicomWebConfig, PacsClient
from pipelines.pacs.errors import NoUsableInstance, PacsError, StudyNotFound, StudyTooLarge
from pipelines.pacs.listing import recent_studies
from pipelines.pacs.results import Finding, StoredResult, described, saliency_capture, structured_report
from pipelines.pacs.retrieve import StudyInstance, retrieve_for_model
from pipelines.predictionlog.log import AuditOutcome
from pipelines.service import fhir_out
from pipelines.service.batching import DiagnosisScoring, diagnosis_scoring
from pipelines.service.deps import ClinicianPrincipal, RequestAudit, RequestAuditDep, SettingsDep
from pipelines.service.errors import FhirHTTPError
from pipelines.service.i18n import Language, negotiate_language
from pipelines.service.mlflow_source import DiagnosisModel, IinSystemsDep, ModelsDep, PseudonymizerDep
from pipelines.service.routes.diagnosis import Diagnosed, record_answer, run_diagnosis, served_model
from pipelines.service.schemas import ERROR_RESPONSES, OperationOutcomeOut
from pipelines.service.settings import ENV_PREFIX, ServiceSettings

log = logging.getLogger(__name__)
router = APIRouter(tags=["diagnosis"], responses=ERROR_RESPONSES)

# dicomweb-client logs every request's study, series and instance UIDs at INFO: identifiers stay out of the logs.
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
STUDY_UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
STORED_DESCRIPTION = "Shipa results stored in the PACS (preliminary, for clinician review)"

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "model": OperationOutcomeOut,
        "description": "no model is served for the task, no PACS is configured, or the PACS lacks the study",
    },
    422: {
        "model": OperationOutcomeOut,
        "description": (
            "no instance of the study inside the model's intended use (the first one's reason), an unusable "
            "DICOM file, an image unlike the training images, or a study over the retrieval bounds"
        ),
    },
    502: {"model": OperationOutcomeOut, "description": "the PACS could not be reached, failed, or refused"},
    503: {"model": OperationOutcomeOut, "description": "models not loaded"},
}


def dicomweb_config(settings: ServiceSettings) -> DicomWebConfig:
    """The PACS the settings name.

    Raises:
        FhirHTTPError: 404 (not-found) when ``SHIPA_SERVICE_DICOMWEB_URL`` is not set: the service has no PACS,
            which is how it is deployed, not a server fault (and never a 5xx).
    """
    config = settings.dicomweb_config()
    if config is None:
        raise FhirHTTPError(
            404,
            "not-found",
            f"no PACS is configured for this service: set {ENV_PREFIX}DICOMWEB_URL to the PACS's DICOMweb root",
        )
    return config


def pacs_error(exc: PacsError) -> FhirHTTPError:
    """The OperationOutcome error of a failed PACS exchange (the message names no UID)."""
    if isinstance(exc, NoUsableInstance):
        return FhirHTTPError(422, "not-supported", exc.reason)
    if isinstance(exc, StudyNotFound):
        return FhirHTTPError(404, "not-found", f"the PACS does not hold this study: {exc}")
    if isinstance(exc, StudyTooLarge):
        return FhirHTTPError(422, "too-costly", str(exc))
    return FhirHTTPError(502, "transient", f"the PACS could not serve this request: {exc}")


def _audit_pacs_failure(
    audit: RequestAudit, model: DiagnosisModel, error: FhirHTTPError, context: dict[str, Any], digest: str | None
) -> None:
    ref = model.ref
    audit.record(
        model_name=ref.name,
        model_version=ref.version,
        model_alias=ref.alias,
        output={"error": error.code, "status": error.status_code, **context},
        outcome=AuditOutcome.minor_failure if error.status_code < 500 else AuditOutcome.serious_failure,
        outcome_desc=error.diagnostics[:500],
        input_sha256=digest,
    )


def _results(instance: StudyInstance, diagnosed: Diagnosed) -> list[Any]:
    """The Structured Report, and the Secondary Capture of the overlay when there is one."""
    outcome, ref = diagnosed.outcome, diagnosed.model.ref
    finding = Finding(ref.name, ref.version, outcome.task, outcome.probability, outcome.threshold, outcome.positive)
    header = instance.header
    datasets = [structured_report(header, finding, software_version=f"{ref.name} {ref.version}"[:64])]
    if outcome.saliency_png is not None:
        datasets.append(saliency_capture(header, outcome.saliency_png, finding))
    return datasets


def stored_study_entry(
    study: dict[str, Any] | None, subject: dict[str, Any], stored: list[StoredResult]
) -> dict[str, Any]:
    """The Bundle entry naming what was stored: an ImagingStudy of the source study with the new series."""
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "id": str(uuid.uuid4()),
        "status": "available",
        "subject": subject,
        "description": STORED_DESCRIPTION,
        "series": [
            {
                "uid": item.series_uid,
                "modality": {"system": DCM_SYSTEM, "code": item.modality},
                "instance": [
                    {
                        "uid": item.sop_uid,
                        "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{item.sop_class_uid}"},
                    }
                ],
            }
            for item in stored
        ],
    }
    if study is not None and "identifier" in study:
        resource["identifier"] = [study["identifier"]]
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


@router.post(
    "/diagnosis/{task}/studies/{StudyInstanceUID}",
    response_model=None,
    responses={
        **_ERRORS,
        200: {
            "description": (
                "the upload's FHIR Bundle (application/fhir+json) plus an ImagingStudy entry naming the Structured "
                "Report and the saliency Secondary Capture stored into the study"
            )
        },
    },
)
def diagnose_pacs_study(
    task: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9\-]{0,60}$", description="the task, e.g. pneumonia")],
    study_uid: Annotated[
        str,
        Path(alias="StudyInstanceUID", pattern=STUDY_UID_PATTERN, max_length=64, description="the study in the PACS"),
    ],
    principal: ClinicianPrincipal,
    audit: RequestAuditDep,
    settings: SettingsDep,
    models: ModelsDep,
    pseudonymizer: PseudonymizerDep,
    iin_systems: IinSystemsDep,
    scoring: Annotated[DiagnosisScoring, Depends(diagnosis_scoring)],
    accept_language: Annotated[str | None, Header(description="kk, ru or en")] = None,
) -> JSONResponse:
    """Score a study the PACS holds with the champion model and store the result back into the study."""
    config = dicomweb_config(settings)
    model = served_model(models, task)
    audit.model = (model.ref.name, model.ref.version, model.ref.alias)
    lang: Language = negotiate_language(accept_language)
    context: dict[str, Any] = {"pacs_study": pseudonymizer.uid(study_uid)}
    with PacsClient(config) as client:
        try:
            instance = retrieve_for_model(
                client, study_uid, model.input_domain, max_instances=settings.dicomweb_max_instances
            )
        except PacsError as exc:
            error = pacs_error(exc)
            log.warning("PACS retrieval for %s failed: %s", model.ref.name, type(exc).__name__)
            _audit_pacs_failure(audit, model, error, context, None)
            raise error from None
        diagnosed = run_diagnosis(
            model,
            instance.dicom,
            None,
            audit=audit,
            pseudonymizer=pseudonymizer,
            iin_systems=iin_systems,
            scoring=scoring,
            saliency=True,
            context=context,
        )
        datasets = _results(instance, diagnosed)
        try:
            client.store(datasets, study_uid)
        except PacsError as exc:
            error = pacs_error(exc)
            if error.status_code < 500:  # a refusal of the results is the PACS's failure, not the caller's
                error = FhirHTTPError(502, "transient", f"the PACS did not store the results: {exc}")
            log.warning("PACS store for %s failed: %s", model.ref.name, type(exc).__name__)
            _audit_pacs_failure(audit, model, error, context, diagnosed.digest)
            raise error from None
    stored = described(datasets)
    record_answer(
        audit,
        diagnosed,
        {
            "format": "fhir",
            "language": lang,
            **context,
            "stored": [{"modality": s.modality, "series": s.series_uid, "sop": s.sop_uid} for s in stored],
        },
    )
    bundle = fhir_out.diagnosis_bundle(diagnosed.outcome, lang)
    subject = bundle["entry"][0]["resource"]["subject"]
    bundle["entry"].append(stored_study_entry(diagnosed.outcome.study, subject, stored))
    return JSONResponse(bundle, media_type=fhir_out.FHIR_JSON, headers={"Content-Language": lang})


@router.get(
    "/pacs/studies",
    responses={
        404: {"model": OperationOutcomeOut, "description": "no PACS is configured"},
        502: {"model": OperationOutcomeOut, "description": "the PACS could not be reached, failed, or refused"},
    },
)
def list_pacs_studies(
    principal: ClinicianPrincipal,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=200, description="how many of the newest studies")] = 50,
) -> dict[str, list[dict[str, Any]]]:
    """The PACS's newest CR and DX studies (date, time, accession number, description, modalities and the
    StudyInstanceUID to score), for a clinician to pick from; no patient name or identifier is asked for."""
    config = dicomweb_config(settings)
    with PacsClient(config) as client:
        try:
            studies = recent_studies(client, limit=limit)
        except PacsError as exc:
            log.warning("PACS study search failed: %s", type(exc).__name__)
            raise pacs_error(exc) from None
    return {
        "studies": [
            {
                "study_uid": s.study_uid,
                "date": s.date,
                "time": s.time,
                "accession": s.accession,
                "description": s.description,
                "modalities": list(s.modalities),
            }
            for s in studies
        ]
    }

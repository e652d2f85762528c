"""``POST /fraud/score`` (investigator): a FHIR Claim, or a Bundle of Claims with the resources they refer to,
in; a RiskAssessment per claim (probability, qualitative band, reasons in the requested language) out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.predictionlog.log import AuditOutcome, compact_json, sha256_hex
from pipelines.predictionlog.roles import Role
from pipelines.service import fhir_out
from pipelines.service.batching import FraudScoring, fraud_scoring
from pipelines.service.deps import (
    BearerCredentials,
    RequestAudit,
    audit_of_request,
    authenticate_request,
    checked_role,
)
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_body_doc import fraud_body_doc
from pipelines.service.fhir_in import parse_json
from pipelines.service.fraud_case import ClaimRecords, build_claim_records
from pipelines.service.i18n import Language, negotiate_language
from pipelines.service.mlflow_source import (
    ClaimScores,
    FraudModel,
    ModelSet,
    current_iin_systems,
    current_models,
    current_pseudonymizer,
)
from pipelines.service.schemas import ERROR_RESPONSES, OperationOutcomeOut
from pipelines.service.settings import ServiceSettings

log = logging.getLogger(__name__)
router = APIRouter(tags=["fraud"], responses=ERROR_RESPONSES)
_ROLES = (Role.investigator,)

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OperationOutcomeOut, "description": "the body is not JSON"},
    422: {
        "model": OperationOutcomeOut,
        "description": "invalid FHIR (the field is named) or too many claims",
    },
    503: {"model": OperationOutcomeOut, "description": "the fraud model is not loaded"},
}
# The audit log refuses outputs over 64 KiB: a large request keeps its scores' digest and the top claims only.
AUDIT_OUTPUT_BUDGET = 48 * 1024
AUDIT_TOP_CLAIMS = 100


def audit_output(risks: list[fhir_out.ClaimRisk], fmt: str, lang: str) -> dict[str, Any]:
    """The compact audited answer: per claim pseudonym its score, band, reason codes and rule hits (bounded in
    size)."""
    rows = {
        r.claim_pseudonym: [
            round(r.probability, 6),
            r.band,
            [x.get("code") for x in r.reasons],
            [h.get("code") for h in r.rule_hits],
        ]
        for r in risks
    }
    out: dict[str, Any] = {"claims": len(risks), "format": fmt, "language": lang, "scores": rows}
    if len(compact_json(out)) <= AUDIT_OUTPUT_BUDGET:
        return out
    top = sorted(risks, key=lambda r: -r.probability)[:AUDIT_TOP_CLAIMS]
    return {
        "claims": len(risks),
        "format": fmt,
        "language": lang,
        "scores_sha256": sha256_hex(compact_json(rows).encode("utf-8")),
        "bands": {b: sum(r.band == b for r in risks) for b in ("low", "moderate", "high")},
        "top": {r.claim_pseudonym: rows[r.claim_pseudonym] for r in top},
    }


def _model(models: ModelSet) -> FraudModel:
    if models.fraud is None:
        raise FhirHTTPError(503, "transient", "the fraud model is not loaded")
    return models.fraud


async def _audit(
    audit: RequestAudit,
    model: FraudModel,
    output: dict[str, Any],
    outcome: AuditOutcome = AuditOutcome.success,
    desc: str | None = None,
    patient: str | None = None,
) -> None:
    """The request's audit record, committed with the others of this turn of the event loop."""
    ref = model.ref
    await audit.record_on_loop(
        model_name=ref.name,
        model_version=ref.version,
        model_alias=ref.alias,
        output=output,
        outcome=outcome,
        outcome_desc=desc,
        patient_pseudonym=patient,
    )


def _records(
    body: bytes, pseudonymizer: Pseudonymizer, model: FraudModel, max_claims: int, iin_systems: frozenset[str]
) -> ClaimRecords:
    return build_claim_records(
        parse_json(body, "the request body"),
        pseudonymizer=pseudonymizer,
        history=model.history,
        max_claims=max_claims,
        iin_systems=iin_systems,
    )


@dataclass(frozen=True)
class _Scored:
    """A request's answer before rendering: the claims' risks, their audited summary and the one patient, if one."""

    risks: list[fhir_out.ClaimRisk]
    audited: dict[str, Any]
    patient: str | None


def _risks(model: FraudModel, records: ClaimRecords, scored: ClaimScores, fmt: str, lang: Language) -> _Scored:
    risks = [
        fhir_out.ClaimRisk(
            basis=records.basis[claim_id],
            claim_pseudonym=claim_id,
            patient=records.patients.get(claim_id) or fhir_out.PatientRef(None),
            probability=probability,
            band=model.bands.band(probability),
            reasons=reasons,
            rule_hits=hits,
        )
        for claim_id, probability, reasons, hits in zip(
            records.records.get_column("claim_id").to_list(),
            scored.probabilities,
            scored.reasons,
            scored.rule_hits,
            strict=True,
        )
    ]
    patients = {r.patient.pseudonym for r in risks}
    return _Scored(risks, audit_output(risks, fmt, lang), next(iter(patients)) if len(patients) == 1 else None)


def _render(
    model: FraudModel,
    risks: list[fhir_out.ClaimRisk],
    fmt: str,
    lang: Language,
    warnings: list[tuple[str, str]],
) -> JSONResponse:
    """The answer; ``warnings`` (expression, text) become ``warnings`` of the compact view, or an OperationOutcome
    entry of the Bundle."""
    headers = {"Content-Language": lang}
    if fmt == "json":
        compact = fhir_out.fraud_compact(risks, model.ref, lang)
        if warnings:
            compact["warnings"] = fhir_out.warning_issues(warnings)
        return JSONResponse(compact, headers=headers)
    bundle = fhir_out.fraud_bundle(risks, model.ref, lang)
    if warnings:
        bundle["entry"].append({"resource": fhir_out.warnings_outcome(warnings)})
    return JSONResponse(bundle, media_type=fhir_out.FHIR_JSON, headers=headers)


@dataclass(frozen=True)
class FraudRequest:
    """What a fraud request needs, resolved in one dependency: FastAPI spends 20-40 µs a request on each dependency
    it resolves, a tenth of the whole request when they were six (principal, role, audit, model, key, batcher)."""

    audit: RequestAudit
    model: FraudModel
    pseudonymizer: Pseudonymizer
    iin_systems: frozenset[str]
    settings: ServiceSettings
    scoring: FraudScoring


async def fraud_request(request: Request, credentials: BearerCredentials) -> FraudRequest:
    """The investigator (401, 429, 403 as for every route), the request's audit, the fraud model (503 when it is
    not loaded), the pseudonymizer, the settings and the batcher."""
    state = request.app.state
    principal = checked_role(authenticate_request(request, credentials), _ROLES)
    audit = await audit_of_request(request, principal, state.audit_log)
    model = _model(await current_models(request))
    audit.model = (model.ref.name, model.ref.version, model.ref.alias)  # a later refusal's record names it
    return FraudRequest(
        audit=audit,
        model=model,
        pseudonymizer=await current_pseudonymizer(request),
        iin_systems=current_iin_systems(request),
        settings=state.settings,
        scoring=await fraud_scoring(request),
    )


@router.post(
    "/fraud/score",
    response_model=None,
    responses={**_ERRORS, 200: {"description": "a FHIR Bundle of RiskAssessments, or compact JSON"}},
    openapi_extra=fraud_body_doc(),
)
async def score(
    request: Request,
    context: Annotated[FraudRequest, Depends(fraud_request)],
    format: Annotated[Literal["fhir", "json"], Query(description="fhir: a Bundle; json: a compact view")] = "fhir",
    accept_language: Annotated[str | None, Header(description="kk, ru or en")] = None,
) -> JSONResponse:
    """Score each submitted claim with the champion fraud model (it supports an investigator, never decides).

    The claims of concurrent requests are scored together in one model call (:mod:`pipelines.service.batching`);
    each request gets its own audit record (committed with the others of its turn of the event loop) and answer.
    A small body is read, checked and answered on the event loop, a large one in a request thread.
    """
    audit, model, scoring = context.audit, context.model, context.scoring
    lang: Language = negotiate_language(accept_language)
    body = await request.body()  # read and cached by the audit dependency already
    inline = scoring.inline(body)
    try:
        with scoring.incoming():  # the batcher may wait briefly for this request's claims
            records = await scoring.run(
                _records,
                body,
                context.pseudonymizer,
                model,
                context.settings.max_claims_per_request,
                context.iin_systems,
                inline=inline,
            )
    except FhirHTTPError as exc:
        output = {"error": exc.code, "status": exc.status_code}
        await _audit(audit, model, output, AuditOutcome.minor_failure, exc.diagnostics[:500])
        raise
    except ValidationError:
        await _audit(
            audit, model, {"error": "invalid", "status": 422}, AuditOutcome.minor_failure, "invalid FHIR Bundle"
        )
        raise
    try:
        scored = await scoring.score(model, records.records)
    except Exception as exc:
        log.error("fraud model %s failed: %s", model.ref.name, type(exc).__name__)
        output = {"error": type(exc).__name__}
        await _audit(audit, model, output, AuditOutcome.serious_failure, "the model failed")
        raise FhirHTTPError(
            500, "exception", "the model could not score these claims; the failure is audited"
        ) from None
    answer = await scoring.run(_risks, model, records, scored, format, lang, inline=inline)
    await _audit(audit, model, answer.audited, patient=answer.patient)  # no answer leaves without its record
    return await scoring.run(_render, model, answer.risks, format, lang, records.warnings, inline=inline)

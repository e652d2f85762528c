"""FHIR R4 output of the model endpoints: the diagnosis Bundle and the fraud RiskAssessments.

Every resource is built as plain JSON (valid against ``fhir.resources.R4B``, which the tests check) and placed
in a ``collection`` Bundle whose entries reference each other by ``urn:uuid`` fullUrls. Patients appear only
by their keyed pseudonym; no identifier, name or free text from the request is copied into the output.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines import codes
from pipelines.service import i18n
from pipelines.service.i18n import Language
from pipelines.service.outcome import issue, operation_outcome

PATIENT_PSEUDONYM_SYSTEM = "https://shipa.kz/fhir/sid/patient-pseudonym"
STUDY_PSEUDONYM_SYSTEM = "urn:dicom:uid"
MODEL_OUTPUT_SYSTEM = "https://shipa.kz/fhir/CodeSystem/model-output"
RULE_HIT_SYSTEM = "https://shipa.kz/fhir/CodeSystem/fraud-rule"
MODEL_NAME_SYSTEM = "https://shipa.kz/fhir/sid/model"
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
# A positive diagnosis from this probability on is a high risk (a critical CDS card): the probability a
# radiologist would act on at once, above any sensible threshold.
HIGH_PROBABILITY = 0.9
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
PROVENANCE_AGENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
DIAGNOSTIC_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0074"
NOT_DETECTED = ("260415000", "Not detected")  # SNOMED CT qualifier value
FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class ModelRef:
    """Which registered model answered: name, version and the alias it was served under."""

    name: str
    version: str
    alias: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready fields."""
        return {"name": self.name, "version": self.version, "alias": self.alias}


@dataclass(frozen=True)
class PatientRef:
    """A patient as the output names them: the keyed IIN pseudonym and, if known, the Patient pseudonym."""

    pseudonym: str | None
    resource_id: str | None = None

    def reference(self) -> dict[str, Any]:
        """A Reference to the pseudonymous patient (by identifier; literal when a resource is known)."""
        ref: dict[str, Any] = {"type": "Patient"}
        if self.resource_id:
            ref["reference"] = f"Patient/{self.resource_id}"
        if self.pseudonym:
            ref["identifier"] = {"system": PATIENT_PSEUDONYM_SYSTEM, "value": self.pseudonym}
        if len(ref) == 1:
            ref["display"] = "unidentified patient"
        return ref


@dataclass(frozen=True)
class DiagnosisOutcome:
    """One diagnosis prediction with what the FHIR output needs.

    Attributes:
        task: the task (``pneumonia``).
        probability: the calibrated probability.
        threshold: the decision threshold of the served model.
        positive: probability at or above the threshold.
        model: the model that answered.
        patient: the pseudonymous patient.
        study_uid: the pseudonymous StudyInstanceUID (``2.25...``), if the file had one.
        study_time: when the study was made (the basis of the EHR lookback), if known.
        icd10_prefixes: the codes that define the task (for conclusionCode and the predicted outcome).
        observations: pseudonymous ids of the submitted Observations whose values entered the EHR features.
        saliency_png: the Grad-CAM map as a PNG, when the model has an image branch.
        subject: the patient as the request referred to them (a Reference); None names them by pseudonym.
        study: the study as the request's DICOM file and Bundle name it (a Reference); None: by pseudonymous UID.
        observation_refs: the request's references of ``observations`` (used instead of pseudonymous ids).
        warnings: (FHIRPath, text) told to the caller in an OperationOutcome entry.
    """

    task: str
    probability: float
    threshold: float
    positive: bool
    model: ModelRef
    patient: PatientRef
    study_uid: str | None = None
    study_time: datetime | None = None
    icd10_prefixes: tuple[str, ...] = ()
    observations: tuple[str, ...] = ()
    saliency_png: bytes | None = None
    subject: dict[str, Any] | None = None
    study: dict[str, Any] | None = None
    observation_refs: tuple[str, ...] = ()
    warnings: tuple[tuple[str, str], ...] = ()

    @property
    def band(self) -> str:
        """``low`` below the threshold, ``moderate`` at or above it, ``high`` from :data:`HIGH_PROBABILITY` (or
        the threshold, when that is higher): the RiskAssessment's qualitative risk and the CDS card's indicator."""
        if not self.positive:
            return "low"
        return "high" if self.probability >= max(HIGH_PROBABILITY, self.threshold) else "moderate"


@dataclass(frozen=True)
class ClaimRisk:
    """One scored claim.

    Attributes:
        basis: the Claim as the request referred to it (``Claim/<id>`` or its Bundle fullUrl).
        claim_pseudonym: the claim's keyed pseudonym (what the audit log records).
        patient: the claim's pseudonymous patient.
        probability: the fraud score of the registered model.
        band: ``low``, ``moderate`` or ``high``.
        reasons: reason dicts (``code``, ``group``, ``weight``, ``kk``, ``ru``, ``en``), strongest first.
        rule_hits: deterministic rules the claim hits (``code``, ``pattern``, ``kk``, ``ru``, ``en``): facts in the
            records shown beside the probability, never folded into it.
    """

    basis: str
    claim_pseudonym: str
    patient: PatientRef
    probability: float
    band: str
    reasons: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    rule_hits: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def now_utc() -> datetime:
    """The current time in UTC (whole milliseconds, as FHIR instants are usually written)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def instant(moment: datetime) -> str:
    """A FHIR instant/dateTime in UTC with a ``Z`` suffix."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid() -> str:
    return str(uuid.uuid4())


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def _ref(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"urn:uuid:{resource['id']}"}


def positive_code(prefixes: Sequence[str]) -> tuple[str, str]:
    """The ICD-10 (code, display) a positive finding is coded with: the first listed code of a task prefix."""
    for code, display in codes.ICD10_CODES.items():
        if any(code.startswith(p) for p in prefixes):
            return code, display
    first = prefixes[0] if prefixes else "R69"
    return first, codes.ICD10_CODES.get(first, first)


def device_resource(model: ModelRef, lang: Language) -> dict[str, Any]:
    """A Device naming the model and its version (the Observation's device and the Provenance agent)."""
    return {
        "resourceType": "Device",
        "id": _uuid(),
        "identifier": [{"system": MODEL_NAME_SYSTEM, "value": f"{model.name}/{model.version}"}],
        "status": "active",
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "type": {"text": i18n.text("device.type", lang)},
        "version": [{"value": model.version}],
        "property": [{"type": {"text": "registry alias"}, "valueCode": [{"text": model.alias}]}],
    }


def provenance_resource(
    targets: Sequence[dict[str, Any]], device: dict[str, Any], recorded: datetime
) -> dict[str, Any]:
    """A Provenance: the targets were created by the model Device at ``recorded``."""
    return {
        "resourceType": "Provenance",
        "id": _uuid(),
        "target": [_ref(t) for t in targets],
        "recorded": instant(recorded),
        "activity": {"coding": [{"system": DATA_OPERATION_SYSTEM, "code": "CREATE", "display": "create"}]},
        "agent": [
            {
                "type": {"coding": [{"system": PROVENANCE_AGENT_SYSTEM, "code": "assembler", "display": "Assembler"}]},
                "who": _ref(device),
            }
        ],
    }


def _study_reference(outcome: DiagnosisOutcome) -> dict[str, Any] | None:
    if outcome.study is not None:
        return outcome.study
    if not outcome.study_uid:
        return None
    return {
        "type": "ImagingStudy",
        "identifier": {"system": STUDY_PSEUDONYM_SYSTEM, "value": f"urn:oid:{outcome.study_uid}"},
    }


def _saliency_png(png: bytes, lang: Language, created: datetime) -> dict[str, Any]:
    return {
        "contentType": "image/png",
        "language": lang,
        "data": base64.b64encode(png).decode("ascii"),
        "title": i18n.text("saliency.title", lang),
        "creation": instant(created),
    }


def conclusion_text(outcome: DiagnosisOutcome, lang: Language) -> str:
    """The DiagnosticReport conclusion in ``lang``."""
    key = "conclusion.positive" if outcome.positive else "conclusion.negative"
    return i18n.text(
        key,
        lang,
        task=i18n.task_name(outcome.task, lang),
        p=i18n.number(outcome.probability, lang),
        t=i18n.number(outcome.threshold, lang),
    )


def diagnosis_bundle(outcome: DiagnosisOutcome, lang: Language, recorded: datetime | None = None) -> dict[str, Any]:
    """The diagnosis answer: DiagnosticReport, Observation, RiskAssessment, Device and Provenance in a Bundle.

    Args:
        outcome: the prediction.
        lang: language of the human-readable texts.
        recorded: the time of the answer (default: now).
    """
    recorded = recorded or now_utc()
    effective = instant(outcome.study_time or recorded)
    task = i18n.task_name(outcome.task, lang)
    # The clinician's answer speaks of what the clinician sent: their Patient and study, so it files into the chart
    # it came from (logs and the audit record keep pseudonyms).
    subject = outcome.subject or outcome.patient.reference()
    device = device_resource(outcome.model, lang)
    code, display = positive_code(outcome.icd10_prefixes)
    outcome_cc = {
        "coding": [{"system": codes.ICD10, "code": code, "display": display}],
        "text": i18n.text("outcome.display", lang, task=task),
    }
    method = {"text": i18n.text("method.display", lang)}
    study = _study_reference(outcome)
    observation = {
        "resourceType": "Observation",
        "id": _uuid(),
        "status": "preliminary",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": "imaging"}]}],
        "code": {
            "coding": [{"system": MODEL_OUTPUT_SYSTEM, "code": f"{outcome.task}-probability"}],
            "text": i18n.text("probability.display", lang, task=task),
        },
        "subject": subject,
        "effectiveDateTime": effective,
        "issued": instant(recorded),
        "valueQuantity": {
            "value": round(float(outcome.probability), 6),
            "unit": "1",
            "system": codes.UCUM,
            "code": "1",
        },
        "interpretation": [
            {
                "coding": [
                    {
                        "system": INTERPRETATION_SYSTEM,
                        "code": "POS" if outcome.positive else "NEG",
                        "display": "Positive" if outcome.positive else "Negative",
                    }
                ]
            }
        ],
        "method": method,
        "device": _ref(device),
    }
    if study is not None:
        observation["derivedFrom"] = [study]
    basis: list[dict[str, Any]] = [_ref(observation)]
    if study is not None:
        basis.append(study)
    used = outcome.observation_refs or tuple(f"Observation/{oid}" for oid in outcome.observations)
    basis += [{"reference": ref} for ref in used]
    risk = {
        "resourceType": "RiskAssessment",
        "id": _uuid(),
        "status": "preliminary",
        "method": method,
        "code": {"coding": [{"system": MODEL_OUTPUT_SYSTEM, "code": f"{outcome.task}-risk"}], "text": task},
        "subject": subject,
        "occurrenceDateTime": instant(recorded),
        "performer": _ref(device),
        "basis": basis,
        "prediction": [
            {
                "outcome": outcome_cc,
                "probabilityDecimal": round(float(outcome.probability), 6),
                "qualitativeRisk": {
                    "coding": [
                        {
                            "system": RISK_PROBABILITY_SYSTEM,
                            "code": outcome.band,
                            "display": outcome.band.capitalize() + " likelihood",
                        }
                    ],
                    "text": i18n.risk_band(outcome.band, lang),
                },
                "rationale": conclusion_text(outcome, lang),
            }
        ],
    }
    conclusion_cc = (
        outcome_cc
        if outcome.positive
        else {
            "coding": [{"system": codes.SNOMED, "code": NOT_DETECTED[0], "display": NOT_DETECTED[1]}],
            "text": i18n.text("not_detected.display", lang),
        }
    )
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": _uuid(),
        "language": lang,
        "status": "preliminary",
        "category": [{"coding": [{"system": DIAGNOSTIC_SERVICE_SYSTEM, "code": "RAD", "display": "Radiology"}]}],
        "code": {
            "coding": [
                {
                    "system": codes.LOINC,
                    "code": codes.RADIOLOGY_REPORT_LOINC,
                    "display": codes.LOINC_CODES[codes.RADIOLOGY_REPORT_LOINC].display,
                }
            ]
        },
        "subject": subject,
        "effectiveDateTime": effective,
        "issued": instant(recorded),
        "result": [_ref(observation)],
        "conclusion": conclusion_text(outcome, lang),
        "conclusionCode": [conclusion_cc],
    }
    if study is not None:
        report["imagingStudy"] = [study]
    if outcome.saliency_png:
        report["presentedForm"] = [_saliency_png(outcome.saliency_png, lang, recorded)]
    provenance = provenance_resource([report, observation, risk], device, recorded)
    resources = [report, observation, risk, device, provenance]
    if outcome.warnings:
        resources.append(warnings_outcome(outcome.warnings))
    return {
        "resourceType": "Bundle",
        "id": _uuid(),
        "type": "collection",
        "timestamp": instant(recorded),
        "entry": [_entry(r) for r in resources],
    }


def warning_issues(warnings: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """OperationOutcome issues of an answer's warnings ((FHIRPath, text): what was left out or replaced, and why)."""
    return [issue("informational", text, severity="warning", expression=[where]) for where, text in warnings]


def warnings_outcome(warnings: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """An OperationOutcome of an answer's warnings, to go in its Bundle."""
    return {**operation_outcome(warning_issues(warnings)), "id": _uuid()}


def _rationale(risk: ClaimRisk, lang: Language) -> str:
    texts = [str(r.get(lang) or "") for r in risk.reasons if r.get(lang)]
    return " ".join(texts) if texts else i18n.text("fraud.no_reason", lang)


def claim_risk_assessment(
    risk: ClaimRisk, device: dict[str, Any], lang: Language, recorded: datetime
) -> dict[str, Any]:
    """One RiskAssessment of a claim: basis the Claim, a probability, a qualitative band and the reasons."""
    return {
        "resourceType": "RiskAssessment",
        "id": _uuid(),
        "language": lang,
        "status": "preliminary",
        "method": {"text": i18n.text("fraud.method", lang)},
        "subject": risk.patient.reference(),
        "occurrenceDateTime": instant(recorded),
        "performer": _ref(device),
        "basis": [{"reference": risk.basis, "type": "Claim"}],
        "prediction": [
            {
                "outcome": {"text": i18n.text("fraud.outcome", lang)},
                "probabilityDecimal": round(float(risk.probability), 6),
                "qualitativeRisk": {
                    "coding": [
                        {
                            "system": RISK_PROBABILITY_SYSTEM,
                            "code": risk.band,
                            "display": risk.band.capitalize() + " likelihood",
                        }
                    ],
                    "text": i18n.risk_band(risk.band, lang),
                },
                "rationale": _rationale(risk, lang),
            },
            # Each rule hit is its own prediction, with no probability: a fact an investigator checks in the
            # records, which puts the claim on the list whatever the model's probability above says.
            *(
                {
                    "outcome": {
                        "coding": [{"system": RULE_HIT_SYSTEM, "code": str(hit["code"])}],
                        "text": str(hit.get(lang) or hit["code"]),
                    },
                    "rationale": i18n.text("fraud.rule_hit", lang),
                }
                for hit in risk.rule_hits
            ),
        ],
    }


def fraud_bundle(
    risks: Sequence[ClaimRisk], model: ModelRef, lang: Language, recorded: datetime | None = None
) -> dict[str, Any]:
    """RiskAssessments of the scored claims with the model Device and a Provenance, in a collection Bundle."""
    recorded = recorded or now_utc()
    device = device_resource(model, lang)
    assessments = [claim_risk_assessment(r, device, lang, recorded) for r in risks]
    resources = [*assessments, device, provenance_resource(assessments, device, recorded)]
    return {
        "resourceType": "Bundle",
        "id": _uuid(),
        "type": "collection",
        "timestamp": instant(recorded),
        "entry": [_entry(r) for r in resources],
    }


def fraud_compact(risks: Sequence[ClaimRisk], model: ModelRef, lang: Language) -> dict[str, Any]:
    """The compact JSON view of fraud scores (``?format=json``)."""
    return {
        "model": model.as_dict(),
        "language": lang,
        "results": [
            {
                "claim": r.basis,
                "probability": round(float(r.probability), 6),
                "risk": r.band,
                "rule_hits": [{"code": h.get("code"), "text": h.get(lang)} for h in r.rule_hits],
                "reasons": [
                    {
                        "code": x.get("code"),
                        "weight": round(float(x.get("weight", 0.0)), 4),
                        "text": x.get(lang),
                    }
                    for x in r.reasons
                ],
            }
            for r in risks
        ],
    }

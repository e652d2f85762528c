"""The model layer without a registry: languages, FHIR output and input, CDS Hooks cards, Grad-CAM."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fhir.resources.R4B import get_fhir_model_class

from pipelines import codes
from pipelines.fhir.deid import Pseudonyms
from pipelines.fhir.pseudonym import Pseudonymizer
from pipelines.service import cdshooks, fhir_out
from pipelines.service.assemble import iin_systems_of
from pipelines.service.errors import FhirHTTPError
from pipelines.service.fhir_in import check_resources, deidentify_and_flatten, submitted_resources
from pipelines.service.gradcam import SaliencyExplainer, overlay_png
from pipelines.service.i18n import negotiate_language
from pipelines.service.mlflow_source import RiskBands

KEY = "unit-test-key-0123456789"
IIN = "590214400000"  # a valid IIN of the synthetic cohort's kind; must never reach an output
KAZAKH_ONLY = set("әғқңөұүһіӘҒҚҢӨҰҮҺІ")
CYRILLIC = re.compile(r"[А-Яа-яЁё]")


def validate_bundle(bundle: dict[str, Any]) -> list[str]:
    """Validate a Bundle and every resource in it with the R4B models; returns the resource types."""
    get_fhir_model_class("Bundle").model_validate(bundle)
    types = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        types.append(resource["resourceType"])
    return types


def outcome(
    probability: float = 0.83, positive: bool = True, png: bytes | None = b"\x89PNG"
) -> fhir_out.DiagnosisOutcome:
    return fhir_out.DiagnosisOutcome(
        task="pneumonia",
        probability=probability,
        threshold=0.4,
        positive=positive,
        model=fhir_out.ModelRef("shipa-diagnosis-pneumonia", "3", "champion"),
        patient=fhir_out.PatientRef("a" * 32, "b" * 32),
        study_uid="2.25.1234",
        study_time=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
        icd10_prefixes=codes.PNEUMONIA_PREFIXES,
        observations=("c" * 32,),
        saliency_png=png,
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "en"),
        ("kk", "kk"),
        ("ru-RU,ru;q=0.9,en;q=0.8", "ru"),
        ("kk-KZ;q=0.5, ru;q=0.7", "ru"),
        ("de, fr;q=0.9", "en"),
        ("en;q=0, kk;q=0.1", "kk"),
        ("*", "en"),
    ],
)
def test_accept_language_picks_kk_ru_or_en(header: str | None, expected: str) -> None:
    assert negotiate_language(header) == expected


def test_diagnosis_bundle_is_valid_r4_in_three_languages_with_distinct_texts() -> None:
    conclusions = {}
    for lang in ("kk", "ru", "en"):
        bundle = fhir_out.diagnosis_bundle(outcome(), lang)  # type: ignore[arg-type]
        types = validate_bundle(bundle)
        assert types == ["DiagnosticReport", "Observation", "RiskAssessment", "Device", "Provenance"]
        report, observation, risk, device, provenance = (e["resource"] for e in bundle["entry"])
        assert report["status"] == "preliminary" and report["conclusionCode"][0]["coding"][0]["code"] == "J18.9"
        assert observation["valueQuantity"] == {"value": 0.83, "unit": "1", "system": codes.UCUM, "code": "1"}
        assert risk["prediction"][0]["probabilityDecimal"] == 0.83
        assert device["version"][0]["value"] == "3" and device["deviceName"][0]["name"] == "shipa-diagnosis-pneumonia"
        assert provenance["agent"][0]["who"]["reference"] == f"urn:uuid:{device['id']}"
        assert {t["reference"] for t in provenance["target"]} == {
            f"urn:uuid:{r['id']}" for r in (report, observation, risk)
        }
        assert report["presentedForm"][0]["contentType"] == "image/png"
        conclusions[lang] = report["conclusion"]
    assert len(set(conclusions.values())) == 3
    assert KAZAKH_ONLY & set(conclusions["kk"])
    assert CYRILLIC.search(conclusions["ru"]) and not KAZAKH_ONLY & set(conclusions["ru"])
    assert conclusions["en"].isascii()


def test_negative_diagnosis_is_coded_not_detected() -> None:
    bundle = fhir_out.diagnosis_bundle(outcome(0.1, False, None), "en")
    validate_bundle(bundle)
    report = bundle["entry"][0]["resource"]
    assert report["conclusionCode"][0]["coding"][0] == {
        "system": codes.SNOMED,
        "code": "260415000",
        "display": "Not detected",
    }
    assert "presentedForm" not in report and report["conclusion"].startswith("No findings")


@pytest.mark.parametrize(
    ("probability", "positive", "indicator"),
    [(0.2, False, "info"), (0.6, True, "warning"), (0.95, True, "critical")],
)
def test_cds_hooks_card(probability: float, positive: bool, indicator: str) -> None:
    for lang in ("kk", "ru", "en"):
        cards = cdshooks.diagnosis_cards(outcome(probability, positive), lang)  # type: ignore[arg-type]
        (card,) = cards["cards"]
        assert len(card["summary"]) < 140
        assert card["indicator"] == indicator
        band = {"info": "low", "warning": "moderate", "critical": "high"}[indicator]
        assert outcome(probability, positive).band == band
        bundle = fhir_out.diagnosis_bundle(outcome(probability, positive), lang)  # type: ignore[arg-type]
        risk = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "RiskAssessment")
        assert risk["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == band
        assert card["source"]["label"] == "Shipa shipa-diagnosis-pneumonia v3"
        assert card["detail"]


def test_cds_hooks_card_tells_what_was_left_out_of_the_request() -> None:
    import dataclasses

    warned = dataclasses.replace(
        outcome(), warnings=(("Observation.valueQuantity.value", "not a number: the value was left out"),)
    )
    headings = {
        "kk": "Сұраудың кейбір бөліктері ескерілмеді:",
        "ru": "Часть запроса не учтена:",
        "en": "Parts of the request were left out:",
    }
    for lang, heading in headings.items():
        (card,) = cdshooks.diagnosis_cards(warned, lang)["cards"]  # type: ignore[arg-type]
        assert card["detail"].endswith(
            f"\n\n{heading}\n- Observation.valueQuantity.value: not a number: the value was left out"
        )
        (plain,) = cdshooks.diagnosis_cards(outcome(), lang)["cards"]  # type: ignore[arg-type]
        assert heading not in plain["detail"]


def test_fraud_bundle_is_valid_with_bands_and_reasons() -> None:
    reasons = (
        {
            "code": "DUPLICATE_CLAIM",
            "weight": 1.2,
            "kk": "Қайталанған шот.",
            "ru": "Дубль.",
            "en": "Duplicate.",
        },
    )
    hit = {
        "code": "SERVICE_AFTER_DEATH",
        "pattern": "services_after_death",
        "kk": "Қайтыс болғаннан кейін.",
        "ru": "После смерти.",
        "en": "After death.",
    }
    risks = [
        fhir_out.ClaimRisk("Claim/c1", "d" * 32, fhir_out.PatientRef("a" * 32, "b" * 32), 0.7, "high", reasons),
        fhir_out.ClaimRisk("urn:uuid:1234", "e" * 32, fhir_out.PatientRef(None), 0.01, "low", (), (hit,)),
    ]
    model = fhir_out.ModelRef("shipa-fraud", "2", "champion")
    bundle = fhir_out.fraud_bundle(risks, model, "ru")
    assert validate_bundle(bundle) == ["RiskAssessment", "RiskAssessment", "Device", "Provenance"]
    first, second = (bundle["entry"][i]["resource"] for i in (0, 1))
    assert first["basis"] == [{"reference": "Claim/c1", "type": "Claim"}]
    assert first["prediction"][0]["qualitativeRisk"]["coding"][0]["code"] == "high"
    assert first["prediction"][0]["rationale"] == "Дубль."
    assert len(first["prediction"]) == 1  # no rule hit: the model's prediction alone
    assert second["prediction"][0]["rationale"].startswith("Явных причин нет")
    # A rule hit is its own prediction beside the model's, with no probability; the model's stays 0.01, "low".
    model_part, rule_part = second["prediction"]
    assert (model_part["probabilityDecimal"], model_part["qualitativeRisk"]["coding"][0]["code"]) == (0.01, "low")
    assert rule_part["outcome"] == {
        "coding": [{"system": fhir_out.RULE_HIT_SYSTEM, "code": "SERVICE_AFTER_DEATH"}],
        "text": "После смерти.",
    }
    assert "probabilityDecimal" not in rule_part and rule_part["rationale"].startswith("Сработало правило")
    compact = fhir_out.fraud_compact(risks, model, "en")
    assert compact["results"][0] == {
        "claim": "Claim/c1",
        "probability": 0.7,
        "risk": "high",
        "rule_hits": [],
        "reasons": [{"code": "DUPLICATE_CLAIM", "weight": 1.2, "text": "Duplicate."}],
    }
    assert compact["results"][1]["rule_hits"] == [{"code": "SERVICE_AFTER_DEATH", "text": "After death."}]


def test_risk_bands() -> None:
    bands = RiskBands(moderate=0.2, high=0.6)
    assert [bands.band(p) for p in (0.0, 0.19, 0.2, 0.59, 0.6, 1.0)] == [
        "low",
        "low",
        "moderate",
        "moderate",
    ] + ["high"] * 2
    with pytest.raises(ValueError, match="moderate < high"):
        RiskBands(moderate=0.5, high=0.5)


def test_gradcam_map_of_the_image_branch_leaves_the_network_alone() -> None:
    from pipelines.modeling.networks import build_model

    torch.manual_seed(0)
    net = build_model("resnet18", "fused", 4, embed_dim=8, ehr_hidden=8).eval()
    image = torch.rand(1, 32, 32)
    ehr = torch.rand(1, 4)
    with torch.inference_mode():
        before = net(image.unsqueeze(0), ehr)
    explainer = SaliencyExplainer(net)
    cam = explainer.saliency(image, ehr)
    assert cam.shape == (32, 32) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() <= 1.0 and cam.max() > cam.min()
    with torch.inference_mode():
        after = net(image.unsqueeze(0), ehr)
    assert torch.equal(before, after)
    assert not any(m._forward_hooks for m in net.modules())  # the hooks sit on the explainer's copy
    png = overlay_png(image[0].numpy(), cam)
    from PIL import Image

    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.size == (256, 256) and picture.mode == "RGB"


class _RegionNet(torch.nn.Module):
    """A network whose logit reads only the top-left 8 x 8 pixels of the image, through one identity convolution."""

    def __init__(self) -> None:
        super().__init__()
        conv = torch.nn.Conv2d(1, 1, kernel_size=1)
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        self.image_net = torch.nn.Sequential(conv)

    def forward(self, image: torch.Tensor, ehr: torch.Tensor | None = None) -> torch.Tensor:
        return self.image_net(image)[:, 0, :8, :8].mean(dim=(1, 2))


def test_gradcam_heat_sits_where_the_model_looks() -> None:
    """The map's peak is the region the logit reads (MONAI's default post-processing put it everywhere else)."""
    image = torch.full((1, 32, 32), 0.05)
    image[0, :8, :8] = 1.0  # the bright region is the one the logit reads
    cam = SaliencyExplainer(_RegionNet()).saliency(image, None)
    assert cam.shape == (32, 32) and cam.max() == pytest.approx(1.0)
    row, column = np.unravel_index(int(cam.argmax()), cam.shape)
    assert row < 8 and column < 8
    assert cam[:8, :8].mean() > 0.9 and cam[16:, 16:].max() < 0.1


def _patient(pid: str = "p1") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": codes.IIN_SYSTEM, "value": IIN}],
        "name": [{"family": "Кенжебаева", "given": ["Бота"]}],
        "gender": "female",
        "birthDate": "1959-02-14",
    }


def _observation(**overrides: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": codes.LOINC, "code": "8310-5"}]},
        "subject": {"reference": "urn:uuid:p1"},
        "effectiveDateTime": "2024-05-01T08:00:00+05:00",
        "valueQuantity": {"value": 38.4, "unit": "Cel"},
    }
    resource.update(overrides)
    return {k: v for k, v in resource.items() if v is not None}


def test_invalid_fhir_names_the_field_and_never_the_value() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": _patient()},
            {"fullUrl": "urn:uuid:o1", "resource": _observation(status=None)},
        ],
    }
    with pytest.raises(FhirHTTPError) as caught:
        check_resources(submitted_resources(bundle))
    assert caught.value.status_code == 422
    assert caught.value.expression == ["Bundle.entry[1].resource.status"]
    bad_iin = {**_patient(), "identifier": [{"system": codes.IIN_SYSTEM, "value": IIN[:-1] + "9"}]}
    with pytest.raises(FhirHTTPError) as caught:
        check_resources(
            submitted_resources({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": bad_iin}]})
        )
    assert caught.value.expression == ["Bundle.entry[0].resource.identifier[0].value"]
    assert IIN[:-1] not in caught.value.diagnostics and "iin_checksum" in caught.value.diagnostics


def test_flattening_pseudonymises_and_resolves_references_inside_the_request() -> None:
    pseudonymizer = Pseudonymizer(KEY)
    org = {
        "resourceType": "Organization",
        "id": "org-7",
        "identifier": [{"system": codes.ORG_ID_SYSTEM, "value": "ORG7"}],
        "name": "Clinic",
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": codes.ENCOUNTER_CLASS, "code": "AMB"},
        "subject": {"reference": "urn:uuid:p1"},
        "serviceProvider": {"reference": f"Organization?identifier={codes.ORG_ID_SYSTEM}|ORG7"},
        "period": {"start": "2024-05-01T08:00:00+05:00"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:p1", "resource": _patient()},
            {"resource": org},
            {"resource": encounter},
            {"resource": _observation()},
        ],
    }
    submitted = submitted_resources(bundle)
    check_resources(submitted)
    flat = deidentify_and_flatten(submitted, Pseudonyms(pseudonymizer))
    (patient,) = flat.rows["patients"]
    assert patient["patient_id"] == pseudonymizer.id("Patient", "p1")
    assert patient["patient_pseudo_id"] == pseudonymizer.id("iin", IIN)
    (enc,) = flat.rows["encounters"]
    assert enc["organization_id"] == pseudonymizer.id("Organization", "org-7")  # conditional, resolved here
    (obs,) = flat.rows["observations"]
    assert (obs["patient_id"], obs["loinc_code"], obs["value"]) == (patient["patient_id"], "8310-5", 38.4)
    text = repr(flat.rows)
    assert IIN not in text and "Кенжебаева" not in text and not any(k.startswith("__") for k in obs)


def test_base64_png_round_trip_in_presented_form() -> None:
    png = overlay_png(np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32), min_side=8)
    bundle = fhir_out.diagnosis_bundle(outcome(png=png), "en")
    data = bundle["entry"][0]["resource"]["presentedForm"][0]["data"]
    assert base64.b64decode(data) == png


def test_an_event_before_the_patients_birth_is_refused_like_ingest() -> None:
    early = _observation(effectiveDateTime="1950-01-01T08:00:00+05:00")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:p1", "resource": _patient()}, {"resource": early}],
    }
    with pytest.raises(FhirHTTPError) as caught:
        check_resources(submitted_resources(bundle))
    assert caught.value.expression == ["Bundle.entry[1].resource.effective[x]"]
    assert caught.value.diagnostics.startswith("implausible_date")


def test_a_hospitals_own_iin_system_is_pseudonymised_as_ingest_does(tmp_path: Path) -> None:
    own = "http://hl7.org/fhir/sid/kz-iin"
    params = tmp_path / "params.yaml"
    params.write_text(f"ingest:\n  iin_systems: [{own}]\n", encoding="utf-8")
    systems = iin_systems_of(params)
    assert systems == frozenset({own})
    assert iin_systems_of(tmp_path / "absent.yaml") == frozenset({codes.IIN_SYSTEM})
    patient = {**_patient(), "identifier": [{"system": own, "value": IIN}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:p1", "resource": patient}],
    }
    pseudonymizer = Pseudonymizer(KEY)
    for iin_systems, expected in ((systems, pseudonymizer.id("iin", IIN)), (frozenset({codes.IIN_SYSTEM}), None)):
        submitted = submitted_resources(bundle)
        check_resources(submitted, iin_systems=iin_systems)
        flat = deidentify_and_flatten(submitted, Pseudonyms(pseudonymizer, iin_systems=iin_systems))
        (row,) = flat.rows["patients"]
        assert row["patient_pseudo_id"] == expected  # the DICOM PatientID's pseudonym, only when the system is listed
    bad = {**patient, "identifier": [{"system": own, "value": IIN[:-1] + "9"}]}
    with pytest.raises(FhirHTTPError, match="iin_checksum"):
        check_resources(
            submitted_resources({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": bad}]}),
            iin_systems=systems,
        )

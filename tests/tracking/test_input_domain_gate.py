"""A diagnosis version without a recorded input domain never becomes champion, and the service never serves one.

Real MLflow registries (a sqlite store per test); the versions are trivial pyfuncs with or without the
``input_domain`` metadata the register stage writes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipelines.imaging.domain import InputDomain
from pipelines.service.mlflow_source import MlflowModelSource
from pipelines.tracking.card_text import diagnosis_card_text, fraud_card_text
from pipelines.tracking.errors import GateError
from pipelines.tracking.gate import GateThresholds, decide
from pipelines.tracking.model_card import build_model_card, render_markdown
from pipelines.tracking.promotion import gate_version, override, recorded_input_domain
from pipelines.tracking.registry import champion_version, get_version, register_version, set_alias
from pipelines.tracking.runs import stage_run

from .helpers import DIAGNOSIS_METADATA, DoublingModel

NAME = "shipa-diagnosis-pneumonia"
RULES = GateThresholds(min_primary_low=0.6)
NO_DOMAIN = "fail: no input domain is recorded with this version"
NO_OOD = "fail: no image out-of-distribution score is recorded with this version"


def _version(tracking_uri: str, example: pd.DataFrame, name: str, metadata: dict[str, Any] | None) -> str:
    with stage_run(
        "register@diagnosis", tracking_uri=tracking_uri, experiment="shipa", params={}, tags={}, pipeline_run_id=None
    ) as run:
        logged = run.log_pyfunc_model(DoublingModel(), input_example=example, metadata=metadata)
    return register_version(logged.model_uri, name, tracking_uri=tracking_uri, run_id=logged.run_id)


def test_decide_requires_a_valid_domain_only_when_asked(good_report: dict[str, Any]) -> None:
    assert decide(good_report, None, RULES).promote  # fraud: no domain rule
    missing = decide(good_report, None, RULES, requires_input_domain=True)
    assert not missing.promote
    assert missing.failures == [
        f"{NO_DOMAIN}: what it may be used on is unknown and the service will not serve it "
        "(register it with the input_domain.json of `shipa features diagnosis`)"
    ]
    broken = decide(good_report, None, RULES, requires_input_domain=True, input_domain={"age_years": [9, 1]})
    assert not broken.promote and broken.failures[0].startswith("fail: the recorded input domain cannot be used")
    ok = decide(good_report, None, RULES, requires_input_domain=True, input_domain=DIAGNOSIS_METADATA["input_domain"])
    assert ok.promote
    assert ok.reasons[-1] == (
        "pass: input domain recorded: Modality CR, DX; BodyPartExamined CHEST; ViewPosition AP, PA; "
        "PatientAge (or PatientBirthDate at StudyDate) 1 to 100 years"
    )


def test_a_diagnosis_version_without_a_domain_is_refused_and_cannot_be_overridden(
    tracking_uri: str, input_example: pd.DataFrame, good_report: dict[str, Any]
) -> None:
    bare = _version(tracking_uri, input_example, NAME, None)
    assert recorded_input_domain(NAME, bare, tracking_uri=tracking_uri) is None
    decision = gate_version(NAME, bare, good_report, RULES, tracking_uri=tracking_uri)
    assert not decision.promote
    assert [f.split(":")[0] + ":" + f.split(":")[1] for f in decision.failures] == [NO_DOMAIN, NO_OOD]
    assert champion_version(NAME, tracking_uri=tracking_uri) is None
    assert get_version(NAME, bare, tracking_uri=tracking_uri).tags["shipa.gate.reasons"].count(NO_DOMAIN) == 1
    with pytest.raises(GateError, match=f"override of {NAME} version {bare} refused: no input domain is recorded"):
        override(NAME, bare, tracking_uri=tracking_uri, person="Dr. A. Seitkali", reason="urgent")
    assert champion_version(NAME, tracking_uri=tracking_uri) is None

    recorded = _version(tracking_uri, input_example, NAME, DIAGNOSIS_METADATA)
    assert InputDomain.from_dict(recorded_input_domain(NAME, recorded, tracking_uri=tracking_uri)).modalities == (
        "CR",
        "DX",
    )
    assert gate_version(NAME, recorded, good_report, RULES, tracking_uri=tracking_uri).promote
    assert champion_version(NAME, tracking_uri=tracking_uri) == recorded


def test_decide_requires_an_image_ood_score_only_when_asked(good_report: dict[str, Any]) -> None:
    domain = DIAGNOSIS_METADATA["input_domain"]
    ehr_only = decide(good_report, None, RULES, requires_input_domain=True, input_domain=domain)
    assert ehr_only.promote and not any("out-of-distribution" in r for r in ehr_only.reasons)
    missing = decide(good_report, None, RULES, requires_input_domain=True, input_domain=domain, requires_image_ood=True)
    assert not missing.promote
    assert missing.failures == [
        f"{NO_OOD}: a study whose header lies would be scored, and the service will not serve it "
        "(register it with the image_ood file of `shipa evaluate`)"
    ]
    infinite = decide(good_report, None, RULES, requires_image_ood=True, image_ood={"threshold": float("inf")})
    assert infinite.failures and infinite.failures[0].startswith(NO_OOD)
    ok = decide(good_report, None, RULES, requires_image_ood=True, image_ood=DIAGNOSIS_METADATA["image_ood"])
    assert ok.promote
    assert ok.reasons[-1] == "pass: image OOD score recorded: threshold 512.5, refuses 1 of 316 test images"


def test_an_image_version_without_an_ood_score_is_refused_and_cannot_be_overridden(
    tracking_uri: str, input_example: pd.DataFrame, good_report: dict[str, Any]
) -> None:
    no_ood = _version(tracking_uri, input_example, NAME, {"input_domain": DIAGNOSIS_METADATA["input_domain"]})
    decision = gate_version(NAME, no_ood, good_report, RULES, tracking_uri=tracking_uri)
    assert not decision.promote and decision.failures[0].startswith(NO_OOD)
    with pytest.raises(GateError, match="refused: no image out-of-distribution score is recorded"):
        override(NAME, no_ood, tracking_uri=tracking_uri, person="Dr. A. Seitkali", reason="urgent")
    ehr = _version(
        tracking_uri, input_example, NAME, {"input_domain": DIAGNOSIS_METADATA["input_domain"], "mode": "ehr"}
    )
    assert gate_version(NAME, ehr, good_report, RULES, tracking_uri=tracking_uri).promote  # reads no pixels
    assert champion_version(NAME, tracking_uri=tracking_uri) == ehr


def test_the_fraud_model_needs_no_image_domain(
    tracking_uri: str, input_example: pd.DataFrame, good_report: dict[str, Any]
) -> None:
    version = _version(tracking_uri, input_example, "shipa-fraud", None)
    decision = gate_version("shipa-fraud", version, good_report, RULES, tracking_uri=tracking_uri)
    assert decision.promote and not any("input domain" in r for r in decision.reasons)


def test_the_service_refuses_to_serve_a_diagnosis_champion_without_a_domain(
    tracking_uri: str, input_example: pd.DataFrame, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = _version(tracking_uri, input_example, NAME, None)
    set_alias(NAME, "champion", bare, tracking_uri=tracking_uri)  # moved by hand, around the gate
    source = MlflowModelSource(tracking_uri=tracking_uri, cache_dir=tmp_path / "cache", serve_fraud=False)
    with caplog.at_level(logging.ERROR, logger="pipelines.service.mlflow_source"):
        state = source.reload()
    why = f"{NAME} version {bare} has no recorded input domain (what it may be used on is unknown): not served"
    assert state["ready"] is False and state["models"] == []
    assert state["problems"] == [why] and state["reason"] == why
    assert why in caplog.messages


def test_the_model_card_shows_the_intended_input(good_report: dict[str, Any]) -> None:
    domain = InputDomain.from_dict(DIAGNOSIS_METADATA["input_domain"])
    card = build_model_card(
        name=NAME,
        version="3",
        text=diagnosis_card_text("pneumonia", domain.describe()),
        evaluation=good_report,
        data_summary={"studies": 10},
        lineage={},
    )
    assert card["intended_input"]["Modality"] == "CR, DX"
    assert card["intended_input"]["ViewPosition"] == "AP, PA"
    markdown = render_markdown(card)
    section = markdown.split("## Intended input\n", 1)[1].split("\n## ", 1)[0]
    assert "| Modality | CR, DX |" in section and "| BodyPartExamined | CHEST |" in section
    assert "| PatientAge (or PatientBirthDate at StudyDate) | 1 to 100 years |" in section
    fraud = build_model_card(
        name="shipa-fraud", version="1", text=fraud_card_text(), evaluation=good_report, data_summary={}, lineage={}
    )
    assert fraud["intended_input"] == {} and "## Intended input" not in render_markdown(fraud)

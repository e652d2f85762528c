"""Model cards from a real evaluation report: metrics with CIs, subgroups, lineage, determinism, no PHI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from pipelines.tracking.card_text import diagnosis_card_text, fraud_card_text
from pipelines.tracking.errors import ModelCardError
from pipelines.tracking.model_card import build_model_card, card_json, render_markdown, write_model_card
from pipelines.tracking.promotion import log_model_card
from pipelines.tracking.registry import register_version
from pipelines.tracking.runs import stage_run

from .helpers import DoublingModel

DATA_SUMMARY = {
    "n_patients": 1600,
    "n_studies": 1720,
    "date_range": {"start": "2023-01-01", "end": "2024-12-31"},
    "prevalence": 0.35,
    "regions": ["Almaty", "Astana", "Shymkent"],
    "source": "built-in synthetic cohort",
}
LINEAGE = {
    "shipa.stage": "train@diagnosis",
    "shipa.git_commit": "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
    "shipa.git_dirty": "false",
    "shipa.params_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "shipa.device": "cpu",
    "shipa.host": "node-1",
    "shipa.data.data/processed/diagnosis": "7215ee9c7d9dc229d2921a40e899ec5f.dir",
    "shipa.version.torch": "2.13.0",
}
HISTORY = [
    {
        "version": "1",
        "created": "2026-03-01T09:00:00+00:00",
        "aliases": ["champion"],
        "gate_decision": "promote",
        "gate_by": "gate",
        "summary": "first model",
    },
]
PHI_LIKE = [
    re.compile(r"(?<![0-9A-Za-z])\d{12}(?![0-9A-Za-z])"),  # IIN
    re.compile(r"\+7[\s\-(]*\d{3}"),  # phone
    re.compile(r"[\w.]+@[\w-]+\.\w+"),  # e-mail
]


@pytest.fixture
def card(good_report: dict[str, Any]) -> dict[str, Any]:
    return build_model_card(
        name="shipa-diagnosis-pneumonia",
        version="2",
        text=diagnosis_card_text("pneumonia"),
        evaluation=good_report,
        data_summary=DATA_SUMMARY,
        lineage=LINEAGE,
        history=HISTORY,
    )


def test_card_json_carries_metrics_with_cis_subgroups_and_lineage(card: dict[str, Any], good_report: dict) -> None:
    auroc = good_report["metrics"]["auroc"]

    assert card["evaluation"]["metrics"]["auroc"] == {k: auroc[k] for k in ("value", "low", "high")}
    assert card["evaluation"]["ci_level"] == 0.95
    assert card["evaluation"]["test_data_md5"] == good_report["test_data_md5"]
    assert set(card["calibration"]) == {"ece", "brier", "calibration_slope", "calibration_intercept"}
    assert "ece" not in card["evaluation"]["metrics"]
    assert set(card["subgroups"]) == {"region", "sex"}
    female = card["subgroups"]["sex"]["groups"]["female"]
    assert female["metrics"]["auroc"] == {
        k: good_report["subgroups"]["sex"]["groups"]["female"]["metrics"]["auroc"][k] for k in ("value", "low", "high")
    }
    assert card["lineage"]["data"] == {"data/processed/diagnosis": "7215ee9c7d9dc229d2921a40e899ec5f.dir"}
    assert card["lineage"]["versions"] == {"torch": "2.13.0"}
    assert "node-1" not in card_json(card)  # host names stay out of published cards
    assert card["changelog"] == HISTORY
    assert card["intended_use"] and card["out_of_scope_uses"] and card["limitations"]


def test_markdown_shows_each_metric_with_its_ci(card: dict[str, Any], good_report: dict[str, Any]) -> None:
    md = render_markdown(card)

    auroc = good_report["metrics"]["auroc"]
    assert f"| auroc | {auroc['value']:.3f} | {auroc['low']:.3f} to {auroc['high']:.3f} |" in md
    assert "| metric | value | 95% CI |" in md
    assert "### sex" in md and "Largest auroc gap" in md
    assert md.index("| auroc |") < md.index("| auprc |")  # primary metric first
    assert "| 1 | 2026-03-01T09:00:00+00:00 | champion | promote | gate | first model |" in md


def test_rendering_is_deterministic_and_free_of_phi(card: dict[str, Any], good_report: dict, tmp_path: Path) -> None:
    shuffled = build_model_card(
        name="shipa-diagnosis-pneumonia",
        version="2",
        text=diagnosis_card_text("pneumonia"),
        evaluation=dict(reversed(list(good_report.items()))),
        data_summary=dict(reversed(list(DATA_SUMMARY.items()))),
        lineage=dict(reversed(list(LINEAGE.items()))),
        history=HISTORY,
    )
    json_path, md_path = write_model_card(card, tmp_path)
    again = write_model_card(shuffled, tmp_path / "again")

    assert json_path.read_bytes() == again[0].read_bytes()
    assert md_path.read_bytes() == again[1].read_bytes()
    assert json.loads(json_path.read_text()) == card
    for text in (json_path.read_text(), md_path.read_text()):
        assert not [rx.pattern for rx in PHI_LIKE if rx.search(text)]


@pytest.mark.parametrize(
    "leak",
    [
        {"example_patient": "870412300415"},
        {"contact": "+7 701 123 45 67"},
        {"owner": "someone@example.kz"},
    ],
)
def test_phi_looking_inputs_are_refused_without_echoing_them(good_report: dict[str, Any], leak: dict) -> None:
    with pytest.raises(ModelCardError) as err:
        build_model_card(
            name="shipa-fraud",
            version="1",
            text=fraud_card_text(),
            evaluation=good_report,
            data_summary={**DATA_SUMMARY, **leak},
            lineage=LINEAGE,
        )

    ((key, value),) = leak.items()
    assert f"data_summary.{key}" in str(err.value)
    assert value not in str(err.value)


def test_card_is_logged_beside_the_versions_records(
    tracking_uri: str, card: dict[str, Any], input_example: Any, tmp_path: Path
) -> None:
    with stage_run(
        "train@diagnosis",
        tracking_uri=tracking_uri,
        experiment="shipa",
        params={},
        tags={},
        pipeline_run_id=None,
    ) as run:
        logged = run.log_pyfunc_model(DoublingModel(), input_example=input_example)
    version = register_version(
        logged.model_uri, "shipa-diagnosis-pneumonia", tracking_uri=tracking_uri, run_id=logged.run_id
    )

    folder = log_model_card("shipa-diagnosis-pneumonia", version, card, tracking_uri=tracking_uri)

    client = MlflowClient(tracking_uri)
    local = Path(client.download_artifacts(logged.run_id, folder, str(tmp_path)))
    assert json.loads((local / "model_card.json").read_text()) == card
    assert (local / "model_card.md").read_text() == render_markdown(card)

"""Promotion in a real registry: refuse a worse model, promote a better one, record a named override."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.tracking.errors import GateError
from pipelines.tracking.gate import GateThresholds
from pipelines.tracking.promotion import gate_version, override, version_evaluation
from pipelines.tracking.registry import champion_version, get_version, register_version
from pipelines.tracking.runs import stage_run

from .helpers import DIAGNOSIS_METADATA, DoublingModel

NAME = "shipa-diagnosis-pneumonia"
RULES = GateThresholds(min_primary_low=0.65, max_ece=0.2, max_subgroup_gap=0.1, champion_tolerance=0.01)
AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _new_version(tracking_uri: str, example: pd.DataFrame) -> str:
    with stage_run(
        "train@diagnosis",
        tracking_uri=tracking_uri,
        experiment="shipa",
        params={},
        tags={},
        pipeline_run_id=None,
    ) as run:
        logged = run.log_pyfunc_model(DoublingModel(), input_example=example, metadata=DIAGNOSIS_METADATA)
    return register_version(logged.model_uri, NAME, tracking_uri=tracking_uri, run_id=logged.run_id)


def _gate_reports(tracking_uri: str, name: str, version: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The gate reports logged to a version's run; each JSON report has its Markdown twin."""
    run_id = get_version(name, version, tracking_uri=tracking_uri).run_id
    client = MlflowClient(tracking_uri)
    paths = {a.path for a in client.list_artifacts(run_id, f"registry/{name}/v{version}")}
    reports = sorted(p for p in paths if "/gate-" in p and p.endswith(".json"))
    assert {p.replace(".json", ".md") for p in reports} <= paths
    return [json.loads(Path(client.download_artifacts(run_id, p, str(tmp_path))).read_text()) for p in reports]


def test_gate_promotes_first_refuses_worse_promotes_better(
    tracking_uri: str,
    input_example: pd.DataFrame,
    good_report: dict[str, Any],
    weak_report: dict[str, Any],
    strong_report: dict[str, Any],
    tmp_path: Path,
) -> None:
    v1 = _new_version(tracking_uri, input_example)
    assert gate_version(NAME, v1, good_report, RULES, tracking_uri=tracking_uri, now=AT).promote
    assert champion_version(NAME, tracking_uri=tracking_uri) == v1

    v2 = _new_version(tracking_uri, input_example)
    refused = gate_version(NAME, v2, weak_report, RULES, tracking_uri=tracking_uri, now=AT)
    assert not refused.promote
    assert champion_version(NAME, tracking_uri=tracking_uri) == v1
    info = get_version(NAME, v2, tracking_uri=tracking_uri)
    assert info.tags["shipa.gate.decision"] == "refuse"
    assert info.tags["shipa.gate.by"] == "gate"
    assert info.tags["shipa.gate.at"] == "2026-03-01T09:30:00+00:00"
    assert info.tags["shipa.gate.previous_champion"] == v1
    assert refused.failures[0] in info.tags["shipa.gate.reasons"]
    assert refused.failures[0] in info.description
    assert "refused (champion unchanged)" in info.description
    assert info.aliases == ("challenger",)
    (report,) = _gate_reports(tracking_uri, NAME, v2, tmp_path)
    assert report["decision"] == "refuse" and report["champion_after"] == v1 and report["reasons"] == refused.reasons

    v3 = _new_version(tracking_uri, input_example)
    assert gate_version(NAME, v3, strong_report, RULES, tracking_uri=tracking_uri, now=AT).promote
    assert champion_version(NAME, tracking_uri=tracking_uri) == v3
    promoted = get_version(NAME, v3, tracking_uri=tracking_uri)
    assert promoted.tags["shipa.gate.decision"] == "promote"
    assert "pass: auroc" in promoted.tags["shipa.gate.reasons"]
    assert promoted.tags["shipa.test_data_md5"] == strong_report["test_data_md5"]
    auroc = strong_report["metrics"]["auroc"]
    expected = f"auroc: {auroc['value']:.4f} [{auroc['low']:.4f}, {auroc['high']:.4f}]"
    assert expected in promoted.tags["shipa.metrics"].splitlines()
    assert version_evaluation(NAME, v3, tracking_uri=tracking_uri) == strong_report


def test_override_is_recorded_with_the_persons_name(
    tracking_uri: str,
    input_example: pd.DataFrame,
    good_report: dict[str, Any],
    weak_report: dict[str, Any],
    tmp_path: Path,
) -> None:
    v1 = _new_version(tracking_uri, input_example)
    gate_version(NAME, v1, good_report, RULES, tracking_uri=tracking_uri)
    v2 = _new_version(tracking_uri, input_example)
    assert not gate_version(NAME, v2, weak_report, RULES, tracking_uri=tracking_uri).promote

    report = override(
        NAME,
        v2,
        tracking_uri=tracking_uri,
        person="Dr. A. Seitkali",
        reason="v1 fails on the new scanner",
        now=AT,
    )

    assert champion_version(NAME, tracking_uri=tracking_uri) == v2
    info = get_version(NAME, v2, tracking_uri=tracking_uri)
    assert info.tags["shipa.gate.decision"] == "override"
    assert info.tags["shipa.gate.by"] == "Dr. A. Seitkali"
    assert info.tags["shipa.gate.override_reason"] == "v1 fails on the new scanner"
    assert "made champion by override" in info.description and "Dr. A. Seitkali" in info.description
    assert "refused (champion unchanged)" in info.description  # the earlier gate record is kept
    assert report["champion_before"] == v1 and report["champion_after"] == v2
    decisions = sorted(r["decision"] for r in _gate_reports(tracking_uri, NAME, v2, tmp_path))
    assert decisions == ["override", "refuse"]


def test_override_needs_a_person_and_a_reason(tracking_uri: str, input_example: pd.DataFrame) -> None:
    v1 = _new_version(tracking_uri, input_example)
    with pytest.raises(GateError, match="name of the person"):
        override(NAME, v1, tracking_uri=tracking_uri, person="  ", reason="urgent")
    with pytest.raises(GateError, match="needs a reason"):
        override(NAME, v1, tracking_uri=tracking_uri, person="Dr. A. Seitkali", reason="")
    assert champion_version(NAME, tracking_uri=tracking_uri) is None

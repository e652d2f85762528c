"""Usage of a version from a real audit log: counts per day, role, alias, outcome, and the scores it returned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.audit.usage import extract_scores, outcome_name, read_usage, summarize, version_records
from pipelines.predictionlog.log import AuditOutcome, PredictionLog, PredictionRecord, sha256_hex


def _record(i: int, **overrides: object) -> PredictionRecord:
    values: dict[str, object] = {
        "token_name": "t1",
        "role": "clinician",
        "endpoint": "/diagnosis",
        "model_name": "shipa-diagnosis-pneumonia",
        "model_version": "2",
        "model_alias": "champion",
        "input_sha256": sha256_hex(str(i).encode()),
        "output": {"probability": 0.1 * (i % 10)},
        "latency_ms": 5.0,
        "recorded": datetime(2025, 1, 1, 23, 0, tzinfo=UTC) + timedelta(hours=i),
    }
    values.update(overrides)
    return PredictionRecord(**values)  # type: ignore[arg-type]


def test_extract_scores_takes_numbers_under_score_keys_only() -> None:
    assert extract_scores({"probability": 0.7, "label": 1}) == [0.7]
    assert extract_scores({"scores": [0.1, 0.2]}) == [0.1, 0.2]
    fraud = {"scores": [{"claim": "c1", "score": 0.2, "amount": 5000}, {"claim": "c2", "score": 0.9}]}
    assert extract_scores(fraud) == [0.2, 0.9]
    fhir_like = {"prediction": [{"probabilityDecimal": 0.35, "outcome": {"text": "pneumonia"}}], "n": 3}
    assert extract_scores(fhir_like) == [0.35]
    assert extract_scores({"probability": True, "score": None, "count": 4}) == []
    # The shapes the service's routes record (pipelines/service/routes/diagnosis.py and fraud.py).
    diagnosis = {"task": "pneumonia", "probability": 0.81, "positive": True, "threshold": 0.4, "missing_ehr": 2}
    assert extract_scores(diagnosis) == [0.81]
    compact = {"claims": 2, "format": "json", "scores": {"c1": [0.2, "high", ["R1", 7]], "c2": [0.05, "low", []]}}
    assert extract_scores(compact) == [0.2, 0.05]
    truncated = {"claims": 900, "scores_sha256": "ab" * 32, "bands": {"low": 800}, "top": {"c1": [0.99, "high", []]}}
    assert extract_scores(truncated) == []


def test_outcome_names() -> None:
    assert outcome_name("0") == "success"
    assert outcome_name("8") == "serious_failure"
    assert outcome_name("99") == "99"


def test_summarize_counts_and_keeps_scores_of_successes_only() -> None:
    log = PredictionLog("sqlite://")
    for i in range(4):
        log.append(_record(i))
    log.append(_record(4, role="admin", model_alias="challenger"))
    log.append(_record(5, outcome=AuditOutcome.serious_failure, output={"error": "x"}))
    log.append(_record(6, model_version="1"))
    log.append(_record(7, model_name="shipa-fraud", output={"scores": [0.5]}))

    records = version_records(log, "shipa-diagnosis-pneumonia", "2")
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    usage = summarize(records)
    assert usage.total == 6
    assert usage.per_day == {"2025-01-01": 1, "2025-01-02": 5}
    assert usage.per_role == {"clinician": 5, "admin": 1}
    assert usage.per_alias == {"champion": 5, "challenger": 1}
    assert usage.per_outcome == {"success": 5, "serious_failure": 1}
    assert usage.per_endpoint == {"/diagnosis": 6}
    assert list(usage.scores_by_day) == ["2025-01-01", "2025-01-02"]
    assert usage.scores_by_day["2025-01-02"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert usage.n_scores == 5
    assert usage.first.startswith("2025-01-01T23:00") and usage.last.startswith("2025-01-02T04:00")
    assert read_usage(log, "shipa-diagnosis-pneumonia", "9").total == 0

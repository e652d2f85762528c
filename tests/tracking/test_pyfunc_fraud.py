"""The fraud pyfunc: claim feature records in, the library's scores and reason codes out, through MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.exceptions import MlflowException

from pipelines.errors import InputError
from pipelines.fraud.reason_texts import REASON_CODES
from pipelines.fraud.rules import evaluate_rules
from pipelines.fraud.worklist import RiskBands
from pipelines.modeling.fraud_attribution import explain
from pipelines.modeling.fraud_model import save_fraud_model, score
from pipelines.tracking.client import tracking_uri_scope
from pipelines.tracking.pyfunc_fraud import (
    ARTIFACT_BANDS,
    FraudPyfunc,
    input_example,
    load_scorer,
    read_risk_bands,
    score_claims,
    score_records,
    signature,
    write_risk_bands,
)
from pipelines.tracking.runs import stage_run

FRAUD_NON_INPUTS = ("claim_id", "provider_id", "patient_id", "created", "label", "split")


@pytest.fixture(scope="module")
def fraud_model(tiny_fraud: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny cohort's claim records and a small fraud model trained on them, saved to a folder."""
    root = tmp_path_factory.mktemp("pyfunc-fraud")
    df, model = tiny_fraud["records"], tiny_fraud["model"]
    save_fraud_model(model, root / "model")
    schema = {k: v for k, v in df.schema.items() if k not in FRAUD_NON_INPUTS}
    return {"dir": root / "model", "records": df.filter(pl.col("split") == "test"), "schema": schema}


def test_scores_and_reasons_are_the_librarys(fraud_model: dict[str, Any]) -> None:
    model = load_scorer(fraud_model["dir"])
    records: pl.DataFrame = fraud_model["records"]
    out = score_claims(model, records.to_pandas())
    assert list(out.columns) == ["probability", "band", "rule_hits", "reason_codes", "reasons"]
    assert out["band"].tolist() == RiskBands().bands(out["probability"])
    assert out["rule_hits"].tolist() == [[h.code for h in claim] for claim in evaluate_rules(records)]
    # Another code path (pandas in, MLflow wrapper) over a float32 network: equal within float32 rounding.
    np.testing.assert_allclose(out["probability"], score(model, records), rtol=1e-5, atol=1e-6)
    expected = explain(model, records, top_n=3)
    assert out["reason_codes"].tolist() == [[r.code for r in claim] for claim in expected]
    assert any(out["reason_codes"].map(len) > 0)
    for codes, text in zip(out["reason_codes"], out["reasons"], strict=True):
        reasons = json.loads(text)
        assert [r["code"] for r in reasons] == codes
        assert all(r["code"] in REASON_CODES.values() and r["kk"] and r["ru"] and r["en"] for r in reasons)
    with pytest.raises(InputError, match=r"missing feature column.*dup_min_days"):
        score_claims(model, records.drop("dup_min_days").to_pandas())


def test_rule_hits_sit_beside_an_unchanged_probability(fraud_model: dict[str, Any]) -> None:
    model = load_scorer(fraud_model["dir"])
    records: pl.DataFrame = fraud_model["records"].head(3)
    dead = records.with_columns(pl.lit(12.0).alias("days_after_death"), pl.lit(1.0).alias("after_death"))
    scored = score_records(model, dead)
    assert [[h.code for h in claim] for claim in scored.rule_hits] == [["SERVICE_AFTER_DEATH"]] * 3
    assert scored.rule_hits[0][0].en.startswith("Service dated 12 days after the recorded death")
    np.testing.assert_array_equal(scored.probabilities, score(model, dead))  # the model's own, no rule folded in
    plain = score_records(model, records.with_columns(pl.lit(0.0).alias("days_after_death")))
    assert all("SERVICE_AFTER_DEATH" not in [h.code for h in claim] for claim in plain.rule_hits)


def test_risk_bands_artifact(tmp_path: Path) -> None:
    path = write_risk_bands(RiskBands(moderate=0.2, high=0.7), tmp_path / "bands.json")
    assert json.loads(path.read_text()) == {"moderate": 0.2, "high": 0.7}
    assert read_risk_bands(path) == RiskBands(moderate=0.2, high=0.7)
    assert read_risk_bands(None) == RiskBands(moderate=0.1, high=0.5)  # a version logged without bands
    (tmp_path / "bad.json").write_text('{"moderate": 0.9, "high": 0.5}')
    with pytest.raises(InputError, match="not valid risk bands"):
        read_risk_bands(tmp_path / "bad.json")


def test_logged_pyfunc_round_trip(fraud_model: dict[str, Any], tracking_uri: str, tmp_path: Path) -> None:
    model = load_scorer(fraud_model["dir"])
    schema = fraud_model["schema"]
    example = input_example(model, schema)
    assert example.loc[0, "total"] == pytest.approx(model.reference["total"])  # a typical claim, not a real one
    assert example.loc[0, "main_tariff"] in model.encoder.vocab["main_tariff"]
    sig = signature(schema, model.feature_names)
    assert [c.name for c in sig.inputs.inputs if c.required] == [c for c in schema if c in model.feature_names]
    assert "service_start" in sig.inputs.input_names()  # context for the sentences: optional
    with stage_run(
        "register@fraud", tracking_uri=tracking_uri, experiment="shipa", params={}, tags={}, pipeline_run_id=None
    ) as run:
        bands = write_risk_bands(RiskBands(moderate=0.001, high=0.002), tmp_path / "risk_bands.json")
        ref = run.log_pyfunc_model(
            FraudPyfunc(),
            artifacts={"model": fraud_model["dir"], ARTIFACT_BANDS: bands},
            input_example=example,
            signature=sig,
        )
    with tracking_uri_scope(tracking_uri):
        loaded = mlflow.pyfunc.load_model(ref.model_uri)
    records = fraud_model["records"].drop(*FRAUD_NON_INPUTS).to_pandas()
    out = loaded.predict(records)
    np.testing.assert_allclose(out["probability"], score(model, fraud_model["records"]), rtol=1e-5, atol=1e-6)
    assert out["band"].tolist() == RiskBands(moderate=0.001, high=0.002).bands(out["probability"])  # logged bands
    assert out["rule_hits"].map(list).tolist() == [
        [h.code for h in claim] for claim in evaluate_rules(fraud_model["records"])
    ]
    assert [c.name for c in sig.outputs.inputs] == ["probability", "band", "rule_hits", "reason_codes", "reasons"]
    assert max(loaded.predict(records, params={"top_n": 1})["reason_codes"].map(len)) == 1
    bare = loaded.predict(records[model.feature_names])  # without the context columns: same scores
    np.testing.assert_allclose(bare["probability"], out["probability"], atol=1e-9)
    with pytest.raises(MlflowException, match="total"):
        loaded.predict(records.drop(columns="total"))
    assert loaded.unwrap_python_model().scorer.feature_names == model.feature_names

"""Stage ``register@fraud``: register the fraud model ``evaluate`` reported, behind the promotion gate."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import FraudRegisterParams
from pipelines.errors import InputError
from pipelines.fraud.rules import RULE_CODES
from pipelines.fraud.worklist import RiskBands
from pipelines.stages.register import Candidate, estimate, read_json, register_candidate
from pipelines.tracking import pyfunc_fraud as wrapper
from pipelines.tracking.card_text import fraud_card_text
from pipelines.tracking.registry import FRAUD_MODEL_NAME

# Columns of the fraud records that are neither model inputs nor reason context.
FRAUD_NON_INPUTS = ("claim_id", "provider_id", "patient_id", "created", "label", "split")


def run(
    params: FraudRegisterParams,
    processed: Path,
    model_root: Path,
    *,
    feature_options: Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Register the fraud model that ``evaluate`` reported in ``metrics.json`` (never a baseline by default).

    Args:
        params: the ``register.fraud`` section (gate, and the risk bands the service shows).
        processed: ``data/processed/fraud`` (``dataset.parquet`` gives the input schema, ``summary.json`` the
            training-data summary).
        model_root: ``models/fraud`` (``train/<name>/``, ``metrics.json``; outputs go here too).
        feature_options: the claim feature options (the ``features.fraud`` section without ``split``), stored
            in the model's metadata so that serving builds features for new claims the same way; None records none.
        tracking_uri: the MLflow store; None: ``MLFLOW_TRACKING_URI``, else ``<cwd>/mlflow.db``.
    """
    metrics = read_json(model_root / "metrics.json", "shipa evaluate fraud")
    summary = read_json(processed / "summary.json", "shipa features fraud")
    dataset = processed / "dataset.parquet"
    if not dataset.exists():
        raise InputError(f"{dataset}: not found (run `shipa features fraud` first)")
    model_dir = model_root / "train" / str(metrics.get("model", "model"))
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: not found (run `shipa train fraud` first)")
    scorer = wrapper.load_scorer(model_dir)
    schema = {k: v for k, v in pl.read_parquet_schema(dataset).items() if k not in FRAUD_NON_INPUTS}
    k = metrics.get("k")

    # One set of cut-offs: the bands the pyfunc's ``band`` output uses (artifact) are the ones the metadata
    # records for the service and the model card, both from ``register.fraud.risk_bands``.
    bands = RiskBands(moderate=params.risk_bands.moderate, high=params.risk_bands.high)

    def build(scratch: Path) -> Candidate:
        bands_file = wrapper.write_risk_bands(bands, scratch / "risk_bands.json")
        return Candidate(
            name=FRAUD_MODEL_NAME,
            python_model=wrapper.FraudPyfunc(),
            artifacts={wrapper.ARTIFACT_MODEL: str(model_dir), wrapper.ARTIFACT_BANDS: str(bands_file)},
            input_example=wrapper.input_example(scorer, schema),
            signature=wrapper.signature(schema, scorer.feature_names),
            requirements=wrapper.REQUIREMENTS,
            metadata={
                "kind": getattr(scorer, "kind", "?"),
                "k": k,
                "truth": metrics.get("truth"),
                "risk_bands": bands.as_dict(),
                "rules": list(RULE_CODES),
                **({"feature_options": dict(feature_options)} if feature_options is not None else {}),
            },
            metrics=metrics,
            text=fraud_card_text(),
            summary=summary,
            description=(
                f"{FRAUD_MODEL_NAME}: {getattr(scorer, 'kind', '?')} model; "
                f"{estimate(metrics, 'auprc', 'test PR-AUC')}, "
                f"{estimate(metrics, f'precision_at_{k}', f'precision@{k}')} on test data "
                f"{metrics.get('test_data_md5', '?')}"
            ),
        )

    return register_candidate("register@fraud", params, params.gate, build, model_root, tracking_uri=tracking_uri)

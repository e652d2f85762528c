"""Stage ``train@fraud``: the fraud model and its two baselines, trained on the Fund's audit labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from pipelines.config import FraudTrainParams
from pipelines.errors import InputError
from pipelines.features.fraud import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from pipelines.io import atomic_dir, write_json
from pipelines.modeling.engine import resolve_device
from pipelines.modeling.fraud_baselines import GbmBaseline, GbmConfig, RulesBaseline
from pipelines.modeling.fraud_model import FraudModelConfig, FraudScorer, save_fraud_model, train_fraud_model
from pipelines.modeling.fraud_store import FRAUD_SCORERS
from pipelines.stages.tracked import tracked_stage


def run(params: FraudTrainParams, processed: Path, out_dir: Path, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """Train the fraud model and both baselines (rules, gradient-boosted trees) on the audit labels.

    Writes ``out_dir/{model,gbm,rules}/`` (each loadable with ``load_fraud_model``). ``tracking_uri``: the MLflow
    store (None: ``MLFLOW_TRACKING_URI``, else ``<cwd>/mlflow.db``).
    """
    dataset = processed / "dataset.parquet"
    if not dataset.exists():
        raise InputError(f"{dataset}: not found (run `shipa features fraud` first)")
    df = pl.read_parquet(dataset)
    tr, va = df.filter(pl.col("split") == "train"), df.filter(pl.col("split") == "val")
    if tr.height == 0 or int(tr["label"].sum()) == 0:
        raise InputError(f"{dataset}: the training split has no audit-labelled fraud to learn from")
    device = str(resolve_device(params.device))
    config = FraudModelConfig.from_mapping(params.model_dump(exclude={"seed", "device", "gbm"}))
    summary: dict[str, Any] = {"train_claims": tr.height, "train_labelled": int(tr["label"].sum()), "device": device}
    with (
        tracked_stage("train@fraud", params, device=device, tracking_uri=tracking_uri) as run,
        atomic_dir(out_dir) as tmp,
    ):
        y_tr, y_va = tr["label"].to_numpy(), va["label"].to_numpy()
        model = train_fraud_model(
            tr, y_tr, va, y_va, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES,
            config=config, seed=params.seed, device=device,
        )  # fmt: skip
        gbm = GbmBaseline.fit(
            tr, y_tr, numeric=NUMERIC_FEATURES, categorical=CATEGORICAL_FEATURES,
            config=GbmConfig(**params.gbm.model_dump()), seed=params.seed,
        )  # fmt: skip
        rules = RulesBaseline.fit(tr)
        scorers: tuple[FraudScorer, ...] = (model, gbm, rules)
        for name, fitted in zip(FRAUD_SCORERS, scorers, strict=True):
            save_fraud_model(fitted, tmp / name)
        summary["model"] = getattr(model, "info", {})
        write_json(tmp / "train_summary.json", summary)
        run.log_dict(summary, "train_summary.json")
    return summary

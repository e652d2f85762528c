"""Builders of the audit tests: a registered version in a real MLflow store with the lineage a pipeline leaves
(train, evaluate and register stage runs of one pipeline run), a matching workspace (dvc.lock, ingest report,
evaluation predictions) and a real hash-chained audit log."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from mlflow import MlflowClient
from mlflow.pyfunc import PythonModel

from pipelines.evaluation.metrics_report import evaluate_binary
from pipelines.imaging.domain import InputDomain
from pipelines.predictionlog.log import PredictionLog, PredictionRecord, sha256_hex
from pipelines.service.settings import default_checkpoints
from pipelines.tracking.card_text import diagnosis_card_text
from pipelines.tracking.gate import GateThresholds
from pipelines.tracking.model_card import build_model_card
from pipelines.tracking.promotion import gate_version, log_model_card
from pipelines.tracking.registry import register_version, version_history
from pipelines.tracking.runs import stage_run

NAME = "shipa-diagnosis-pneumonia"
PIPELINE_ID = "0123456789ab-feedfacecafe"
COMMIT = "3f786850e387550fdab836ed7e6dc881de23001b"
TABLES_MD5 = "96df12aa9a71b24c5be09b8d177568a6.dir"
IMAGES_MD5 = "9b55f47dbf6a87e391bd7a3143d88c35.dir"
QUARANTINE_MD5 = "a005a30bbe628957b3bde44a82474279.dir"
RAW_MD5 = "34b9fce0e1c88a88f21b4b1398cd69e9.dir"
PROCESSED_MD5 = "7215ee9c7d9dc229d2921a40e899ec5f.dir"
TRAIN_MD5 = "5d41402abc4b2a76b9719d911017c592.dir"
EVAL_MD5 = "0cc175b9c0f1b6a831c399e269772661.dir"
SUMMARY_MD5 = "92eb5ffee6ae2fec3ad71c777531578f"
N_TEST = 160
EPOCHS = 5
INGEST_REPORT = {
    "quarantined_total": 7,
    "fhir": {"by_resource_type": {"Patient": {"read": 100, "accepted": 98, "quarantined": 2}}},
    "dicom": {"files": 40, "images": 38, "quarantined": 2},
}


class ConstantModel(PythonModel):
    """A trivial pyfunc (the report never loads it)."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return model_input[["x"]] * 0.0 + 0.5


@dataclass(frozen=True)
class Registered:
    """The built project: its root, store, the registered version and what its lineage says."""

    root: Path
    tracking_uri: str
    name: str
    version: str
    run_id: str
    train_run_id: str
    evaluation: dict[str, Any]
    test_scores: np.ndarray


def make_store(folder: Path) -> str:
    """A migrated, empty sqlite MLflow store in ``folder`` (made from ``folder``, so no ./mlruns lands elsewhere)."""
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with contextlib.chdir(folder):
        MlflowClient(uri).search_experiments()
    return uri


def fingerprint(ids: list[str], labels: list[int]) -> str:
    """The evaluate stage's test-data md5, recomputed independently."""
    digest = hashlib.md5(usedforsecurity=False)
    for i, y in sorted(zip(ids, labels, strict=True)):
        digest.update(f"{i}\t{y}\n".encode())
    return digest.hexdigest()


def dvc_lock(report_md5: str, tables_md5: str = TABLES_MD5) -> str:
    """A dvc.lock of ingest -> features -> train -> evaluate for the diagnosis model."""

    def entries(pairs: list[tuple[str, str]]) -> str:
        return "".join(f"    - path: {p}\n      hash: md5\n      md5: {m}\n" for p, m in pairs)

    stages = {
        "ingest": (
            [("data/raw", RAW_MD5), ("pipelines/fhir", "08cc1ac76e01d594513936e08cd76b3c.dir")],
            [
                ("data/interim/images", IMAGES_MD5),
                ("data/interim/ingest_report.json", report_md5),
                ("data/interim/quarantine", QUARANTINE_MD5),
                ("data/interim/tables", tables_md5),
            ],
        ),
        "features@diagnosis": (
            [("data/interim/images", IMAGES_MD5), ("data/interim/tables", tables_md5)],
            [("data/processed/diagnosis", PROCESSED_MD5)],
        ),
        "train@diagnosis": (
            [("data/interim/images", IMAGES_MD5), ("data/processed/diagnosis", PROCESSED_MD5)],
            [("models/diagnosis/train", TRAIN_MD5)],
        ),
        "evaluate@diagnosis": (
            [
                ("data/interim/tables", tables_md5),
                ("data/processed/diagnosis", PROCESSED_MD5),
                ("models/diagnosis/train", TRAIN_MD5),
            ],
            [("models/diagnosis/eval", EVAL_MD5)],
        ),
    }
    text = "schema: '2.0'\nstages:\n"
    for name, (deps, outs) in stages.items():
        text += f"  {name}:\n    cmd: shipa {name}\n    deps:\n{entries(deps)}    outs:\n{entries(outs)}"
    return text


def write_workspace(root: Path) -> tuple[dict[str, Any], np.ndarray]:
    """The ingest report, evaluation predictions and dvc.lock; returns the evaluation report and test scores."""
    report_path = root / "data" / "interim" / "ingest_report.json"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(INGEST_REPORT, indent=2), encoding="utf-8")
    report_md5 = hashlib.md5(report_path.read_bytes(), usedforsecurity=False).hexdigest()
    (root / "dvc.lock").write_text(dvc_lock(report_md5), encoding="utf-8")

    rng = np.random.default_rng(0)
    y = (rng.random(N_TEST) < 0.4).astype(int)
    p = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + rng.normal(0, 1, N_TEST))))
    ids = [f"study{i:04d}" for i in range(N_TEST)]
    sex = np.where(rng.random(N_TEST) < 0.5, "female", "male")
    region = np.where(rng.random(N_TEST) < 0.5, "Astana", "Almaty")
    report = evaluate_binary(
        y, p, threshold=0.5, subgroups={"sex": sex, "region": region}, n_boot=30, seed=0, min_group_size=20
    )
    report["test_data_md5"] = fingerprint(ids, y.tolist())
    report["model"] = "fused"
    eval_dir = root / "models" / "diagnosis" / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"study_id": ids, "label": y.astype(np.int8), "sex": sex, "region": region, "probability_fused": p}
    ).write_parquet(eval_dir / "predictions.parquet")
    return report, p


def lineage_tags(data: dict[str, str]) -> dict[str, str]:
    """The tags ``collect_lineage`` writes, with fixed values."""
    tags = {
        "shipa.git_commit": COMMIT,
        "shipa.git_dirty": "false",
        "shipa.params_sha256": "ab" * 32,
        "shipa.data_source": "dvc",
        "shipa.host": "audit-test-host",
        "shipa.device": "cpu",
        "shipa.version.python": "3.11",
        "shipa.version.mlflow": "3",
    }
    tags.update({f"shipa.data.{k}": v for k, v in data.items()})
    return tags


def build_registered(root: Path) -> Registered:
    """A registered, gated, documented version with its pipeline's train and evaluate runs."""
    root.mkdir(parents=True, exist_ok=True)
    uri = make_store(root)
    evaluation, scores = write_workspace(root)
    common = {"tracking_uri": uri, "experiment": "shipa", "pipeline_run_id": PIPELINE_ID}
    train_tags = lineage_tags({"data/processed/diagnosis": PROCESSED_MD5, "data/interim/images": IMAGES_MD5})
    with stage_run("train@diagnosis", params={"epochs": EPOCHS, "lr": 0.002}, tags=train_tags, **common) as run:
        for epoch in range(1, EPOCHS + 1):
            metrics = {"train_loss": 1.0 / epoch, "val_loss": 1.2 / epoch, "val_auroc": 0.6 + 0.05 * epoch}
            run.log_metrics({"fused": metrics}, step=epoch)
        train_run_id = run.run_id
    eval_tags = lineage_tags({"data/interim/tables": TABLES_MD5, "models/diagnosis/train": TRAIN_MD5})
    with stage_run("evaluate@diagnosis", params={"n_boot": 30}, tags=eval_tags, **common) as run:
        run.log_evaluation(evaluation, prefix="test.fused")
    reg_tags = lineage_tags(
        {
            "models/diagnosis/eval": EVAL_MD5,
            "models/diagnosis/train": TRAIN_MD5,
            "data/processed/diagnosis/summary.json": SUMMARY_MD5,
        }
    )
    with stage_run("register@diagnosis", params={"gate.min_primary_low": 0.5}, tags=reg_tags, **common) as run:
        ref = run.log_pyfunc_model(
            ConstantModel(),
            input_example=pd.DataFrame({"x": [0.1, 0.2]}),
            pip_requirements=["mlflow"],
            # A diagnosis version needs a recorded input domain and an image OOD score to pass the gate.
            metadata={
                "input_domain": InputDomain(modalities=("CR", "DX"), body_parts=("CHEST",)).to_dict(),
                "image_ood": {"threshold": 500.0, "test": {"n": 40, "refused": 0}},
            },
        )
        run_tags = {k: v for k, v in reg_tags.items()}
        run_tags["shipa.pipeline_run_id"] = PIPELINE_ID
        version = register_version(ref.model_uri, NAME, tracking_uri=uri, run_id=ref.run_id, tags=run_tags)
        gate_version(NAME, version, evaluation, GateThresholds(min_primary_low=0.5), tracking_uri=uri)
        card = build_model_card(
            name=NAME,
            version=version,
            text=diagnosis_card_text("pneumonia"),
            evaluation=evaluation,
            data_summary={"studies": 800, "patients": 700},
            lineage=run_tags,
            history=version_history(NAME, tracking_uri=uri),
        )
        log_model_card(NAME, version, card, tracking_uri=uri)
        run_id = run.run_id
    return Registered(root, uri, NAME, version, run_id, train_run_id, evaluation, scores)


def fill_audit_log(url: str, version: str, baseline: np.ndarray, *, days: int = 2, per_day: int = 40) -> PredictionLog:
    """An audit log with ``per_day`` diagnosis predictions a day: drawn from the test-set scores ``baseline``,
    except on the last day, whose outputs are all high (a shift).

    Written under the public demo audit key (what ``shipa audit report``/``trace`` fall back to when no key is set)
    and checkpointed where the service and the commands look by default: beside the database."""
    log = PredictionLog(url, checkpoints=default_checkpoints(url, Path(".")))
    rng = np.random.default_rng(1)
    start = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    for day in range(days):
        for i in range(per_day):
            shifted = day == days - 1
            p = float(rng.uniform(0.9, 1.0) if shifted else rng.choice(baseline))
            log.append(
                PredictionRecord(
                    token_name="dr-token-1" if i % 3 else "admin-1",
                    role="clinician" if i % 3 else "admin",
                    endpoint="/diagnosis",
                    model_name=NAME,
                    model_version=version,
                    model_alias="champion" if i % 4 else "challenger",
                    input_sha256=sha256_hex(f"{day}-{i}".encode()),
                    output={"probability": p, "label": int(p >= 0.5)},
                    latency_ms=12.5,
                    patient_pseudonym=f"pat{day}{i:03d}",
                    recorded=start + timedelta(days=day, minutes=i),
                )
            )
    log.append(
        PredictionRecord(
            token_name="inv-1",
            role="investigator",
            endpoint="/fraud/score",
            model_name="shipa-fraud",
            model_version="1",
            model_alias="champion",
            input_sha256=sha256_hex(b"fraud"),
            output={"scores": [0.1, 0.2]},
            latency_ms=3.0,
            recorded=start,
        )
    )
    return log

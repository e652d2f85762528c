"""Stage ``register``: put an evaluated model in the MLflow registry behind the promotion gate.

``shipa register diagnosis`` (or ``fraud``) logs the model's pyfunc wrapper (``pipelines.tracking.pyfunc_*``)
into the stage's run, registers it as a new version of ``shipa-diagnosis-<task>`` / ``shipa-fraud`` (alias
``challenger``, tagged with the run's lineage: git commit, DVC data hashes, params hash), attaches the
evaluation from ``metrics.json``, runs the gate with the thresholds of ``register.<model>.gate`` (which moves
``champion`` only when every check passes), logs the model card, and writes ``models/<model>/registered.json``
and ``models/<model>/model_card.{json,md}``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipelines.config import DiagnosisRegisterParams, FraudRegisterParams, GateParams, RegisterParams
from pipelines.errors import InputError
from pipelines.io import write_json
from pipelines.stages.tracked import tracked_stage
from pipelines.tracking import tags as names
from pipelines.tracking.card_text import CardText, diagnosis_card_text, fraud_card_text
from pipelines.tracking.client import connect
from pipelines.tracking.gate import GateThresholds
from pipelines.tracking.model_card import build_model_card, write_model_card
from pipelines.tracking.promotion import gate_version, log_model_card
from pipelines.tracking.pyfunc import pinned_requirements
from pipelines.tracking.registry import (
    FRAUD_MODEL_NAME,
    champion_version,
    diagnosis_model_name,
    get_version,
    register_version,
    version_history,
)
from pipelines.tracking.runs import StageRun

log = logging.getLogger(__name__)

MODELS = ("diagnosis", "fraud")
REGISTERED_FILE = "registered.json"
CARD_STEM = "model_card"
# Columns of the fraud records that are neither model inputs nor reason context.
FRAUD_NON_INPUTS = ("claim_id", "provider_id", "patient_id", "created", "label", "split")


@dataclass(frozen=True)
class Candidate:
    """Everything one model brings to registration (built inside the stage run, beside its scratch files).

    Attributes:
        name: registered model name.
        python_model: the pyfunc wrapper instance.
        artifacts: artifact name -> local path, copied into the logged model.
        input_example: one input row, saved with the model.
        signature: the wrapper's MLflow signature.
        requirements: distributions pinned as the model's pip requirements.
        metadata: free-form metadata for the MLmodel file.
        metrics: the evaluation report (``metrics.json``) with ``test_data_md5``.
        text: the model card's human-written parts.
        summary: aggregate description of the training data.
        description: the first line of the version's description.
    """

    name: str
    python_model: Any
    artifacts: dict[str, str]
    input_example: Any
    signature: Any
    requirements: tuple[str, ...]
    metrics: dict[str, Any]
    text: CardText
    summary: dict[str, Any]
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_json(path: Path, producer: str) -> dict[str, Any]:
    """A JSON file an earlier stage wrote.

    Raises:
        InputError: the file is missing (the message names the command that writes it).
    """
    if not path.exists():
        raise InputError(f"{path}: not found (run `{producer}` first)")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def thresholds_of(gate: GateParams) -> GateThresholds:
    """The library's gate thresholds from a ``register.<model>.gate`` params section."""
    return GateThresholds(**gate.model_dump())


def _lineage(run: StageRun) -> dict[str, str]:
    """The ``shipa.*`` tags that ``tracked_stage`` put on the run (git commit, data hashes, params hash ...)."""
    tags = connect(run.tracking_uri).get_run(run.run_id).data.tags
    return {k: v for k, v in sorted(tags.items()) if k.startswith(names.PREFIX) and k != names.RUN_KIND}


def ingest_image_size(dataset: Path) -> int | None:
    """The side of the ingest arrays the model was trained on (what serving resamples a new DICOM to first).

    Read from the first study's ``.npy`` header in ``dataset.parquet``; None when it cannot be read or the
    array is not square.
    """
    import numpy as np
    import polars as pl

    try:
        first = pl.read_parquet(dataset, columns=["image_path"], n_rows=1)["image_path"].to_list()
        shape: tuple[int, ...] = np.load(first[0], mmap_mode="r", allow_pickle=False).shape if first else ()
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        log.warning(
            "%s: ingest image size unknown (%s); the model's metadata leaves it out", dataset, type(exc).__name__
        )
        return None
    return int(shape[0]) if len(shape) == 2 and shape[0] == shape[1] else None


def _estimate(metrics: Mapping[str, Any], key: str, label: str) -> str:
    est = (metrics.get("metrics") or {}).get(key) or {}
    value, low, high = est.get("value"), est.get("low"), est.get("high")
    if value is None:
        return f"{label} n/a"
    return f"{label} {value:.3f} [{low:.3f}, {high:.3f}]" if None not in (low, high) else f"{label} {value:.3f}"


def run(
    model: str,
    params: RegisterParams,
    *,
    processed: Path,
    models: Path,
    feature_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register ``model`` (``diagnosis`` or ``fraud``) from ``processed/<model>`` and ``models/<model>``.

    Args:
        model: ``diagnosis`` or ``fraud``.
        params: the ``register`` section.
        processed: the features output root.
        models: the models root.
        feature_options: fraud only: the claim feature options the records were built with (the
            ``features.fraud`` section without ``split``), stored in the model's metadata so that serving
            builds features for new claims the same way.

    Returns:
        What ``models/<model>/registered.json`` holds.

    Raises:
        InputError: an unknown model, or an input the earlier stages should have written is missing.
    """
    if model == "diagnosis":
        return run_diagnosis(params.diagnosis, processed / model, models / model)
    if model == "fraud":
        return run_fraud(params.fraud, processed / model, models / model, feature_options=feature_options)
    raise InputError(f"register: unknown model '{model}' (known: {', '.join(MODELS)})")


def run_diagnosis(params: DiagnosisRegisterParams, processed: Path, model_root: Path) -> dict[str, Any]:
    """Register the diagnosis model that ``evaluate`` reported in ``metrics.json`` (the fused one by default).

    Args:
        params: the ``register.diagnosis`` section.
        processed: ``data/processed/diagnosis`` (its ``summary.json`` describes the training data).
        model_root: ``models/diagnosis`` (``train/``, ``eval/``, ``metrics.json``; outputs go here too).
    """
    from pipelines.features.diagnosis import Scaler
    from pipelines.tracking import pyfunc_diagnosis as wrapper

    train_dir = model_root / "train"
    metrics = read_json(model_root / "metrics.json", "shipa evaluate diagnosis")
    features_path, calibration_path = train_dir / "features.json", model_root / "eval" / "calibration.json"
    features = read_json(features_path, "shipa train diagnosis")
    summary = read_json(processed / "summary.json", "shipa features diagnosis")
    read_json(calibration_path, "shipa evaluate diagnosis")
    mode = str(metrics.get("model", "fused"))
    meta = read_json(train_dir / mode / "model.json", "shipa train diagnosis")
    task = str(features["task"])
    scaler = Scaler.from_dict(features["scaler"])
    name = diagnosis_model_name(task)
    ingest_size = ingest_image_size(processed / "dataset.parquet") if mode != "ehr" else None

    def build(scratch: Path) -> Candidate:
        return Candidate(
            name=name,
            python_model=wrapper.DiagnosisPyfunc(),
            artifacts=wrapper.artifact_files(train_dir / mode, features_path, calibration_path, scratch),
            input_example=wrapper.input_example(scaler),
            signature=wrapper.signature(scaler.features),
            requirements=wrapper.REQUIREMENTS,
            metadata={
                "task": task,
                "mode": mode,
                "network": meta.get("network"),
                "image_size": meta.get("image_size"),
                **({"ingest_image_size": ingest_size} if ingest_size else {}),
            },
            metrics=metrics,
            text=diagnosis_card_text(task),
            summary=summary,
            description=(
                f"{name}: {mode} model ({meta.get('network', '?')}, {meta.get('image_size', '?')} px); "
                f"{_estimate(metrics, 'auroc', 'test AUROC')} on test data {metrics.get('test_data_md5', '?')}"
            ),
        )

    return _register("register@diagnosis", params, params.gate, build, model_root)


def run_fraud(
    params: FraudRegisterParams,
    processed: Path,
    model_root: Path,
    *,
    feature_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register the fraud model that ``evaluate`` reported in ``metrics.json`` (never a baseline by default).

    Args:
        params: the ``register.fraud`` section (gate, and the risk bands the service shows).
        processed: ``data/processed/fraud`` (``dataset.parquet`` gives the input schema, ``summary.json`` the
            training-data summary).
        model_root: ``models/fraud`` (``train/<name>/``, ``metrics.json``; outputs go here too).
        feature_options: the claim feature options (see :func:`run`); None records none.
    """
    import polars as pl

    from pipelines.tracking import pyfunc_fraud as wrapper

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

    def build(scratch: Path) -> Candidate:
        return Candidate(
            name=FRAUD_MODEL_NAME,
            python_model=wrapper.FraudPyfunc(),
            artifacts={wrapper.ARTIFACT_MODEL: str(model_dir)},
            input_example=wrapper.input_example(scorer, schema),
            signature=wrapper.signature(schema, scorer.feature_names),
            requirements=wrapper.REQUIREMENTS,
            metadata={
                "kind": getattr(scorer, "kind", "?"),
                "k": k,
                "truth": metrics.get("truth"),
                "risk_bands": params.risk_bands.model_dump(),
                **({"feature_options": dict(feature_options)} if feature_options is not None else {}),
            },
            metrics=metrics,
            text=fraud_card_text(),
            summary=summary,
            description=(
                f"{FRAUD_MODEL_NAME}: {getattr(scorer, 'kind', '?')} model; "
                f"{_estimate(metrics, 'auprc', 'test PR-AUC')}, "
                f"{_estimate(metrics, f'precision_at_{k}', f'precision@{k}')} on test data "
                f"{metrics.get('test_data_md5', '?')}"
            ),
        )

    return _register("register@fraud", params, params.gate, build, model_root)


def _register(
    stage: str,
    params: BaseModel,
    gate: GateParams,
    build: Callable[[Path], Candidate],
    model_root: Path,
) -> dict[str, Any]:
    """Log, register, gate and document one model inside its stage run; write ``registered.json``."""
    thresholds = thresholds_of(gate)
    with tracked_stage(stage, params) as run, tempfile.TemporaryDirectory() as scratch:
        cand = build(Path(scratch))
        ref = run.log_pyfunc_model(
            cand.python_model,
            artifacts=cand.artifacts,
            input_example=cand.input_example,
            signature=cand.signature,
            pip_requirements=pinned_requirements(cand.requirements),
            metadata=cand.metadata,
        )
        lineage = _lineage(run)
        uri, name = run.tracking_uri, cand.name
        version = register_version(
            ref.model_uri,
            name,
            tracking_uri=uri,
            run_id=ref.run_id,
            tags=lineage,
            description=cand.description,
            model_id=ref.model_id,
        )

        def card() -> dict[str, Any]:
            return build_model_card(
                name=name,
                version=version,
                text=cand.text,
                evaluation=cand.metrics,
                data_summary=cand.summary,
                lineage=lineage,
                history=version_history(name, tracking_uri=uri),
                primary_metric=thresholds.primary_metric,
            )

        card()  # refuses personal data in the card's inputs before the gate can move champion
        decision = gate_version(name, version, cand.metrics, thresholds, tracking_uri=uri)
        final_card = card()  # now with this version's gate decision in the changelog
        log_model_card(name, version, final_card, tracking_uri=uri)
        write_model_card(final_card, model_root, CARD_STEM)
        record: dict[str, Any] = {
            "name": name,
            "version": version,
            "aliases": list(get_version(name, version, tracking_uri=uri).aliases),
            "model_uri": f"models:/{name}/{version}",
            "logged_model_uri": ref.model_uri,
            "run_id": ref.run_id,
            "champion": champion_version(name, tracking_uri=uri),
            "gate": {
                "decision": "promote" if decision.promote else "refuse",
                "reasons": decision.reasons,
                "thresholds": decision.thresholds,
            },
            "test_data_md5": cand.metrics.get("test_data_md5"),
            "git_commit": lineage.get(names.GIT_COMMIT),
        }
        run.log_dict(record, REGISTERED_FILE)
    write_json(model_root / REGISTERED_FILE, record)
    log.info(
        "%s version %s registered: gate %s (champion %s)",
        name,
        version,
        record["gate"]["decision"],
        record["champion"] or "none",
    )
    return record

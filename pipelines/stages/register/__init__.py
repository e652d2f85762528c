"""Stage ``register``: put an evaluated model in the MLflow registry behind the promotion gate.

One module per DVC ``foreach`` item (``diagnosis.py``, ``fraud.py``), each with a ``run`` function; this module
holds the registration they share.

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

from pipelines.config import GateParams
from pipelines.errors import InputError
from pipelines.io import write_json
from pipelines.stages.tracked import tracked_stage
from pipelines.tracking import tags as names
from pipelines.tracking.card_text import CardText
from pipelines.tracking.client import connect
from pipelines.tracking.gate import GateThresholds
from pipelines.tracking.model_card import build_model_card, write_model_card
from pipelines.tracking.promotion import gate_version, log_model_card
from pipelines.tracking.pyfunc import pinned_requirements
from pipelines.tracking.registry import champion_version, get_version, register_version, version_history
from pipelines.tracking.runs import StageRun

log = logging.getLogger(__name__)

REGISTERED_FILE = "registered.json"
CARD_STEM = "model_card"


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


def estimate(metrics: Mapping[str, Any], key: str, label: str) -> str:
    est = (metrics.get("metrics") or {}).get(key) or {}
    value, low, high = est.get("value"), est.get("low"), est.get("high")
    if value is None:
        return f"{label} n/a"
    return f"{label} {value:.3f} [{low:.3f}, {high:.3f}]" if None not in (low, high) else f"{label} {value:.3f}"


def register_candidate(
    stage: str,
    params: BaseModel,
    gate: GateParams,
    build: Callable[[Path], Candidate],
    model_root: Path,
    *,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Log, register, gate and document one model inside its stage run (in store ``tracking_uri``); write
    ``registered.json``."""
    thresholds = thresholds_of(gate)
    with tracked_stage(stage, params, tracking_uri=tracking_uri) as run, tempfile.TemporaryDirectory() as scratch:
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

"""Export released model versions from the registry into a bundle: the MLflow model, its card, its input domain.

Each version lands in ``models/<name>/v<version>/``: ``model/`` is the MLflow model folder exactly as the registry
serves it (``MLmodel``, ``artifacts/`` ...), ``model_card.json`` / ``model_card.md`` the card the register stage
logged (when there is one), and ``input_domain.json`` what a diagnosis version may be used on (its ``input_domain``
artifact, else its MLmodel metadata).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import yaml

from pipelines.release.errors import ReleaseError
from pipelines.tracking.client import tracking_uri_scope
from pipelines.tracking.errors import TrackingError
from pipelines.tracking.model_card import card_json, render_markdown
from pipelines.tracking.registry import is_diagnosis_model, parse_models_uri, resolve
from pipelines.tracking.serving import load_model_card

log = logging.getLogger(__name__)

MODEL_DIR = "model"
CARD_JSON = "model_card.json"
CARD_MD = "model_card.md"
INPUT_DOMAIN = "input_domain.json"
INPUT_DOMAIN_KEY = "input_domain"


def mlmodel(folder: Path) -> dict[str, Any]:
    """The ``MLmodel`` file of a model folder, parsed (an empty mapping when it is not a mapping)."""
    data = yaml.safe_load((Path(folder) / "MLmodel").read_text(encoding="utf-8"))
    return dict(data) if isinstance(data, Mapping) else {}


def recorded_input_domain(folder: Path) -> dict[str, Any] | None:
    """The input domain of a downloaded model: its ``input_domain`` pyfunc artifact, else its metadata, else None."""
    model = mlmodel(folder)
    flavor = (model.get("flavors") or {}).get("python_function") or {}
    entry = (flavor.get("artifacts") or {}).get(INPUT_DOMAIN_KEY)
    if isinstance(entry, Mapping) and entry.get("path"):
        data = json.loads((Path(folder) / str(entry["path"])).read_text(encoding="utf-8"))
        return dict(data) if isinstance(data, Mapping) else None
    recorded = (model.get("metadata") or {}).get(INPUT_DOMAIN_KEY)
    return dict(recorded) if isinstance(recorded, Mapping) else None


def export_version(uri: str, root: Path, *, tracking_uri: str) -> dict[str, Any]:
    """Download one version into ``root/models/<name>/v<version>/`` with its card and input domain.

    Args:
        uri: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.
        root: the bundle folder being built.
        tracking_uri: the publisher's MLflow store.

    Returns:
        The model's entry of ``release.json``: name, version, the URI and alias it was released from, the source
        run, description, tags, and the bundle paths of its folder, card and input domain.

    Raises:
        ReleaseError: the URI does not resolve, the download has no MLmodel, or a diagnosis version has no input
            domain (the service would refuse to serve it).
    """
    try:
        _name, _version, alias = parse_models_uri(uri)
        info = resolve(uri, tracking_uri=tracking_uri)
    except TrackingError as exc:
        raise ReleaseError(str(exc)) from None
    rel = Path("models") / info.name / f"v{info.version}"
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=False)
    with tempfile.TemporaryDirectory(dir=root) as scratch, tracking_uri_scope(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.uri, dst_path=scratch))
        if not (local / "MLmodel").is_file():
            raise ReleaseError(f"{info.uri}: the downloaded model has no MLmodel file")
        shutil.move(str(local), str(folder / MODEL_DIR))
    entry: dict[str, Any] = {
        "name": info.name,
        "version": info.version,
        "released_from": uri,
        "source_alias": alias,
        "source_run_id": info.run_id,
        "description": info.description,
        "tags": dict(sorted(info.tags.items())),
        "path": (rel / MODEL_DIR).as_posix(),
        "card": None,
        "input_domain": None,
    }
    card = load_model_card(info, tracking_uri=tracking_uri)
    if card is not None:
        (folder / CARD_JSON).write_text(card_json(card), encoding="utf-8")
        try:
            (folder / CARD_MD).write_text(render_markdown(card), encoding="utf-8")
        except (KeyError, TypeError, ValueError, AttributeError):
            log.warning("%s: the model card has no Markdown form (JSON only)", info.uri)
        entry["card"] = (rel / CARD_JSON).as_posix()
    domain = recorded_input_domain(folder / MODEL_DIR)
    if domain is not None:
        (folder / INPUT_DOMAIN).write_text(json.dumps(domain, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        entry["input_domain"] = (rel / INPUT_DOMAIN).as_posix()
    elif is_diagnosis_model(info.name):
        raise ReleaseError(f"{info.uri} has no recorded input domain: the service would refuse to serve it")
    log.info("exported %s version %s into %s", info.name, info.version, rel)
    return entry

"""Loading registered models for serving: the version an alias points to, downloaded once, loaded as a pyfunc.

The inference service calls :func:`load_version` at start-up and on reload; everything MLflow-specific stays
here. A version is downloaded to ``<cache_dir>/<name>/v<version>`` (reused when already complete), so a reload
that finds the same champion costs only the load, and two versions never share a folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from pipelines.tracking import tags as names
from pipelines.tracking.client import connect, tracking_uri_scope
from pipelines.tracking.errors import ModelVersionNotFoundError, TrackingError
from pipelines.tracking.promotion import artifact_dir
from pipelines.tracking.registry import VersionInfo, alias_version, get_version

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".shipa-complete"
MODEL_CARD_FILE = "model_card.json"


@dataclass(frozen=True)
class LoadedVersion:
    """A registered model version loaded for serving.

    Attributes:
        info: the registry entry (name, version, run, tags).
        alias: the alias it was loaded through (``champion``).
        local_dir: the downloaded MLflow model folder (``MLmodel``, ``artifacts/``).
        pyfunc: the loaded ``mlflow.pyfunc.PyFuncModel``.
        python_model: the wrapper instance inside it (``DiagnosisPyfunc``, the fraud wrapper ...).
        artifacts: artifact name -> local path, as logged with the wrapper.
        metadata: the free-form metadata logged with the model.
        card: the version's model card, when one was logged.
    """

    info: VersionInfo
    alias: str
    local_dir: Path
    pyfunc: Any
    python_model: Any
    artifacts: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    card: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        """Registered model name."""
        return self.info.name

    @property
    def version(self) -> str:
        """Version number as a string."""
        return self.info.version


def registered_names(prefix: str, *, tracking_uri: str) -> list[str]:
    """Names of the registered models starting with ``prefix`` (e.g. ``shipa-diagnosis-``), sorted."""
    if "'" in prefix or "\\" in prefix:
        raise ValueError("a model name prefix must not contain quotes")
    client = connect(tracking_uri)
    found = client.search_registered_models(filter_string=f"name LIKE '{prefix}%'")
    return sorted(m.name for m in found)


def alias_target(name: str, alias: str = names.CHAMPION, *, tracking_uri: str) -> str | None:
    """The version ``alias`` of ``name`` points to now, or None (no such model or alias)."""
    return alias_version(name, alias, tracking_uri=tracking_uri)


def _download(info: VersionInfo, cache_dir: Path, tracking_uri: str) -> Path:
    """The version's model folder under ``cache_dir``, downloaded unless a complete copy is there."""
    target = Path(cache_dir) / info.name / f"v{info.version}"
    if (target / COMPLETE_MARKER).exists():
        return target
    scratch = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        with tracking_uri_scope(tracking_uri):
            local = mlflow.artifacts.download_artifacts(artifact_uri=info.uri, dst_path=str(scratch))
        folder = Path(local)
        if not (folder / "MLmodel").exists():
            raise TrackingError(f"{info.uri}: the downloaded model has no MLmodel file")
        (folder / COMPLETE_MARKER).write_text(info.version, encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(folder, target)  # atomic; fails while another process's complete copy is there
        except OSError:
            # Worker processes download at the same start: the first complete copy wins, and is never removed
            # under a process already loading from it (only an incomplete leftover is replaced).
            if not (target / COMPLETE_MARKER).exists():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(folder, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _artifacts(local_dir: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """(artifact name -> local path, metadata) from the model's ``MLmodel`` file."""
    model = Model.load(str(local_dir))
    flavor = model.flavors.get("python_function", {})
    artifacts = {
        key: local_dir / str(entry["path"])
        for key, entry in (flavor.get("artifacts") or {}).items()
        if isinstance(entry, Mapping) and entry.get("path")
    }
    return artifacts, dict(model.metadata or {})


def load_model_card(info: VersionInfo, *, tracking_uri: str) -> dict[str, Any] | None:
    """The model card the register stage logged for this version, or None when there is none."""
    if not info.run_id:
        return None
    path = f"{artifact_dir(info.name, info.version)}/{MODEL_CARD_FILE}"
    try:
        with tracking_uri_scope(tracking_uri):
            card = mlflow.artifacts.load_dict(f"runs:/{info.run_id}/{path}")
    except (MlflowException, OSError, json.JSONDecodeError):
        return None
    return dict(card) if isinstance(card, Mapping) else None


def load_version(
    name: str,
    *,
    tracking_uri: str,
    cache_dir: Path,
    alias: str = names.CHAMPION,
    model_config: Mapping[str, Any] | None = None,
) -> LoadedVersion:
    """Load the version ``alias`` of ``name`` points to, as a pyfunc, from a local copy.

    Args:
        name: registered model name.
        tracking_uri: the MLflow store (also the registry).
        cache_dir: where versions are downloaded (``<cache_dir>/<name>/v<version>``).
        alias: the alias to follow.
        model_config: passed to the wrapper's ``load_context`` (e.g. ``{"device": "cuda"}``).

    Raises:
        ModelVersionNotFoundError: the model or the alias does not exist.
    """
    version = alias_version(name, alias, tracking_uri=tracking_uri)
    if version is None:
        raise ModelVersionNotFoundError(f"model {name} has no version with alias {alias}")
    info = get_version(name, version, tracking_uri=tracking_uri)
    local_dir = _download(info, cache_dir, tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(str(local_dir), model_config=dict(model_config or {}) or None)
    artifacts, metadata = _artifacts(local_dir)
    log.info("loaded %s version %s (%s)", name, version, alias)
    return LoadedVersion(
        info=info,
        alias=alias,
        local_dir=local_dir,
        pyfunc=pyfunc,
        python_model=pyfunc.unwrap_python_model(),
        artifacts=artifacts,
        metadata=metadata,
        card=load_model_card(info, tracking_uri=tracking_uri),
    )

"""The model registry: versions of ``shipa-diagnosis-<task>`` / ``shipa-fraud``, aliases, tags, descriptions.

Aliases, not stages: every new version gets ``challenger``; only the promotion gate (or a named person's
override) moves ``champion``. Results are plain dataclasses, so callers never handle MLflow entities.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from pipelines.tracking import tags as names
from pipelines.tracking.client import connect, tracking_uri_scope
from pipelines.tracking.errors import ModelVersionNotFoundError, TrackingError
from pipelines.tracking.keys import safe_key

log = logging.getLogger(__name__)

_TASK = re.compile(r"^[a-z0-9][a-z0-9\-]{0,60}$")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w\-]+))$")


DIAGNOSIS_PREFIX = "shipa-diagnosis-"


def is_diagnosis_model(name: str) -> bool:
    """Whether ``name`` is a registered diagnosis model (``shipa-diagnosis-<task>``)."""
    return name.startswith(DIAGNOSIS_PREFIX)


def diagnosis_model_name(task: str) -> str:
    """``shipa-diagnosis-<task>``, e.g. ``shipa-diagnosis-pneumonia``."""
    if not _TASK.match(task):
        raise ValueError(f"task {task!r} must be lower-case letters, digits and dashes")
    return f"{DIAGNOSIS_PREFIX}{task}"


FRAUD_MODEL_NAME = "shipa-fraud"


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version, as plain values."""

    name: str
    version: str
    run_id: str | None
    source: str
    created: str
    description: str
    aliases: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` into (name, version, alias)."""
    match = _MODELS_URI.match(uri.strip())
    if not match:
        raise ModelVersionNotFoundError(f"{uri!r} is not models:/<name>/<version> or models:/<name>@<alias>")
    return match["name"], match["version"], match["alias"]


def _not_found(exc: MlflowException) -> bool:
    return bool(exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST))


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _info(client: MlflowClient, name: str, version: str) -> VersionInfo:
    try:
        mv = client.get_model_version(name, version)
    except MlflowException as exc:
        if _not_found(exc):
            raise ModelVersionNotFoundError(f"models:/{name}/{version} does not exist in the registry") from None
        raise
    return VersionInfo(
        name=mv.name,
        version=str(mv.version),
        run_id=mv.run_id or None,
        source=mv.source or "",
        created=_iso(mv.creation_timestamp),
        description=mv.description or "",
        aliases=tuple(sorted(mv.aliases or ())),
        tags=dict(mv.tags or {}),
    )


def get_version(name: str, version: str, *, tracking_uri: str) -> VersionInfo:
    """One version of a registered model.

    Raises:
        ModelVersionNotFoundError: the model or version does not exist.
    """
    return _info(connect(tracking_uri), name, str(version))


def resolve(uri: str, *, tracking_uri: str) -> VersionInfo:
    """The version a ``models:/<name>/<version>`` or ``models:/<name>@<alias>`` URI points to.

    Raises:
        ModelVersionNotFoundError: malformed URI, or unknown model, version or alias.
    """
    name, version, alias = parse_models_uri(uri)
    if version is None:
        found = alias_version(name, str(alias), tracking_uri=tracking_uri)
        if found is None:
            raise ModelVersionNotFoundError(f"{uri}: model {name} has no alias {alias}")
        version = found
    return get_version(name, version, tracking_uri=tracking_uri)


def register_version(
    model_uri: str,
    name: str,
    *,
    tracking_uri: str,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str = "",
    model_id: str | None = None,
) -> str:
    """Register a logged model as a new version of ``name`` (created when missing), aliased ``challenger``.

    Args:
        model_uri: the logged model (``LoggedModelRef.model_uri``, ``models:/m-...``) or a ``runs:/`` URI.
        name: registered model name (:func:`diagnosis_model_name` or :data:`FRAUD_MODEL_NAME`).
        tracking_uri: the MLflow store (also the registry).
        run_id: the run that logged the model; its lineage tags are what :mod:`reproduce` reads.
        tags: version tags (e.g. lineage, ``shipa.test_data_md5``).
        description: the version's description.
        model_id: the LoggedModel id (taken from a ``models:/m-...`` URI when None).

    Returns:
        The new version number as a string.
    """
    client = connect(tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    if model_id is None and model_uri.startswith("models:/m-"):
        model_id = model_uri.removeprefix("models:/")
    # The sqlite registry resolves a models:/m-... source through MLflow's global client: point it here.
    with tracking_uri_scope(tracking_uri):
        mv = client.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags={safe_key(k): str(v) for k, v in (tags or {}).items()},
            description=description or None,
            model_id=model_id,
        )
    version = str(mv.version)
    _await_ready(client, name, version)
    client.set_registered_model_alias(name, names.CHALLENGER, version)
    log.info("registered %s version %s (alias %s)", name, version, names.CHALLENGER)
    return version


def _await_ready(client: MlflowClient, name: str, version: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            raise TrackingError(f"models:/{name}/{version} registration ended as {status}")
        time.sleep(0.2)


def version_metadata(name: str, version: str, *, tracking_uri: str) -> dict[str, Any]:
    """The free-form metadata logged with a version's model (its MLmodel file; nothing else is downloaded).

    Raises:
        ModelVersionNotFoundError: the model or version does not exist.
    """
    get_version(name, str(version), tracking_uri=tracking_uri)
    with tracking_uri_scope(tracking_uri):
        info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    return dict(info.metadata or {})


def set_alias(name: str, alias: str, version: str, *, tracking_uri: str) -> None:
    """Point ``alias`` of ``name`` at ``version`` (moving it from any other version)."""
    client = connect(tracking_uri)
    _info(client, name, str(version))
    client.set_registered_model_alias(name, alias, str(version))


def alias_version(name: str, alias: str, *, tracking_uri: str) -> str | None:
    """The version ``alias`` points to, or None when the model or alias does not exist."""
    try:
        return str(connect(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # MLflow reports a missing alias as INVALID_PARAMETER_VALUE "... alias <a> not found".
        if _not_found(exc) or (exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message):
            return None
        raise


def champion_version(name: str, *, tracking_uri: str) -> str | None:
    """The current ``champion`` version of ``name``, or None."""
    return alias_version(name, names.CHAMPION, tracking_uri=tracking_uri)


def set_version_tags(name: str, version: str, tags: Mapping[str, Any], *, tracking_uri: str) -> None:
    """Set tags on one model version (values as strings)."""
    client = connect(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), safe_key(key), str(value))


def set_description(name: str, version: str, description: str, *, tracking_uri: str) -> None:
    """Replace a version's description."""
    connect(tracking_uri).update_model_version(name, str(version), description=description)


def append_description(name: str, version: str, paragraph: str, *, tracking_uri: str) -> str:
    """Add a paragraph to a version's description (an append-only record) and return the new description."""
    client = connect(tracking_uri)
    current = _info(client, name, str(version)).description
    text = f"{current.rstrip()}\n\n{paragraph.strip()}" if current.strip() else paragraph.strip()
    client.update_model_version(name, str(version), description=text)
    return text


def list_versions(name: str, *, tracking_uri: str) -> list[VersionInfo]:
    """Every version of ``name``, oldest first (an empty list when the model does not exist)."""
    client = connect(tracking_uri)
    found = client.search_model_versions(f"name = '{name}'") if _safe_name(name) else []
    return sorted((_info(client, name, str(mv.version)) for mv in found), key=lambda v: int(v.version))


def _safe_name(name: str) -> bool:
    # The name goes into a search filter: refuse quotes.
    return "'" not in name and "\\" not in name


def version_history(name: str, *, tracking_uri: str) -> list[dict[str, Any]]:
    """The changelog of ``name`` for model cards: one plain dict per version, oldest first."""
    history = []
    for info in list_versions(name, tracking_uri=tracking_uri):
        history.append(
            {
                "version": info.version,
                "created": info.created,
                "aliases": list(info.aliases),
                "git_commit": info.tags.get(names.GIT_COMMIT, ""),
                "gate_decision": info.tags.get(names.GATE_DECISION, ""),
                "gate_by": info.tags.get(names.GATE_BY, ""),
                "gate_at": info.tags.get(names.GATE_AT, ""),
                "summary": info.description.strip().splitlines()[0] if info.description.strip() else "",
            }
        )
    return history

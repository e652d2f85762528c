"""A verified bundle's models as a local MLflow registry, so ``shipa serve`` serves them unchanged.

The service loads ``champion`` versions from an MLflow store. :func:`materialize` builds a fresh sqlite store in a
working folder (never inside the bundle: the bundle stays byte for byte what was signed) and registers each
bundled model folder under its own name, with the same version number, tags and description, aliased
``champion``, its model card logged where the service reads cards. MLflow numbers a model's versions one after
the other, so the numbers below a released version are reserved by versions created and deleted at once (MLflow
never reuses a deleted number): the service answers and the prediction log record the version the publisher
registered, not a renumbered one.

:func:`prepare_serving` puts that store in the service's state folder
(``<state_dir>/release-stores/<manifest sha256 prefix>-<pid>-<nonce>``: one per serving process, built at every
start, so nothing of an earlier start is trusted; the stores of processes that are gone are removed) and drops the
service's downloaded copies of the released versions (``<state_dir>/models/<name>/v<version>``): the service reuses
a complete copy by name and version, and a copy from another store must not stand in for the verified bundle's files.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.release.errors import ReleaseError
from pipelines.tracking.client import connect, tracking_uri_scope
from pipelines.tracking.promotion import log_model_card
from pipelines.tracking.registry import register_version, set_alias
from pipelines.tracking.runs import stage_run

log = logging.getLogger(__name__)

EXPERIMENT = "shipa-release"
CHAMPION = "champion"
SOURCE_RUN_TAG = "shipa.release.source_run_id"
RELEASE_TAG = "shipa.release"


def _reserve_numbers(tracking_uri: str, name: str, below: int, source: str, run_id: str) -> None:
    """Create and delete versions 1 .. ``below - 1`` of ``name`` so the next version gets number ``below``."""
    client = connect(tracking_uri)
    # MLflow resolves a runs:/ source through its global client: point it at this store for the block.
    with tracking_uri_scope(tracking_uri):
        for _ in range(below - 1):
            mv = client.create_model_version(name, source=source, run_id=run_id)
            client.delete_model_version(name, str(mv.version))


def materialize(root: Path, models: Sequence[dict[str, Any]], store_dir: Path, *, release: str) -> str:
    """Register the bundle's model folders in a new sqlite MLflow store under ``store_dir``.

    Args:
        root: the verified bundle folder.
        models: the ``models`` entries of its ``release.json``.
        store_dir: an empty working folder (the store and its artifacts go there).
        release: ``<name> <version>`` of the release (a tag on every registered version).

    Returns:
        The store's tracking URI (``sqlite:///<store_dir>/mlflow.db``).

    Raises:
        ReleaseError: a model folder is missing, or two entries name the same model.
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"
    seen: set[str] = set()
    for model in models:
        name, version = str(model["name"]), int(model["version"])
        if name in seen:
            raise ReleaseError(f"release.json lists {name} twice: a release holds one version of each model")
        seen.add(name)
        folder = root / str(model["path"])
        if not (folder / "MLmodel").is_file():
            raise ReleaseError(f"{folder}: no MLmodel file (release.json names it)")
        with stage_run(
            "release",
            tracking_uri=tracking_uri,
            experiment=EXPERIMENT,
            params={},
            tags={RELEASE_TAG: release, "shipa.release.model": f"{name}/{version}"},
            pipeline_run_id=None,
        ) as run:
            run.log_artifact(folder, "model")
            source = f"runs:/{run.run_id}/model"
        connect(tracking_uri).create_registered_model(name)
        _reserve_numbers(tracking_uri, name, version, source, run.run_id)
        tags = {**dict(model.get("tags") or {}), RELEASE_TAG: release}
        if model.get("source_run_id"):
            tags[SOURCE_RUN_TAG] = str(model["source_run_id"])
        got = register_version(
            source,
            name,
            tracking_uri=tracking_uri,
            run_id=run.run_id,
            tags=tags,
            description=str(model.get("description") or ""),
        )
        if int(got) != version:
            raise ReleaseError(f"{name}: registered as version {got}, not {version}")
        if model.get("card"):
            card = json.loads((root / str(model["card"])).read_text(encoding="utf-8"))
            log_model_card(name, got, card, tracking_uri=tracking_uri)
        set_alias(name, CHAMPION, got, tracking_uri=tracking_uri)
        log.info("release %s: %s version %s registered as %s", release, name, got, CHAMPION)
    return tracking_uri


STORES_DIRNAME = "release-stores"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _drop_stale_stores(stores: Path) -> None:
    """Remove the working stores of serving processes that are gone (``<sha>-<pid>-<nonce>``, no such process)."""
    if not stores.is_dir():
        return
    for folder in stores.iterdir():
        parts = folder.name.split("-")
        pid = parts[1] if len(parts) == 3 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def prepare_serving(
    root: Path,
    models: Sequence[dict[str, Any]],
    *,
    state_dir: Path,
    models_dirname: str,
    manifest_sha256: str,
    release: str,
) -> str:
    """Build the working store of a verified bundle under the service's state folder; returns its tracking URI.

    Args:
        root: the verified bundle folder.
        models: the ``models`` entries of its ``release.json``.
        state_dir: the service's state folder (``SHIPA_SERVICE_STATE_DIR``).
        models_dirname: the folder under ``state_dir`` the service downloads versions into.
        manifest_sha256: the bundle's manifest hash (names the store folder).
        release: ``<name> <version>`` of the release.
    """
    stores = Path(state_dir) / STORES_DIRNAME
    _drop_stale_stores(stores)
    # One store per serving process: another process may be serving (and reloading from) its own at the same time.
    # Built in place: the store records absolute artifact paths, so it cannot be built elsewhere and renamed.
    # A new name per start too: MLflow keeps an engine per store URI for the life of the process.
    store = stores / f"{manifest_sha256[:16]}-{os.getpid()}-{secrets.token_hex(4)}"
    for model in models:
        shutil.rmtree(
            Path(state_dir) / models_dirname / str(model["name"]) / f"v{model['version']}", ignore_errors=True
        )
    return materialize(root, models, store, release=release)

"""Lineage of a stage run as flat ``shipa.*`` tags: git, DVC data versions, params hash, host, versions.

The tag names are documented in ``pipelines/tracking/README.md`` (auditors search the MLflow UI by them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import socket
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import yaml

from pipelines.tracking import git, tags
from pipelines.tracking.keys import safe_key

log = logging.getLogger(__name__)

VERSIONED_PACKAGES = ("torch", "monai", "mlflow", "fhir.resources", "dvc", "numpy", "shipa")
"""Distributions whose installed version is recorded as ``shipa.version.<name>`` (plus ``python``)."""

HashSource = Literal["dvc", "lock"]

MISSING = "missing"
"""The ``shipa.data.<path>`` value of a declared dependency that does not exist (so was not used)."""


def params_sha256(params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of a stage's params section."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lock_dep_hashes(lock_file: Path, stage: str) -> dict[str, str]:
    """``{dep path: md5}`` of one stage as recorded in ``dvc.lock`` (``stages.<stage>.deps``).

    Foreach stages are looked up by their full name (``train@diagnosis``). A missing file or stage gives
    ``{}``.

    Note that DVC writes a stage's entry only after the stage finished, so during the stage this is the entry
    of its previous run; :func:`dvc_dep_hashes` gives the current hashes.
    """
    if not lock_file.is_file():
        return {}
    data = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    entry = (data.get("stages") or {}).get(stage) or {}
    return {str(dep["path"]): str(dep.get("md5", "")) for dep in entry.get("deps") or [] if "path" in dep}


def dvc_target(repo_root: Path, stage: str) -> str:
    """An absolute DVC target for ``stage`` (``name`` or ``path/dvc.yaml:name``, relative to ``repo_root``).

    DVC resolves bare stage names against the current directory, not the repository it was opened on.
    """
    path, sep, name = stage.rpartition(":")
    return f"{(repo_root / (path if sep else 'dvc.yaml')).resolve()}:{name}"


def dvc_dep_hashes(repo_root: Path, stage: str) -> dict[str, str]:
    """``{dep path: md5}`` of one stage's declared deps as DVC hashes them now (``.dir`` hashes for folders).

    These are exactly the values DVC writes to ``dvc.lock`` when the stage completes, and inside ``dvc repro``
    they come from DVC's hash cache, so the call is cheap (about 1 s, mostly importing DVC).

    Raises:
        Exception: whatever DVC raises when the project or stage cannot be loaded.
    """
    # DVC is heavy to import; only lineage needs it.
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        out: dict[str, str] = {}
        for dvc_stage in repo.stage.collect(dvc_target(repo_root, stage)):
            for dep in dvc_stage.deps:
                # Params deps have no file hash; they are covered by shipa.params_sha256.
                if isinstance(dep, ParamsDependency):
                    continue
                try:
                    out[str(dep.def_path)] = str(dep.get_hash().value or "")
                except FileNotFoundError:
                    out[str(dep.def_path)] = MISSING
        return out


def data_hashes(repo_root: Path, stage: str, source: HashSource = "dvc") -> tuple[dict[str, str], str]:
    """The stage's dep hashes and where they came from (``dvc``, ``dvc.lock`` or ``none``).

    With ``source="dvc"`` a DVC failure (no DVC project, unknown stage) falls back to ``dvc.lock`` with a
    warning.
    """
    if source == "dvc":
        try:
            return dvc_dep_hashes(repo_root, stage), "dvc"
        except Exception as exc:  # any DVC failure must not stop the run: fall back to the lock file
            # Outside a DVC project (``shipa`` on a hospital's own export) this is expected, not a problem.
            level = logging.INFO if type(exc).__name__ == "NotDvcRepoError" else logging.WARNING
            log.log(level, "DVC could not hash the deps of stage %s (%s); reading dvc.lock", stage, type(exc).__name__)
    hashes = lock_dep_hashes(repo_root / "dvc.lock", stage)
    return hashes, "dvc.lock" if hashes else "none"


def detect_device() -> str:
    """The CUDA device name when torch sees one, else ``"cpu"`` (also when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return "cpu"
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def package_versions(names: tuple[str, ...] = VERSIONED_PACKAGES) -> dict[str, str]:
    """Installed versions by distribution name (``absent`` when not installed), plus ``python``."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def collect_lineage(
    stage: str,
    *,
    repo_root: Path,
    params: Mapping[str, Any],
    device: str | None = None,
    hashes: HashSource = "dvc",
) -> dict[str, str]:
    """Collect the lineage of a stage run as flat ``shipa.*`` tags (all values strings).

    Args:
        stage: the DVC stage name, e.g. ``ingest`` or ``train@diagnosis``.
        repo_root: the project root (git work tree and DVC project).
        params: the stage's params section as a plain mapping; its canonical hash is recorded, not its values.
        device: the device the stage runs on; None detects it (GPU name or ``cpu``).
        hashes: ``dvc`` asks DVC for the current hash of each dep (falls back to dvc.lock); ``lock`` reads
            ``dvc.lock`` only.

    Returns:
        ``shipa.stage``, ``shipa.git_commit`` (``unknown`` outside git), ``shipa.git_dirty`` (``true``,
        ``false`` or ``unknown``), ``shipa.params_sha256``, ``shipa.data.<dep path>`` (md5 per dep),
        ``shipa.data_source``, ``shipa.host``, ``shipa.device`` and ``shipa.version.<package>``.
    """
    dirty = git.is_dirty(repo_root)
    out = {
        tags.STAGE: stage,
        tags.GIT_COMMIT: git.head_commit(repo_root),
        tags.GIT_DIRTY: git.UNKNOWN if dirty is None else str(dirty).lower(),
        tags.PARAMS_SHA256: params_sha256(params),
        tags.HOST: socket.gethostname(),
        tags.DEVICE: device or detect_device(),
    }
    dep_hashes, source = data_hashes(repo_root, stage, hashes)
    out[tags.DATA_SOURCE] = source
    for path, md5 in sorted(dep_hashes.items()):
        out[safe_key(tags.DATA_PREFIX + path)] = md5
    for name, version in package_versions().items():
        out[safe_key(tags.VERSION_PREFIX + name)] = version
    return out


def pipeline_run_id_from_state(repo_root: Path) -> str:
    """A pipeline-run id that every stage of one ``dvc repro`` derives identically from the repository state.

    It is ``<commit[:12]>-<digest[:12]>`` where the digest covers uncommitted changes (see
    :func:`pipelines.tracking.git.state_digest`) and ``params.yaml``/``dvc.yaml``; files that a running
    pipeline writes (``dvc.lock``, outputs) do not enter it. Re-running the pipeline on an unchanged state
    gives the same id, so retries join the same parent run; any change of code or params starts a new one.
    """
    commit = git.head_commit(repo_root)
    digest = hashlib.sha256(git.state_digest(repo_root).encode())
    for name in ("params.yaml", "dvc.yaml"):
        path = repo_root / name
        digest.update(path.read_bytes() if path.is_file() else b"")
    prefix = commit[:12] if commit != git.UNKNOWN else "nogit"
    return f"{prefix}-{digest.hexdigest()[:12]}"


def resolve_pipeline_run_id(explicit: str | None, repo_root: Path) -> str:
    """``explicit`` (e.g. from ``SHIPA_PIPELINE_RUN_ID``, passed by the stage) or the state-derived id."""
    return explicit or pipeline_run_id_from_state(repo_root)

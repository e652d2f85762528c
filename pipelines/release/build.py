"""Build a release bundle: models, service settings, wheelhouse, SBOM, ``release.json``, signed manifest.

The bundle is written into a scratch folder beside ``out`` and renamed into place only when complete and signed
(:func:`pipelines.io.atomic_dir`), so a failed build never leaves a folder that looks like a release.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines.io import atomic_dir
from pipelines.release.errors import ReleaseError
from pipelines.release.hashing import sha256_bytes
from pipelines.release.keys import key_id
from pipelines.release.manifest import write_signed_manifest
from pipelines.release.models import export_version
from pipelines.release.sbom import build_sbom
from pipelines.release.service_config import SERVICE_ENV, env_text, service_settings
from pipelines.release.wheelhouse import (
    check_installable,
    copy_wheels,
    download_wheels,
    list_wheels,
    missing_pins,
    read_pins,
)

log = logging.getLogger(__name__)

RELEASE_JSON = "release.json"
SBOM = "sbom.cdx.json"
WHEELS = "wheels"
FORMAT = "shipa-release/1"


@dataclass(frozen=True)
class WheelhouseOptions:
    """How the wheelhouse is made.

    Attributes:
        enabled: build one (off: a bundle of models and settings only, installed into an existing venv).
        lock: the lock file whose every pin gets a wheel.
        project: the project folder whose wheel is added (None: none).
        torch_spec: pip arguments of the torch build (the Makefile's ``TORCH_SPEC``; None: none).
        wheels_from: copy the wheels found under this folder instead of downloading (no index needed).
    """

    enabled: bool = True
    lock: Path = Path("constraints.txt")
    project: Path | None = Path(".")
    torch_spec: str | None = None
    wheels_from: Path | None = None


@dataclass(frozen=True)
class BuiltRelease:
    """What :func:`build_release` wrote: the folder, its ``release.json`` and the manifest's sha256."""

    root: Path
    release: dict[str, Any]
    manifest_sha256: str
    missing_pins: list[str] = field(default_factory=list)


def _tool_version() -> str:
    try:
        return dist_version("shipa")
    except PackageNotFoundError:
        return "unknown"


def _wheelhouse(root: Path, options: WheelhouseOptions) -> dict[str, Any]:
    out = root / WHEELS
    if options.wheels_from is not None:
        copy_wheels(options.wheels_from, out)
        source = "folder"
    else:
        download_wheels(out, lock=options.lock, project=options.project, torch_spec=options.torch_spec)
        source = "index"
    check_installable(out)
    wheels = list_wheels(out)
    missing = missing_pins(read_pins(options.lock), wheels) if options.lock.is_file() else []
    if missing:
        log.warning("%d pins of %s have no wheel in the wheelhouse, e.g. %s", len(missing), options.lock, missing[0])
    return {
        "source": source,
        "lock": options.lock.name,
        "lock_sha256": sha256_bytes(options.lock.read_bytes()) if options.lock.is_file() else None,
        "torch_spec": options.torch_spec,
        "wheels": len(wheels),
        "missing_pins": missing,
    }


def build_release(
    uris: Sequence[str],
    out: Path,
    *,
    tracking_uri: str,
    key: Ed25519PrivateKey,
    name: str,
    version: str | None = None,
    wheelhouse: WheelhouseOptions | None = None,
    settings: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> BuiltRelease:
    """Write a signed release bundle of the model versions ``uris`` into ``out``.

    Args:
        uris: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``, one per released model.
        out: the bundle folder (must not exist).
        tracking_uri: the publisher's MLflow store.
        key: the publisher's Ed25519 signing key.
        name: the release's name.
        version: the release's version (default: the UTC time, ``YYYY.MM.DD.HHMMSS``).
        wheelhouse: how to make the wheelhouse (default: every pin from the index).
        settings: non-secret service settings that differ from the defaults (field name -> value).
        now: the release time (default: now).

    Raises:
        ReleaseError: ``out`` exists, no or duplicate models, a model cannot be exported, pip failed.
    """
    if not uris:
        raise ReleaseError("name at least one model: models:/<name>@champion")
    if Path(out).exists():
        raise ReleaseError(f"{out} exists already: a release is written into a new folder")
    created_at = (now or datetime.now(UTC)).astimezone(UTC)
    created = created_at.isoformat(timespec="seconds")
    version = version or created_at.strftime("%Y.%m.%d.%H%M%S")
    options = wheelhouse or WheelhouseOptions()
    try:
        service_env = service_settings(settings)
    except KeyError as exc:
        raise ReleaseError(f"{exc.args[0]!r} is not a non-secret service setting a release may carry") from None
    with atomic_dir(Path(out)) as root:
        models = [export_version(uri, root, tracking_uri=tracking_uri) for uri in uris]
        names = [m["name"] for m in models]
        if len(set(names)) != len(names):
            raise ReleaseError("a release holds one version of each model: a model is named twice")
        (root / SERVICE_ENV).parent.mkdir(parents=True, exist_ok=True)
        (root / SERVICE_ENV).write_text(env_text(service_env, f"{name} {version}"), encoding="utf-8")
        wheels_info = _wheelhouse(root, options) if options.enabled else None
        wheels = list_wheels(root / WHEELS) if options.enabled else []
        sbom = build_sbom(
            release_name=name,
            release_version=version,
            created=created,
            tool_version=_tool_version(),
            wheels_dir=root / WHEELS,
            wheels=wheels,
            models=models,
            root=root,
        )
        (root / SBOM).write_text(json.dumps(sbom, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        release = {
            "format": FORMAT,
            "name": name,
            "version": version,
            "created": created,
            "shipa_version": _tool_version(),
            "python": platform.python_version(),
            "platform": f"{sys.platform}-{platform.machine()}",
            "signing_key_id": key_id(key.public_key()),
            "models": models,
            "service_config": SERVICE_ENV,
            "wheelhouse": wheels_info,
            "sbom": SBOM,
        }
        (root / RELEASE_JSON).write_text(json.dumps(release, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        data = write_signed_manifest(root, {"name": name, "version": version, "created": created}, key)
    log.info("release %s %s written to %s", name, version, out)
    return BuiltRelease(
        root=Path(out),
        release=release,
        manifest_sha256=sha256_bytes(data),
        missing_pins=list((wheels_info or {}).get("missing_pins") or []),
    )


def read_release(root: Path) -> dict[str, Any]:
    """The ``release.json`` of a (verified) bundle.

    Raises:
        ReleaseError: missing or not a release description.
    """
    path = Path(root) / RELEASE_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{path}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReleaseError(f"{path}: not a {FORMAT} description")
    return data

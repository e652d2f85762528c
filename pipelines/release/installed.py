"""The record of installed releases: one JSON file in the releases folder, newest last, written atomically.

Each entry holds the release's name and version, its models, the sha256 of its signed manifest, the bundle and
venv paths and when it was installed. Rolling back is serving the previous entry's bundle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.io import write_json
from pipelines.release.errors import ReleaseError

REGISTRY_FILE = "installed.json"


@dataclass(frozen=True)
class InstalledRelease:
    """One installed release."""

    name: str
    version: str
    models: list[str]
    manifest_sha256: str
    path: str
    venv: str
    installed_at: str
    key_id: str


def read_installed(releases_dir: Path) -> list[InstalledRelease]:
    """Every recorded installation, oldest first (an empty list when none was recorded).

    Raises:
        ReleaseError: the registry file is not readable JSON.
    """
    path = Path(releases_dir) / REGISTRY_FILE
    if not path.exists():
        return []
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        return [InstalledRelease(**entry) for entry in data["installed"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ReleaseError(f"{path}: not a registry of installed releases ({type(exc).__name__})") from None


def record_installed(releases_dir: Path, entry: InstalledRelease) -> Path:
    """Append ``entry`` to the registry file; returns its path."""
    entries = [*read_installed(releases_dir), entry]
    path = Path(releases_dir) / REGISTRY_FILE
    write_json(path, {"installed": [asdict(e) for e in entries]})
    return path


def newest_first(entries: list[InstalledRelease]) -> list[InstalledRelease]:
    """The entries newest installation first (ties keep the later record first)."""
    indexed = list(enumerate(entries))
    indexed.sort(key=lambda pair: (pair[1].installed_at, pair[0]), reverse=True)
    return [e for _, e in indexed]

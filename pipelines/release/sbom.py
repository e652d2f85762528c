"""The bundle's software bill of materials, CycloneDX 1.5 JSON, written from the wheelhouse itself.

One ``library`` component per wheel (name, version, ``pkg:pypi`` purl, the wheel's SHA-256) and one
``machine-learning-model`` component per released model version (the SHA-256 of its ``MLmodel`` file). Written from
what is in the bundle, not from what was asked for, so it describes exactly what a hospital installs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.release.hashing import sha256_file
from pipelines.release.wheelhouse import Wheel

SPEC_VERSION = "1.5"


def purl(wheel: Wheel) -> str:
    """The package URL of a PyPI distribution: ``pkg:pypi/<canonical name>@<version>``."""
    return f"pkg:pypi/{wheel.name}@{wheel.version}"


def build_sbom(
    *,
    release_name: str,
    release_version: str,
    created: str,
    tool_version: str,
    wheels_dir: Path,
    wheels: Sequence[Wheel],
    models: Sequence[dict[str, Any]],
    root: Path,
) -> dict[str, Any]:
    """The CycloneDX document of a bundle.

    Args:
        release_name: the release's name (the BOM's subject component).
        release_version: the release's version.
        created: ISO-8601 UTC time of the release.
        tool_version: the version of Shipa that wrote it.
        wheels_dir: the wheelhouse folder.
        wheels: its wheels.
        models: the released models as in ``release.json`` (``name``, ``version``, ``path`` of the model folder
            relative to ``root``).
        root: the bundle folder.
    """
    components: list[dict[str, Any]] = []
    for wheel in wheels:
        ref = purl(wheel)
        components.append(
            {
                "type": "library",
                "bom-ref": f"{ref}#{wheel.filename}",
                "name": wheel.name,
                "version": wheel.version,
                "purl": ref,
                "hashes": [{"alg": "SHA-256", "content": sha256_file(wheels_dir / wheel.filename)}],
                "properties": [{"name": "shipa:wheel", "value": wheel.filename}],
            }
        )
    for model in models:
        mlmodel = root / str(model["path"]) / "MLmodel"
        components.append(
            {
                "type": "machine-learning-model",
                "bom-ref": f"model:{model['name']}@{model['version']}",
                "name": str(model["name"]),
                "version": str(model["version"]),
                "hashes": [{"alg": "SHA-256", "content": sha256_file(mlmodel)}],
                "properties": [{"name": "shipa:path", "value": str(model["path"])}],
            }
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "shipa", "version": tool_version}]},
            "component": {
                "type": "application",
                "bom-ref": f"release:{release_name}@{release_version}",
                "name": release_name,
                "version": release_version,
            },
        },
        "components": components,
    }

"""The manifest of a bundle (every file's path, sha256 and size) and its Ed25519 signature.

``manifest.json`` is written with sorted keys and paths, so the same files give the same bytes; ``manifest.sig``
is a small JSON document: the algorithm, the signing key's id and the base64 signature of the exact bytes of
``manifest.json``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines.release.hashing import sha256_file
from pipelines.release.keys import key_id

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
FORMAT = "shipa-release-manifest/1"
ALGORITHM = "Ed25519"
UNLISTED = frozenset({MANIFEST, SIGNATURE})


def bundle_files(root: Path) -> list[str]:
    """Every regular file under ``root`` (POSIX relative paths, sorted), the manifest and signature excepted."""
    root = Path(root)
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    return sorted(f for f in found if f not in UNLISTED)


def build_manifest(root: Path, release: dict[str, Any]) -> dict[str, Any]:
    """The manifest of every file under ``root``.

    Args:
        root: the bundle folder.
        release: what the manifest says of the release (name, version, created).
    """
    files = []
    for rel in bundle_files(root):
        path = Path(root) / rel
        files.append({"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size})
    return {"format": FORMAT, "release": dict(release), "files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes of a manifest (sorted keys, two-space indent, final newline)."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write_signed_manifest(root: Path, release: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """Write ``manifest.json`` over the files now under ``root`` and its signature ``manifest.sig``.

    Returns:
        The bytes of ``manifest.json`` (what was signed).
    """
    data = manifest_bytes(build_manifest(root, release))
    signature = {
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signature": base64.b64encode(key.sign(data)).decode("ascii"),
        "signed_file": MANIFEST,
    }
    # The whole bundle is built in a scratch folder renamed into place (pipelines.io.atomic_dir): plain writes.
    (Path(root) / MANIFEST).write_bytes(data)
    (Path(root) / SIGNATURE).write_text(json.dumps(signature, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return data

"""Check a bundle before anything in it is used: the signature first, then every file against the manifest.

The order matters: nothing the manifest says is believed before its signature verifies with the trusted key, and
every file is then checked, in the manifest's (sorted) order, so the first file that differs is the one named. A
file that is not in the manifest (a wheel slipped into ``wheels/`` would be installed) and a symbolic link are
refused too.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pipelines.release.errors import VerificationError
from pipelines.release.hashing import sha256_bytes, sha256_file
from pipelines.release.keys import key_id
from pipelines.release.manifest import ALGORITHM, FORMAT, MANIFEST, SIGNATURE, bundle_files


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and files were checked.

    Attributes:
        root: the bundle folder (resolved).
        manifest: the signed manifest.
        manifest_sha256: the hex sha256 of ``manifest.json`` (what identifies the release).
        key_id: the id of the key that signed it (the trusted key).
    """

    root: Path
    manifest: dict[str, Any]
    manifest_sha256: str
    key_id: str

    @property
    def release(self) -> dict[str, Any]:
        """The manifest's release section (name, version, created)."""
        return dict(self.manifest.get("release") or {})


def _read_signature(root: Path) -> dict[str, Any]:
    path = root / SIGNATURE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VerificationError(f"{path}: the bundle is not signed (no {SIGNATURE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError(f"{path}: unreadable signature ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("algorithm") != ALGORITHM:
        raise VerificationError(f"{path}: not an {ALGORITHM} signature of {MANIFEST}")
    return data


def check_signature(root: Path, trusted: Ed25519PublicKey) -> tuple[bytes, str]:
    """Check ``manifest.sig`` over ``manifest.json`` with the trusted key.

    Returns:
        The manifest bytes and the key id.

    Raises:
        VerificationError: unsigned, signed by another key, or the manifest changed after signing.
    """
    signature = _read_signature(root)
    trusted_id = key_id(trusted)
    signer = str(signature.get("key_id", ""))
    if signer != trusted_id:
        raise VerificationError(
            f"{root / MANIFEST}: signed by another key (key id {signer[:16] or 'none'}, "
            f"trusted key id {trusted_id[:16]}): refused"
        )
    try:
        data = (root / MANIFEST).read_bytes()
    except OSError as exc:
        raise VerificationError(f"{root / MANIFEST}: cannot be read ({type(exc).__name__})") from None
    try:
        trusted.verify(base64.b64decode(str(signature.get("signature", "")), validate=True), data)
    except (InvalidSignature, binascii.Error, ValueError):
        raise VerificationError(
            f"{root / MANIFEST}: does not match its signature (changed after signing, or signed by another key)"
        ) from None
    return data, trusted_id


def _safe(rel: str) -> bool:
    path = PurePosixPath(rel)
    return bool(rel) and not path.is_absolute() and ".." not in path.parts


def check_files(root: Path, manifest: dict[str, Any]) -> None:
    """Check every listed file's size and sha256, then that nothing unlisted is there.

    Raises:
        VerificationError: naming the first file that is missing, differs, is a link, or is not listed.
    """
    listed: set[str] = set()
    for entry in manifest.get("files") or []:
        rel = str(entry.get("path", ""))
        if not _safe(rel):
            raise VerificationError(f"{root / MANIFEST}: unsafe path {rel!r} in the manifest")
        listed.add(rel)
        path = root / rel
        if path.is_symlink():
            raise VerificationError(f"{path}: a symbolic link, not the signed file")
        if not path.is_file():
            raise VerificationError(f"{path}: missing (listed in the signed manifest)")
        if path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            raise VerificationError(f"{path}: sha256 differs from the signed manifest (the file was changed)")
    for rel in bundle_files(root):
        if rel not in listed:
            raise VerificationError(f"{root / rel}: not in the signed manifest (added after signing)")


def verify_bundle(root: Path, trusted: Ed25519PublicKey) -> VerifiedBundle:
    """Verify a bundle: the manifest's signature with ``trusted``, then every file's hash.

    Raises:
        VerificationError: the first problem found, naming its file.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise VerificationError(f"{root}: no such release bundle folder")
    data, signer = check_signature(root, trusted)
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise VerificationError(f"{root / MANIFEST}: signed but not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise VerificationError(f"{root / MANIFEST}: not a {FORMAT} manifest")
    check_files(root, manifest)
    return VerifiedBundle(root=root, manifest=manifest, manifest_sha256=sha256_bytes(data), key_id=signer)

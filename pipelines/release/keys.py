"""Ed25519 keys of the release publisher: generate a pair, read the private key and the trusted public key.

The private key is given as text (the CLI reads it from ``SHIPA_RELEASE_SIGNING_KEY``): either PEM (PKCS#8,
``-----BEGIN PRIVATE KEY-----``, as :func:`generate_key_pair` writes) or the raw 32-byte private key in standard
base64. A public key file is PEM (SubjectPublicKeyInfo, ``-----BEGIN PUBLIC KEY-----``) or the raw 32-byte public
key in base64. A key's id is the sha256 of its raw public bytes: a signature names the key that made it, so a
bundle signed by another key is refused with that reason rather than as a corrupt file.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipelines.release.errors import SigningKeyError
from pipelines.release.hashing import sha256_bytes

_RAW_LEN = 32


def _raw_b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"{what} is neither PEM nor base64") from None
    if len(raw) != _RAW_LEN:
        raise SigningKeyError(f"{what} is base64 of {len(raw)} bytes; an Ed25519 key has {_RAW_LEN}")
    return raw


def load_private_key(text: str, what: str = "the signing key") -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, unencrypted) or base64 of its 32 raw bytes.

    Raises:
        SigningKeyError: empty, unreadable, encrypted or not Ed25519 (the message never holds the key).
    """
    stripped = text.strip()
    if not stripped:
        raise SigningKeyError(f"{what} is empty")
    if stripped.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(stripped.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError):
            raise SigningKeyError(f"{what} is not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{what} is a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw_b64(stripped, what))


def load_public_key(path: Path) -> Ed25519PublicKey:
    """The trusted Ed25519 public key in ``path`` (PEM or base64 of its 32 raw bytes).

    Raises:
        SigningKeyError: the file is missing, unreadable or not an Ed25519 public key.
    """
    what = f"trusted key {path}"
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SigningKeyError(f"{what} cannot be read ({type(exc).__name__})") from None
    if text.startswith("-----BEGIN"):
        if "PRIVATE" in text.split("\n", 1)[0]:
            raise SigningKeyError(f"{what} is a private key: give the publisher's public key")
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except ValueError:
            raise SigningKeyError(f"{what} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{what} is a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw_b64(text, what))


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The key's id: the hex sha256 of its raw public bytes."""
    return sha256_bytes(raw_public(key))


def generate_key_pair(private_path: Path, public_path: Path) -> str:
    """Write a new Ed25519 key pair as PEM files: the private one readable by its owner only (0600).

    Returns:
        The new key's id.

    Raises:
        SigningKeyError: either file exists already (a key is never overwritten).
    """
    for path in (private_path, public_path):
        if Path(path).exists():
            raise SigningKeyError(f"{path} exists already: a key file is never overwritten")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    Path(private_path).parent.mkdir(parents=True, exist_ok=True)
    # Created with mode 0600 in one call: the key is never readable by others, not even for a moment.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    Path(public_path).parent.mkdir(parents=True, exist_ok=True)
    Path(public_path).write_bytes(public_pem)
    return key_id(key.public_key())

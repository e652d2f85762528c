"""Named errors of release bundles: each message names the file or key at fault (the CLI prints it as one line)."""

from __future__ import annotations

from pipelines.errors import ShipaError


class ReleaseError(ShipaError):
    """A release cannot be built, installed or served."""


class SigningKeyError(ReleaseError):
    """A signing or trusted key cannot be read or is not an Ed25519 key."""


class VerificationError(ReleaseError):
    """A bundle does not match its signed manifest, or was signed by a key that is not trusted."""

    exit_code = 3

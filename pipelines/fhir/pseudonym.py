"""Keyed pseudonyms (HMAC-SHA256) for identifiers and DICOM UIDs.

The same key and the same (kind, value) always give the same pseudonym, so one person has one pseudonym in FHIR and
in DICOM. Without the key a pseudonym cannot be reversed or recomputed from a guessed IIN.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymizer:
    """Turns identifiers into stable keyed pseudonyms.

    Args:
        key: the secret HMAC key (from the environment, never from git).
    """

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if len(key) < 16:
            raise ValueError("pseudonymisation key must be at least 16 bytes")
        self._key = key

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\x1f{value}".encode(), hashlib.sha256).digest()

    def id(self, kind: str, value: str) -> str:
        """Pseudonym for an identifier of a kind ('iin', 'patient', 'claim', ...): 32 hex characters."""
        return self._digest(kind, value).hex()[:32]

    def uid(self, uid: str) -> str:
        """A DICOM UID remapped to a pseudonymous UID under the ``2.25`` root (UUID-derived UIDs, PS3.5 B.2)."""
        n = int.from_bytes(self._digest("dicom-uid", uid)[:16], "big")
        return f"2.25.{n}"

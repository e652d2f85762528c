"""Deterministic identifiers: UUID-shaped resource ids and DICOM UIDs derived from the seed and a scope.

Each scope (one patient, or the provider directory) gets a keyed 128-bit base; its resources count up in the low
16 bits. Ids therefore depend only on (seed, scope, order of creation), never on time or process state, and two
scopes collide with negligible probability (about 106 random bits per base).
"""

from __future__ import annotations

import hashlib

_COUNTER_BITS = 16
_COUNTER_MASK = (1 << _COUNTER_BITS) - 1
_VERSION_MASK = 0xF << 76
_VARIANT_MASK = 0x3 << 62


def _hex_uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class IdFactory:
    """Hands out the ids of one scope in creation order.

    Args:
        seed: the cohort seed.
        scope: a stable name of the scope, e.g. ``"patient/17"`` or ``"directory"``.
    """

    __slots__ = ("_base", "_count")

    def __init__(self, seed: int, scope: str) -> None:
        digest = hashlib.blake2b(f"shipa-synth/{seed}/{scope}".encode(), digest_size=16).digest()
        base = int.from_bytes(digest, "big") & ~_COUNTER_MASK
        # Version 4 and RFC 4122 variant bits, so ids read as ordinary UUIDs (urn:uuid:...).
        base = (base & ~_VERSION_MASK) | (0x4 << 76)
        base = (base & ~_VARIANT_MASK) | (0x2 << 62)
        self._base = base
        self._count = 0

    def next_int(self) -> int:
        """The next 128-bit value of this scope."""
        self._count += 1
        if self._count > _COUNTER_MASK:
            raise OverflowError("more than 65535 identifiers in one scope")
        return self._base | self._count

    def next(self) -> str:
        """The next resource id (UUID text)."""
        return _hex_uuid(self.next_int())

    def uid(self) -> str:
        """The next DICOM UID under the UUID-derived ``2.25`` root (PS3.5 B.2), at most 44 characters."""
        return f"2.25.{self.next_int()}"

    def accession(self) -> str:
        """The next accession number: 16 characters (DICOM SH), upper-case hex."""
        return f"A{self.next_int() & ((1 << 60) - 1):015X}"

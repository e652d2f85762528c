"""Compact 64-bit keys for the dataset-wide index (ids, conditional-reference targets).

Both are derived from keyed pseudonyms, so neither the index in memory nor the temporary files hold a raw id.
"""

from __future__ import annotations

import hashlib


def id_key(pseudonym: str) -> int:
    """64-bit key of a resource: the first 16 hex digits of its pseudonym."""
    return int(pseudonym[:16], 16)


def cond_key(rtype: str, system: str, pseudo_value: str) -> int:
    """64-bit key of ``rtype?identifier=system|<pseudonymous value>`` (a conditional reference or its target)."""
    digest = hashlib.blake2b(f"{rtype}|{system}|{pseudo_value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")

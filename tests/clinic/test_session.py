"""The clinicians' page's session cookie: sealed with AES-GCM under a key derived from the token pepper."""

from __future__ import annotations

import base64
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipelines.service.routes.clinic import Session, seal, session_key, unseal

PEPPER = b"test-pepper-0123456789-abcdefghij"
TOKEN = "shipa_" + "t" * 43


def _session(**changes: object) -> Session:
    values: dict[str, object] = {
        "csrf": "c" * 43,
        "expires": int(time.time()) + 60,
        "lang": "kk",
        "token": TOKEN,
        "name": "dr-aigerim",
    }
    values.update(changes)
    return Session(**values)  # type: ignore[arg-type]


def test_a_sealed_session_opens_only_under_its_own_key_and_reveals_nothing() -> None:
    aead = AESGCM(session_key(PEPPER))
    value = seal(aead, _session())
    assert unseal(aead, value) == _session()
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    for secret in (TOKEN, "dr-aigerim", "c" * 43):
        assert secret not in value and secret.encode() not in raw
    assert seal(aead, _session()) != value  # a fresh nonce each time
    other = AESGCM(session_key(PEPPER + b"-rotated"))
    assert unseal(other, value) is None  # another pepper (another deployment) cannot read or accept it
    assert session_key(PEPPER) != PEPPER and len(session_key(PEPPER)) == 32


def test_a_tampered_truncated_expired_or_oversized_cookie_is_no_session() -> None:
    aead = AESGCM(session_key(PEPPER))
    value = seal(aead, _session())
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    # Flip bits of the sealed bytes (nonce, ciphertext, tag), not base64 characters: the last character of an
    # unpadded base64 text carries bits no byte uses, so changing it may leave the bytes unchanged.
    for i in (0, 5, 20, len(raw) - 1):
        flipped = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        assert unseal(aead, base64.urlsafe_b64encode(flipped).decode().rstrip("=")) is None, i
    assert unseal(aead, value[:-4]) is None
    assert unseal(aead, "") is None and unseal(aead, None) is None and unseal(aead, "!!!") is None
    assert unseal(aead, "A" * 5000) is None
    expired = seal(aead, _session(expires=int(time.time()) - 1))
    assert unseal(aead, expired) is None
    assert unseal(aead, value, now=time.time() + 61) is None
    anonymous = seal(aead, _session(token=None, name=None, lang="ru"))
    opened = unseal(aead, anonymous)
    assert opened is not None and not opened.signed_in and opened.lang == "ru"

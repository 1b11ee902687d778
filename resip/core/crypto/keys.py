"""AEAD cipher suites, the v2 key schedule and key-usage limits (PROTOCOL.md section 3).

Pure functions of their inputs: no clock, no randomness. Invariants:

- **Key separation.** :func:`derive_initial_secret` binds the session id and the
  direction into the salt and info, so the client's ``c2s`` keys and the server's
  ``s2c`` keys never coincide, also across sessions sharing a secret by mistake.
- **Epochs form a chain.** ``secret[d][e+1]`` is derived from ``secret[d][e]``; an
  epoch's keys cannot be derived from a later one, so discarding old keys is final.
- :class:`KeyLimits` can only make a sender update or stop *earlier* than the
  defaults; it never permits a nonce to be reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from resip.core.crypto.header import MAX_COUNTER

SESSION_SECRET_SIZE = 32
KEY_SIZE = 32
IV_SIZE = 12

_SALT_PREFIX = b"resip v2"
_INFO_C2S = b"resip v2 c2s"
_INFO_S2C = b"resip v2 s2c"
_LABEL_KEY = b"resip key"
_LABEL_IV = b"resip iv"
_LABEL_KU = b"resip ku"

Aead = AESGCM | ChaCha20Poly1305


class Suite(IntEnum):
    """Cipher suite numbers as sent by the session API (PROTOCOL.md section 3)."""

    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2


_AEAD_CLASSES: dict[Suite, type[AESGCM] | type[ChaCha20Poly1305]] = {
    Suite.AES_256_GCM: AESGCM,
    Suite.CHACHA20_POLY1305: ChaCha20Poly1305,
}


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """When a sender updates its keys and when a receiver gives up (section 3.3).

    ``max_counter`` lowers the counter exhaustion point; it exists so tests can reach
    exhaustion quickly and can only make a sender stop *earlier* (never reuse a nonce).
    """

    update_after_packets: int = 2**24
    update_after_seconds: float = 3600.0
    old_key_discard_seconds: float = 10.0
    max_failed_decrypts: int = 2**36
    max_counter: int = MAX_COUNTER

    def __post_init__(self) -> None:
        if self.update_after_packets < 1:
            raise ValueError("update_after_packets must be >= 1")
        if not self.update_after_seconds > 0:
            raise ValueError("update_after_seconds must be > 0")
        if not self.old_key_discard_seconds >= 0:
            raise ValueError("old_key_discard_seconds must be >= 0")
        if self.max_failed_decrypts < 1:
            raise ValueError("max_failed_decrypts must be >= 1")
        if not 0 <= self.max_counter <= MAX_COUNTER:
            raise ValueError("max_counter must be 0..2^48-1")


def derive_initial_secret(session_secret: bytes, session_id: bytes, from_server: bool) -> bytes:
    """``secret[d][0]`` of section 3: HKDF-SHA256 extract+expand, 32 bytes."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=_SALT_PREFIX + session_id,
        info=_INFO_S2C if from_server else _INFO_C2S,
    ).derive(session_secret)


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    # HKDFExpand objects are single-use, hence one per label.
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=label).derive(secret)


def derive_epoch_keys(secret: bytes) -> tuple[bytes, bytes, bytes]:
    """``(key[d][e], iv[d][e], secret[d][e+1])`` from ``secret[d][e]`` (section 3)."""
    return (
        _expand(secret, _LABEL_KEY, KEY_SIZE),
        _expand(secret, _LABEL_IV, IV_SIZE),
        _expand(secret, _LABEL_KU, 32),
    )


class EpochKeys:
    """AEAD object, IV (as an int, for the nonce XOR) and next secret of one epoch."""

    __slots__ = ("aead", "epoch", "iv", "next_secret")

    def __init__(self, suite: Suite, secret: bytes, epoch: int) -> None:
        key, iv, next_secret = derive_epoch_keys(secret)
        self.aead: Aead = _AEAD_CLASSES[suite](key)
        self.iv = int.from_bytes(iv)
        self.next_secret = next_secret
        self.epoch = epoch

    def following(self, suite: Suite) -> EpochKeys:
        """The keys of the next epoch (derived now: callers cache the result)."""
        return EpochKeys(suite, self.next_secret, self.epoch + 1)

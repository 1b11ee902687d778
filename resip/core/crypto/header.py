"""The v2 outer packet: its sizes, the 16-byte header and header protection (PROTOCOL.md §2).

A datagram is ``header (16) || AEAD ciphertext``; bytes 1..15 of the header are
masked with AES-256-ECB of the first ciphertext block (as in QUIC). Invariants:

- :meth:`HeaderProtection.unmask_untrusted` raises only
  :class:`~resip.core.errors.WireError` (size outside 34..65 535, version other than 2,
  unknown key id, reserved flag bits), and what it returns is *not* authenticated:
  the AEAD in :mod:`resip.core.crypto.protector` authenticates the unmasked header as
  associated data.
- Unmasking is deterministic (keys never change after construction, and an ECB
  encryptor fed whole blocks has no state). So the server unmasks a datagram once, to
  route it, and hands that :class:`Header` to the session, whose
  :meth:`~resip.core.crypto.PacketProtector.open_untrusted` takes it instead of unmasking
  again: an explicit hand-over, no cache.
- The per-packet paths work on the 15 masked bytes as one integer, ``flags << 112 |
  session id << 48 | counter``; ``int.to_bytes``/``int.from_bytes`` are called without
  a byte order because since Python 3.11 it defaults to big-endian, the wire order,
  and skipping the argument is measurably cheaper (``scripts/bench_codec.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from resip.core.errors import WireError

VERSION = 2
HEADER_SIZE = 16
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE
MIN_INNER = 2  # records_len alone
MIN_DATAGRAM = OVERHEAD + MIN_INNER
MAX_DATAGRAM = 65535
MAX_INNER = MAX_DATAGRAM - OVERHEAD
MAX_COUNTER = 2**48 - 1
SESSION_ID_SIZE = 8
HP_KEY_SIZE = 32

FLAG_FROM_SERVER = 0x02
FLAG_KEY_PHASE = 0x01
FLAGS_RESERVED = 0xFC
COUNTER_MASK = MAX_COUNTER

new_tuple = tuple.__new__
"""Builds a named tuple without its ``__new__`` wrapper: one per packet, so it counts."""


class Header(NamedTuple):
    """The 16-byte v2 packet header, unmasked (PROTOCOL.md section 2).

    A named tuple rather than a frozen dataclass: one is built per received packet and a
    frozen dataclass costs several times more to construct (measured by bench_codec.py).
    """

    key_id: int
    from_server: bool
    key_phase: int
    session_id: bytes
    counter: int

    def pack(self) -> bytes:
        """The 16 unmasked header bytes; this is also the AEAD associated data.

        Raises ``ValueError`` if a field is out of range (only possible for headers built by
        hand: :meth:`HeaderProtection.unmask_untrusted` yields valid ones).
        """
        if not 0 <= self.key_id <= 15:
            raise ValueError(f"key_id must be 0..15, not {self.key_id}")
        if self.key_phase not in (0, 1):
            raise ValueError(f"key_phase must be 0 or 1, not {self.key_phase}")
        if len(self.session_id) != SESSION_ID_SIZE:
            raise ValueError("session_id must be 8 bytes")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise ValueError(f"counter must be 0..2^48-1, not {self.counter}")
        flags = (FLAG_FROM_SERVER if self.from_server else 0) | self.key_phase
        return (
            bytes(((VERSION << 4) | self.key_id, flags))
            + bytes(self.session_id)
            + self.counter.to_bytes(6)
        )


def _ecb_encryptor(key: bytes) -> CipherContext:
    # ECB is the point here: one block, keyed per server, used as a PRF to derive a mask
    # (QUIC header protection does the same); it never encrypts data.
    return Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305


class HeaderProtection:
    """Server-wide header-protection keys (PROTOCOL.md section 2.1).

    ``keys`` maps key ids 0..15 to 32-byte AES-256 keys; ``current_key_id`` is the one new
    sessions are given. One AES-ECB encryptor is cached per key: ECB has no chaining state,
    so an encryptor fed whole blocks can be reused forever.
    """

    # PacketProtector (same package) reads _by_first_byte and _encryptor directly: the
    # receive path is measured per packet and an accessor call would show.
    __slots__ = ("_by_first_byte", "_current_key_id", "_key_ids")

    def __init__(self, keys: Mapping[int, bytes], current_key_id: int) -> None:
        if not keys:
            raise ValueError("at least one header-protection key is required")
        by_first_byte: dict[int, CipherContext] = {}
        for key_id, key in keys.items():
            if not 0 <= key_id <= 15:
                raise ValueError(f"header-protection key ids are 0..15, not {key_id}")
            if len(key) != HP_KEY_SIZE:
                raise ValueError("header-protection keys are 32 bytes")
            # Keyed by the whole clear first byte, so one dict lookup checks the version
            # nibble and the key id together.
            by_first_byte[(VERSION << 4) | key_id] = _ecb_encryptor(bytes(key))
        if current_key_id not in keys:
            raise ValueError(f"current key id {current_key_id} has no key")
        self._by_first_byte = by_first_byte
        self._current_key_id = current_key_id
        self._key_ids = frozenset(keys)

    @property
    def current_key_id(self) -> int:
        """The key id given to new sessions and used by default for sealing."""
        return self._current_key_id

    @property
    def key_ids(self) -> frozenset[int]:
        """All key ids this instance can unmask."""
        return self._key_ids

    def _encryptor(self, first_byte: int) -> CipherContext | None:
        return self._by_first_byte.get(first_byte)

    def mask(self, header: bytes, ciphertext: bytes) -> bytes:
        """Mask the 16 unmasked ``header`` bytes with the sample ``ciphertext[0:16]``.

        The key is the one named by the header's key id. Returns the 16 masked header bytes.
        """
        if len(header) != HEADER_SIZE or len(ciphertext) < TAG_SIZE:
            raise ValueError("need a 16-byte header and at least 16 bytes of ciphertext")
        enc = self._by_first_byte.get(header[0])
        if enc is None:
            raise ValueError("header names an unknown version or key id")
        mask = int.from_bytes(enc.update(ciphertext[:16])) >> 8
        rest = int.from_bytes(header[1:16]) ^ mask
        return header[:1] + rest.to_bytes(15)

    def _unmask(self, datagram: bytes) -> tuple[int, bytes]:
        """Shared fast path: (flags/session id/counter as one 120-bit int, unmasked header)."""
        size = len(datagram)
        if size < MIN_DATAGRAM or size > MAX_DATAGRAM:
            raise WireError(f"datagram of {size} bytes is outside {MIN_DATAGRAM}..{MAX_DATAGRAM}")
        enc = self._by_first_byte.get(datagram[0])
        if enc is None:
            raise WireError("unknown version or header-protection key id")
        mask = int.from_bytes(enc.update(datagram[16:32])) >> 8
        rest = int.from_bytes(datagram[1:16]) ^ mask
        if (rest >> 112) & FLAGS_RESERVED:
            raise WireError("reserved packet flag bits set")
        return rest, datagram[:1] + rest.to_bytes(15)

    def unmask_untrusted(self, datagram: bytes) -> Header:
        """Check and unmask the header of a received datagram (step 1 of section 3.1).

        Raises :class:`WireError` if the datagram is shorter than 34 or longer than 65 535
        bytes, the version nibble is not 2, the key id is unknown, or a reserved flag bit is
        set after unmasking. The header is *not* authenticated yet.
        """
        if type(datagram) is not bytes:  # bytearray/memoryview from a socket buffer
            datagram = bytes(datagram)
        rest, header = self._unmask(datagram)
        return _header(datagram, rest, header)


def _header(datagram: bytes, rest: int, header: bytes) -> Header:
    flags = rest >> 112
    return new_tuple(
        Header,
        (
            datagram[0] & 0x0F,
            bool(flags & FLAG_FROM_SERVER),
            flags & FLAG_KEY_PHASE,
            header[2:10],
            rest & COUNTER_MASK,
        ),
    )

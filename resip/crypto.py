"""ResIP v2 packet protection: AEAD cipher suites, key schedule, header protection, replay window.

This module implements docs/PROTOCOL.md sections 2 and 3 and nothing else. It is sans-IO:
no sockets, no clock reads (every time-dependent call takes ``now``), no randomness (all
secrets are passed in).

Contract and invariants:

- **Nonce uniqueness.** Each direction of a session has one 48-bit packet counter that starts
  at 0, grows by one per sealed packet and never resets, also not across key updates. The
  counter is consumed *before* the AEAD runs, so no failure path can reuse it. Sealing past
  ``KeyLimits.max_counter`` (default ``MAX_COUNTER = 2**48 - 1``) raises
  :class:`~resip.errors.LocalProtocolError`; the session must close.
- **Key separation.** The client seals with the ``c2s`` keys, the server with ``s2c``; the
  direction bit of the header is authenticated, so a packet reflected back at its sender fails.
- **Nothing changes before authentication.** :meth:`PacketProtector.open_untrusted` changes
  protocol state (replay window, receive epoch, previous-key window) only after the AEAD tag
  verified and the replay window accepted the counter. Forgeries only bump the
  ``failed_decrypts`` statistic (needed for the integrity limit) and may fill a
  deterministic key-derivation cache.
- **Untrusted input.** ``*_untrusted`` functions raise only :class:`~resip.errors.WireError`
  (malformed bytes) or :class:`~resip.errors.DecryptError` (bad tag, wrong direction, wrong
  session, replay, stale epoch) whatever bytes they get.

The per-packet paths (:meth:`PacketProtector.seal`, :meth:`PacketProtector.open_untrusted`) are
measured by ``scripts/bench_codec.py``; they work on precomputed integers rather than on
:class:`Header` objects for that reason. ``int.to_bytes``/``int.from_bytes`` are called without
a byte order: since Python 3.11 it defaults to big-endian, the wire order, and skipping the
argument is measurably cheaper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from resip.errors import DecryptError, LocalProtocolError, WireError

__all__ = [
    "HEADER_SIZE",
    "MAX_COUNTER",
    "MAX_DATAGRAM",
    "MAX_INNER",
    "MIN_DATAGRAM",
    "MIN_INNER",
    "OVERHEAD",
    "SESSION_ID_SIZE",
    "SESSION_SECRET_SIZE",
    "TAG_SIZE",
    "VERSION",
    "Header",
    "HeaderProtection",
    "KeyLimits",
    "Opened",
    "PacketProtector",
    "ReceiveState",
    "ReplayWindow",
    "Suite",
    "derive_epoch_keys",
    "derive_initial_secret",
]

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
SESSION_SECRET_SIZE = 32
HP_KEY_SIZE = 32
KEY_SIZE = 32
IV_SIZE = 12

_FLAG_FROM_SERVER = 0x02
_FLAG_KEY_PHASE = 0x01
_FLAGS_RESERVED = 0xFC
_COUNTER_MASK = MAX_COUNTER
_SID_MASK = 2**64 - 1

_SALT_PREFIX = b"resip v2"
_INFO_C2S = b"resip v2 c2s"
_INFO_S2C = b"resip v2 s2c"
_LABEL_KEY = b"resip key"
_LABEL_IV = b"resip iv"
_LABEL_KU = b"resip ku"

_Aead = AESGCM | ChaCha20Poly1305


class Suite(IntEnum):
    """Cipher suite numbers as sent by the session API (PROTOCOL.md section 3)."""

    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2


_AEAD_CLASSES: dict[Suite, type[AESGCM] | type[ChaCha20Poly1305]] = {
    Suite.AES_256_GCM: AESGCM,
    Suite.CHACHA20_POLY1305: ChaCha20Poly1305,
}


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
        flags = (_FLAG_FROM_SERVER if self.from_server else 0) | self.key_phase
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
        if (rest >> 112) & _FLAGS_RESERVED:
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
        flags = rest >> 112
        return _new_tuple(
            Header,
            (
                datagram[0] & 0x0F,
                bool(flags & _FLAG_FROM_SERVER),
                flags & _FLAG_KEY_PHASE,
                header[2:10],
                rest & _COUNTER_MASK,
            ),
        )


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


class Opened(NamedTuple):
    """An authenticated, non-replayed packet: its header, inner plaintext and key epoch."""

    header: Header
    plaintext: bytes
    epoch: int


class ReceiveState(NamedTuple):
    """Snapshot of everything a received packet may change (for tests and diagnostics)."""

    epoch: int
    first_counter_of_epoch: int
    largest_in_epoch: int
    largest_received: int
    replay_bitmap: int
    previous_key_until: float | None


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


class _EpochKeys:
    """AEAD object, IV (as an int, for the nonce XOR) and next secret of one epoch."""

    __slots__ = ("aead", "epoch", "iv", "next_secret")

    def __init__(self, suite: Suite, secret: bytes, epoch: int) -> None:
        key, iv, next_secret = derive_epoch_keys(secret)
        self.aead: _Aead = _AEAD_CLASSES[suite](key)
        self.iv = int.from_bytes(iv)
        self.next_secret = next_secret
        self.epoch = epoch

    def following(self, suite: Suite) -> _EpochKeys:
        return _EpochKeys(suite, self.next_secret, self.epoch + 1)


class ReplayWindow:
    """Sliding anti-replay window over 48-bit counters (section 3.2, after RFC 6479).

    Keeps the largest counter accepted and one bit for each of the ``SIZE`` counters ending
    at it. A counter ``SIZE - 1`` below the largest is still inside; ``SIZE`` below is too
    old. Counters outside 0..MAX_COUNTER are always "seen".

    The bits live in a ring of 64-bit words indexed by ``counter >> 6`` (RFC 6479): moving the
    window forward clears the words it passes instead of shifting a 4096-bit integer, which
    made the common in-order case several times cheaper.
    """

    SIZE = 4096
    _WORDS = 128  # a power of two >= SIZE / 64 + 1, so the window never wraps onto itself
    _WORD_MASK = _WORDS - 1

    __slots__ = ("_largest", "_ring")

    def __init__(self) -> None:
        self._largest = -1
        self._ring = [0] * self._WORDS

    @property
    def largest(self) -> int:
        """Largest counter accepted so far, -1 before the first."""
        return self._largest

    @property
    def bitmap(self) -> int:
        """Bit ``i`` set means counter ``largest - i`` was accepted (diagnostics; not fast)."""
        ring, largest, bitmap = self._ring, self._largest, 0
        for i in range(min(self.SIZE, largest + 1)):
            counter = largest - i
            if (ring[(counter >> 6) & self._WORD_MASK] >> (counter & 63)) & 1:
                bitmap |= 1 << i
        return bitmap

    def seen(self, counter: int) -> bool:
        """True if ``counter`` must be refused: already accepted, or left of the window."""
        diff = self._largest - counter
        if diff < 0:
            return counter > MAX_COUNTER
        if diff >= self.SIZE:
            return True
        return bool((self._ring[(counter >> 6) & self._WORD_MASK] >> (counter & 63)) & 1)

    def mark(self, counter: int) -> None:
        """Record ``counter`` as received; counters left of the window are ignored."""
        if not 0 <= counter <= MAX_COUNTER:
            raise ValueError(f"counter {counter} is outside 0..2^48-1")
        self.accept(counter)

    def accept(self, counter: int) -> bool:
        """``not seen(counter)``, and if so ``mark(counter)``, in one step (the hot path)."""
        largest = self._largest
        ring = self._ring
        if counter > largest:
            if counter > MAX_COUNTER:
                return False
            word = counter >> 6
            current = largest >> 6
            if word != current:
                if word - current >= self._WORDS:
                    ring[:] = [0] * self._WORDS
                else:
                    for index in range(current + 1, word + 1):
                        ring[index & self._WORD_MASK] = 0
            ring[word & self._WORD_MASK] |= 1 << (counter & 63)
            self._largest = counter
            return True
        if largest - counter >= self.SIZE or counter < 0:
            return False
        index = (counter >> 6) & self._WORD_MASK
        bit = 1 << (counter & 63)
        bits = ring[index]
        if bits & bit:
            return False
        ring[index] = bits | bit
        return True


_KIND_CURRENT = 0
_KIND_NEXT = 1
_KIND_PREVIOUS = 2
_PHASE_IN_SID_WORD = 1 << 64  # key-phase bit of ``rest >> 48`` (flags << 64 | session id)
_new_tuple = tuple.__new__


class PacketProtector:
    """One direction pair of one session: seals our packets, opens the peer's.

    ``is_server`` picks the direction: the server seals with the ``s2c`` keys and sets the
    direction bit, the client seals with ``c2s``; each opens only the other's packets.
    Outgoing headers carry the header-protection key id ``hp_key_id`` (default: the
    ``current_key_id`` of ``hp`` at construction, i.e. the id the session API handed out).
    ``now`` is the time at which send epoch 0 starts. ``nonce_audit(epoch, nonce)`` is called
    on every seal, so tests can prove nonce uniqueness.
    """

    __slots__ = (
        "_failed",
        "_hp_by_first_byte",
        "_limits",
        "_max_failed",
        "_nonce_audit",
        "_replay",
        "_rx",
        "_rx_expect",
        "_rx_first",
        "_rx_largest",
        "_rx_next",
        "_rx_phase",
        "_rx_prev",
        "_rx_prev_until",
        "_session_id",
        "_suite",
        "_tx",
        "_tx_b0",
        "_tx_confirmed",
        "_tx_deadline",
        "_tx_encrypt",
        "_tx_epoch_first",
        "_tx_header_base",
        "_tx_iv",
        "_tx_mask",
        "_tx_next",
        "_tx_slow_at",
        "_tx_update_at",
    )

    def __init__(
        self,
        *,
        suite: Suite,
        session_id: bytes,
        session_secret: bytes,
        is_server: bool,
        hp: HeaderProtection,
        limits: KeyLimits = KeyLimits(),  # frozen, so one shared default is safe
        now: float = 0.0,
        nonce_audit: Callable[[int, bytes], None] | None = None,
        hp_key_id: int | None = None,
    ) -> None:
        suite = Suite(suite)
        if len(session_id) != SESSION_ID_SIZE:
            raise ValueError("session_id must be 8 bytes")
        if len(session_secret) != SESSION_SECRET_SIZE:
            raise ValueError("session_secret must be 32 bytes")
        key_id = hp.current_key_id if hp_key_id is None else hp_key_id
        ecb = hp._encryptor((VERSION << 4) | key_id) if 0 <= key_id <= 15 else None
        if ecb is None:
            raise ValueError(f"header-protection key id {key_id} is unknown to hp")
        self._suite = suite
        self._session_id = bytes(session_id)
        sid_int = int.from_bytes(session_id)
        self._limits = limits
        self._max_failed = limits.max_failed_decrypts
        self._nonce_audit = nonce_audit
        # Shared with hp (not copied), so the receive path needs no extra method call.
        self._hp_by_first_byte = hp._by_first_byte

        tx_secret = derive_initial_secret(session_secret, session_id, from_server=is_server)
        rx_secret = derive_initial_secret(session_secret, session_id, from_server=not is_server)

        # Send side. The 15 header bytes after the clear first byte are one int,
        # flags << 112 | session id << 48 | counter, so building a header is one OR.
        self._tx_b0 = bytes(((VERSION << 4) | key_id,))
        self._tx_mask = ecb.update
        self._tx_header_base = ((_FLAG_FROM_SERVER if is_server else 0) << 112) | (sid_int << 48)
        self._tx_next = 0
        self._tx_epoch_first = 0
        # The receiver starts in epoch 0, so epoch 0 needs no confirmation.
        self._tx_confirmed = True
        self._tx_update_at = 0
        self._tx_slow_at = 0
        self._tx_deadline = 0.0
        self._install_tx(_EpochKeys(suite, tx_secret, 0), now)

        # Receive side. ``_rx_expect`` is ``rest >> 48`` of a packet for us with the phase
        # bit forced on: one comparison checks reserved bits, direction and session id.
        self._rx = _EpochKeys(suite, rx_secret, 0)
        self._rx_phase = 0
        self._rx_expect = (
            ((0 if is_server else _FLAG_FROM_SERVER) << 64) | _PHASE_IN_SID_WORD | sid_int
        )
        self._rx_first = 0
        self._rx_largest = -1
        self._rx_next: _EpochKeys | None = None
        self._rx_prev: _EpochKeys | None = None
        self._rx_prev_until = 0.0
        self._replay = ReplayWindow()
        self._failed = 0

    # ----------------------------------------------------------------- properties

    @property
    def suite(self) -> Suite:
        """The session's cipher suite."""
        return self._suite

    @property
    def session_id(self) -> bytes:
        """The 8-byte session id."""
        return self._session_id

    @property
    def limits(self) -> KeyLimits:
        """The key-usage limits in force."""
        return self._limits

    @property
    def send_epoch(self) -> int:
        """Key epoch of the last packet sealed (before any update the next seal may make)."""
        return self._tx.epoch

    @property
    def recv_epoch(self) -> int:
        """Current receive key epoch."""
        return self._rx.epoch

    @property
    def packets_sealed(self) -> int:
        """Packets sealed in this session (equal to :attr:`next_counter`)."""
        return self._tx_next

    @property
    def next_counter(self) -> int:
        """Counter the next sealed packet will carry."""
        return self._tx_next

    @property
    def failed_decrypts(self) -> int:
        """Received packets that failed AEAD authentication (the integrity-limit count)."""
        return self._failed

    @property
    def integrity_limit_reached(self) -> bool:
        """True once ``failed_decrypts`` reached ``max_failed_decrypts``: close the session."""
        return self._failed >= self._max_failed

    @property
    def largest_received(self) -> int:
        """Largest authentic counter received, -1 before the first."""
        return self._replay.largest

    def receive_state(self) -> ReceiveState:
        """Snapshot of the receive-side state (a forgery must leave it unchanged)."""
        return ReceiveState(
            self._rx.epoch,
            self._rx_first,
            self._rx_largest,
            self._replay.largest,
            self._replay.bitmap,
            self._rx_prev_until if self._rx_prev is not None else None,
        )

    # ----------------------------------------------------------------- sending

    def _install_tx(self, keys: _EpochKeys, now: float) -> None:
        limits = self._limits
        self._tx = keys
        self._tx_encrypt = keys.aead.encrypt
        self._tx_iv = keys.iv
        self._tx_header_base = (self._tx_header_base & ~(_FLAG_KEY_PHASE << 112)) | (
            (keys.epoch & 1) << 112
        )
        self._tx_epoch_first = self._tx_next
        self._tx_confirmed = keys.epoch == 0
        self._tx_update_at = self._tx_next + limits.update_after_packets
        # One comparison on the hot path covers both the packet limit and exhaustion.
        self._tx_slow_at = min(self._tx_update_at, limits.max_counter + 1)
        self._tx_deadline = now + limits.update_after_seconds

    def on_peer_acked(self, counter: int) -> None:
        """The peer acknowledged our packet ``counter``: it follows our current epoch if
        the packet was sealed in it. Only then may the next automatic key update happen."""
        if counter >= self._tx_epoch_first:
            self._tx_confirmed = True

    @property
    def send_epoch_confirmed(self) -> bool:
        """Whether the peer has acknowledged a packet of our current send epoch."""
        return self._tx_confirmed

    def update_keys(self, *, now: float) -> None:
        """Move our send side to the next key epoch now."""
        self._install_tx(self._tx.following(self._suite), now)

    def seal(self, inner: bytes, *, now: float) -> bytes:
        """Protect ``inner`` (2..65 503 bytes) as the next datagram of our direction.

        Updates the send keys first if the epoch reached its packet or time limit. Raises
        :class:`LocalProtocolError` if ``inner`` has a bad size or the counter is exhausted.
        """
        if not MIN_INNER <= len(inner) <= MAX_INNER:
            raise LocalProtocolError(
                f"inner plaintext of {len(inner)} bytes is outside 2..{MAX_INNER}"
            )
        counter = self._tx_next
        if counter >= self._tx_slow_at or now >= self._tx_deadline:
            if counter > self._limits.max_counter:
                raise LocalProtocolError("packet counter exhausted: close the session")
            due = counter >= self._tx_update_at or now >= self._tx_deadline
            # QUIC's rule (RFC 9001 §6.1): never move two epochs ahead of a peer that has
            # not yet shown it follows, or a long outage with hourly updates leaves it
            # unable to find our key. Past 4x the packet limit (still 2^2.6 below the
            # AEAD limit) safety wins over liveness.
            forced = counter >= self._tx_epoch_first + 4 * self._limits.update_after_packets
            if due and (self._tx_confirmed or forced):
                self.update_keys(now=now)
        # Consume the counter before the AEAD runs: no path may ever reuse it.
        self._tx_next = counter + 1
        nonce = (self._tx_iv ^ counter).to_bytes(12)
        rest = self._tx_header_base | counter
        b0 = self._tx_b0
        ciphertext = self._tx_encrypt(nonce, inner, b0 + rest.to_bytes(15))
        mask = int.from_bytes(self._tx_mask(ciphertext[:16])) >> 8
        if self._nonce_audit is not None:
            self._nonce_audit(self._tx.epoch, nonce)
        return b0 + (rest ^ mask).to_bytes(15) + ciphertext

    # ----------------------------------------------------------------- receiving

    def open_untrusted(self, datagram: bytes, *, now: float) -> Opened:
        """Unmask, authenticate and replay-check a received datagram (section 3.1).

        Raises :class:`WireError` for malformed bytes and :class:`DecryptError` for a bad
        tag, the wrong direction or session id, a replay or a stale key epoch. State changes
        only when the packet is authentic and new.
        """
        if not MIN_DATAGRAM <= len(datagram) <= MAX_DATAGRAM:
            raise WireError(f"datagram of {len(datagram)} bytes is outside 34..65535")
        enc = self._hp_by_first_byte.get(datagram[0])
        if enc is None:
            raise WireError("unknown version or header-protection key id")
        rest = int.from_bytes(datagram[1:16]) ^ (int.from_bytes(enc.update(datagram[16:32])) >> 8)
        if (rest >> 48) | _PHASE_IN_SID_WORD != self._rx_expect:
            self._reject_header(rest)
        return self._open(rest, datagram[:1] + rest.to_bytes(15), datagram, now, None)

    def open_with_header_untrusted(self, header: Header, datagram: bytes, *, now: float) -> Opened:
        """As :meth:`open_untrusted`, for a ``header`` already unmasked from ``datagram``.

        The server endpoint unmasks once to find the session, then calls this. The header is
        authenticated here as associated data, so a header that does not belong to
        ``datagram`` fails with :class:`DecryptError`.
        """
        if not MIN_DATAGRAM <= len(datagram) <= MAX_DATAGRAM:
            raise WireError(f"datagram of {len(datagram)} bytes is outside 34..65535")
        try:
            aad = header.pack()
        except (ValueError, TypeError, AttributeError) as exc:
            raise WireError(f"invalid header: {exc}") from None
        rest = int.from_bytes(aad[1:])
        if (rest >> 48) | _PHASE_IN_SID_WORD != self._rx_expect:
            self._reject_header(rest)
        return self._open(rest, aad, datagram, now, header)

    def _reject_header(self, rest: int) -> None:
        """Say why a header is not for us (cold path: the fast check already failed)."""
        flags = rest >> 112
        if flags & _FLAGS_RESERVED:
            raise WireError("reserved packet flag bits set")
        if ((flags & _FLAG_FROM_SERVER) << 64) != self._rx_expect & (_FLAG_FROM_SERVER << 64):
            raise DecryptError("packet has our own direction")
        raise DecryptError("packet belongs to another session")

    def _open(
        self, rest: int, aad: bytes, datagram: bytes, now: float, header: Header | None
    ) -> Opened:
        if self._failed >= self._max_failed:
            raise DecryptError("integrity limit reached")
        counter = rest & _COUNTER_MASK
        phase = (rest >> 112) & _FLAG_KEY_PHASE

        # Choose the key epoch (section 3.3). Phases alternate, so a phase other than the
        # current one is the next epoch if the counter is above everything seen in this
        # epoch, and the previous one if it is below this epoch's first counter.
        if phase == self._rx_phase:
            keys = self._rx
            kind = _KIND_CURRENT
        elif counter > self._rx_largest:
            next_keys = self._rx_next
            if next_keys is None:
                # Deterministic cache only: deriving the next keys is not a state change.
                next_keys = self._rx_next = self._rx.following(self._suite)
            keys = next_keys
            kind = _KIND_NEXT
        elif counter < self._rx_first and self._rx_prev is not None and now < self._rx_prev_until:
            keys = self._rx_prev
            kind = _KIND_PREVIOUS
        else:
            raise DecryptError("stale key epoch")

        try:
            plaintext = keys.aead.decrypt(
                (keys.iv ^ counter).to_bytes(12), datagram[HEADER_SIZE:], aad
            )
        except InvalidTag:
            self._failed += 1
            raise DecryptError("authentication failed") from None
        # The replay check is the last check: accept() marks the counter only if it passes.
        if not self._replay.accept(counter):
            raise DecryptError("replayed or too old")

        # Authentic and new: only now may the key epoch move.
        if kind == _KIND_CURRENT:
            if counter > self._rx_largest:
                self._rx_largest = counter
            elif counter < self._rx_first:
                self._rx_first = counter
        elif kind == _KIND_NEXT:
            self._rx_prev = self._rx
            self._rx_prev_until = now + self._limits.old_key_discard_seconds
            self._rx = keys
            self._rx_next = None
            self._rx_phase = phase
            self._rx_first = counter
            self._rx_largest = counter
        if self._rx_prev is not None and now >= self._rx_prev_until:
            self._rx_prev = None  # free the expired key; it would be refused anyway

        if header is None:
            header = _new_tuple(
                Header,
                (
                    aad[0] & 0x0F,
                    bool(rest & (_FLAG_FROM_SERVER << 112)),
                    phase,
                    aad[2:10],
                    counter,
                ),
            )
        return _new_tuple(Opened, (header, plaintext, keys.epoch))

"""PacketProtector: seals one session's outgoing packets and opens the peer's (PROTOCOL.md §3).

Contract and invariants:

- **Nonce uniqueness.** Each direction of a session has one 48-bit packet counter that starts
  at 0, grows by one per sealed packet and never resets, also not across key updates. The
  counter is consumed *before* the AEAD runs, so no failure path can reuse it. Sealing past
  ``KeyLimits.max_counter`` (default ``MAX_COUNTER = 2**48 - 1``) raises
  :class:`~resip.core.errors.LocalProtocolError`; the session must close.
- **Key separation.** The client seals with the ``c2s`` keys, the server with ``s2c``; the
  direction bit of the header is authenticated, so a packet reflected back at its sender fails.
- **Nothing changes before authentication.** :meth:`PacketProtector.open_untrusted` changes
  protocol state (replay window, receive epoch, previous-key window) only after the AEAD tag
  verified and the replay window accepted the counter. Forgeries only bump the
  ``failed_decrypts`` statistic (needed for the integrity limit) and may fill a
  deterministic key-derivation cache.
- **One unmasking per datagram.** A datagram the server already unmasked to route it is
  opened with that :class:`~resip.core.crypto.Header` (``open_untrusted(..., header=)``);
  every check after unmasking is the same as for one unmasked here.
- **Untrusted input.** :meth:`PacketProtector.open_untrusted` raises only
  :class:`~resip.core.errors.WireError` (malformed bytes) or
  :class:`~resip.core.errors.DecryptError` (bad tag, wrong direction, wrong session, replay,
  stale epoch) whatever bytes it gets.

The per-packet paths (:meth:`PacketProtector.seal`, :meth:`PacketProtector.open_untrusted`) are
measured by ``scripts/bench_codec.py``; they work on precomputed integers rather than on
:class:`~resip.core.crypto.Header` objects for that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from cryptography.exceptions import InvalidTag

from resip.core.crypto.header import (
    COUNTER_MASK,
    FLAG_FROM_SERVER,
    FLAG_KEY_PHASE,
    FLAGS_RESERVED,
    HEADER_SIZE,
    MAX_DATAGRAM,
    MAX_INNER,
    MIN_DATAGRAM,
    MIN_INNER,
    SESSION_ID_SIZE,
    VERSION,
    Header,
    HeaderProtection,
    new_tuple,
)
from resip.core.crypto.keys import (
    SESSION_SECRET_SIZE,
    EpochKeys,
    KeyLimits,
    Suite,
    derive_initial_secret,
)
from resip.core.crypto.replay import ReplayWindow
from resip.core.errors import DecryptError, LocalProtocolError, WireError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import CipherContext

_KIND_CURRENT = 0
_KIND_NEXT = 1
_KIND_PREVIOUS = 2
_PHASE_IN_SID_WORD = 1 << 64  # key-phase bit of ``rest >> 48`` (flags << 64 | session id)
_DEFAULT_LIMITS = KeyLimits()  # frozen, so one shared default is safe


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
        "_hp",
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
        limits: KeyLimits = _DEFAULT_LIMITS,
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
        self._hp = hp
        # Shared with hp (not copied), so the receive path needs no extra method call.
        self._hp_by_first_byte = hp._by_first_byte
        tx_secret = derive_initial_secret(session_secret, session_id, from_server=is_server)
        rx_secret = derive_initial_secret(session_secret, session_id, from_server=not is_server)
        self._init_send(EpochKeys(suite, tx_secret, 0), key_id, ecb, is_server, sid_int, now)
        self._init_receive(EpochKeys(suite, rx_secret, 0), is_server, sid_int)

    def _init_send(
        self,
        keys: EpochKeys,
        key_id: int,
        ecb: CipherContext,
        is_server: bool,
        sid_int: int,
        now: float,
    ) -> None:
        # The 15 header bytes after the clear first byte are one int,
        # flags << 112 | session id << 48 | counter, so building a header is one OR.
        self._tx_b0 = bytes(((VERSION << 4) | key_id,))
        self._tx_mask = ecb.update
        self._tx_header_base = ((FLAG_FROM_SERVER if is_server else 0) << 112) | (sid_int << 48)
        self._tx_next = 0
        self._tx_epoch_first = 0
        # The receiver starts in epoch 0, so epoch 0 needs no confirmation.
        self._tx_confirmed = True
        self._tx_update_at = 0
        self._tx_slow_at = 0
        self._tx_deadline = 0.0
        self._install_tx(keys, now)

    def _init_receive(self, keys: EpochKeys, is_server: bool, sid_int: int) -> None:
        # ``_rx_expect`` is ``rest >> 48`` of a packet for us with the phase bit forced
        # on: one comparison checks reserved bits, direction and session id.
        self._rx = keys
        self._rx_phase = 0
        self._rx_expect = (
            ((0 if is_server else FLAG_FROM_SERVER) << 64) | _PHASE_IN_SID_WORD | sid_int
        )
        self._rx_first = 0
        self._rx_largest = -1
        self._rx_next: EpochKeys | None = None
        self._rx_prev: EpochKeys | None = None
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

    def _install_tx(self, keys: EpochKeys, now: float) -> None:
        limits = self._limits
        self._tx = keys
        self._tx_encrypt = keys.aead.encrypt
        self._tx_iv = keys.iv
        self._tx_header_base = (self._tx_header_base & ~(FLAG_KEY_PHASE << 112)) | (
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

    def open_untrusted(
        self, datagram: bytes, *, now: float, header: Header | None = None
    ) -> Opened:
        """Unmask, authenticate and replay-check a received datagram (section 3.1).

        Raises :class:`WireError` for malformed bytes and :class:`DecryptError` for a bad
        tag, the wrong direction or session id, a replay or a stale key epoch. State changes
        only when the packet is authentic and new. ``header``, when given, must be
        :meth:`HeaderProtection.unmask_untrusted` of this very datagram (the server's
        endpoint unmasked it to route it); it is used instead of unmasking again.
        """
        if not MIN_DATAGRAM <= len(datagram) <= MAX_DATAGRAM:
            raise WireError(f"datagram of {len(datagram)} bytes is outside 34..65535")
        if header is not None:
            # The same 120 bits unmasking gives: flags, session id, counter.
            rest = (
                ((FLAG_FROM_SERVER if header.from_server else 0) | header.key_phase) << 112
                | int.from_bytes(header.session_id) << 48
                | header.counter
            )
        else:
            enc = self._hp_by_first_byte.get(datagram[0])
            if enc is None:
                raise WireError("unknown version or header-protection key id")
            rest = int.from_bytes(datagram[1:16]) ^ (
                int.from_bytes(enc.update(datagram[16:32])) >> 8
            )
        if (rest >> 48) | _PHASE_IN_SID_WORD != self._rx_expect:
            self._reject_header(rest)
        return self._open(rest, datagram[:1] + rest.to_bytes(15), datagram, now)

    def _reject_header(self, rest: int) -> None:
        """Say why a header is not for us (cold path: the fast check already failed)."""
        flags = rest >> 112
        if flags & FLAGS_RESERVED:
            raise WireError("reserved packet flag bits set")
        if ((flags & FLAG_FROM_SERVER) << 64) != self._rx_expect & (FLAG_FROM_SERVER << 64):
            raise DecryptError("packet has our own direction")
        raise DecryptError("packet belongs to another session")

    def _open(self, rest: int, aad: bytes, datagram: bytes, now: float) -> Opened:
        if self._failed >= self._max_failed:
            raise DecryptError("integrity limit reached")
        counter = rest & COUNTER_MASK
        phase = (rest >> 112) & FLAG_KEY_PHASE
        # Choose the key epoch (section 3.3); the current one is the common case.
        if phase == self._rx_phase:
            keys = self._rx
            kind = _KIND_CURRENT
        else:
            keys, kind = self._other_epoch(counter, now)

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
            self._enter_next_epoch(keys, phase, counter, now)
        if self._rx_prev is not None and now >= self._rx_prev_until:
            self._rx_prev = None  # free the expired key; it would be refused anyway

        header = new_tuple(
            Header,
            (aad[0] & 0x0F, bool(rest & (FLAG_FROM_SERVER << 112)), phase, aad[2:10], counter),
        )
        return new_tuple(Opened, (header, plaintext, keys.epoch))

    def _other_epoch(self, counter: int, now: float) -> tuple[EpochKeys, int]:
        """Keys for a packet whose phase is not the current epoch's, and which kind they are.

        Phases alternate, so such a packet is of the next epoch if its counter is above
        everything seen in this epoch, and of the previous one if it is below this
        epoch's first counter (while the previous keys are kept).
        """
        if counter > self._rx_largest:
            next_keys = self._rx_next
            if next_keys is None:
                # Deterministic cache only: deriving the next keys is not a state change.
                next_keys = self._rx_next = self._rx.following(self._suite)
            return next_keys, _KIND_NEXT
        if counter < self._rx_first and self._rx_prev is not None and now < self._rx_prev_until:
            return self._rx_prev, _KIND_PREVIOUS
        raise DecryptError("stale key epoch")

    def _enter_next_epoch(self, keys: EpochKeys, phase: int, counter: int, now: float) -> None:
        """An authentic packet of the next epoch: it becomes current, the old one previous."""
        self._rx_prev = self._rx
        self._rx_prev_until = now + self._limits.old_key_discard_seconds
        self._rx = keys
        self._rx_next = None
        self._rx_phase = phase
        self._rx_first = counter
        self._rx_largest = counter

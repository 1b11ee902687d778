"""ResIP v2 packet protection: AEAD cipher suites, key schedule, header protection, replay window.

This package implements docs/PROTOCOL.md sections 2 and 3 and nothing else. It is sans-IO:
no sockets, no clock reads (every time-dependent call takes ``now``), no randomness (all
secrets are passed in).

Contract and invariants (each room's docstring has its own):

- **Nonce uniqueness.** Each direction of a session has one 48-bit packet counter that never
  resets and is consumed before the AEAD runs (:mod:`resip.core.crypto.protector`).
- **Key separation.** Direction and session id are bound into every key
  (:mod:`resip.core.crypto.keys`), and the direction bit of the header is authenticated.
- **Nothing changes before authentication.** Replay window and key epochs move only for an
  authentic, new packet (:mod:`resip.core.crypto.protector`, :mod:`resip.core.crypto.replay`).
- **Untrusted input.** ``*_untrusted`` functions raise only :class:`~resip.core.errors.WireError`
  (malformed bytes) or :class:`~resip.core.errors.DecryptError` (bad tag, wrong direction, wrong
  session, replay, stale epoch) whatever bytes they get.
- **One unmasking per datagram** on the server: the endpoint unmasks to route, and hands
  the :class:`Header` to :meth:`PacketProtector.open_untrusted` (``header=``).

Rooms (this module re-exports their public names):

- :mod:`resip.core.crypto.header`: packet sizes, :class:`Header`, :class:`HeaderProtection`.
- :mod:`resip.core.crypto.keys`: :class:`Suite`, :class:`KeyLimits`, the key schedule.
- :mod:`resip.core.crypto.replay`: :class:`ReplayWindow`.
- :mod:`resip.core.crypto.protector`: :class:`PacketProtector`, :class:`Opened`,
  :class:`ReceiveState`.
"""

from __future__ import annotations

from resip.core.crypto.header import (
    HEADER_SIZE,
    HP_KEY_SIZE,
    MAX_COUNTER,
    MAX_DATAGRAM,
    MAX_INNER,
    MIN_DATAGRAM,
    MIN_INNER,
    OVERHEAD,
    SESSION_ID_SIZE,
    TAG_SIZE,
    VERSION,
    Header,
    HeaderProtection,
)
from resip.core.crypto.keys import (
    IV_SIZE,
    KEY_SIZE,
    SESSION_SECRET_SIZE,
    KeyLimits,
    Suite,
    derive_epoch_keys,
    derive_initial_secret,
)
from resip.core.crypto.protector import Opened, PacketProtector, ReceiveState
from resip.core.crypto.replay import ReplayWindow

__all__ = [
    "HEADER_SIZE",
    "HP_KEY_SIZE",
    "IV_SIZE",
    "KEY_SIZE",
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

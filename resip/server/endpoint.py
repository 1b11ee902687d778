"""The server's session registry and packet demultiplexer (sans-IO: no sockets, no clock).

Contract:

- The endpoint is the server's one session registry. Each entry is a session and what its
  owner keeps with it (the app: the session's driver and channel tasks; tests: the session
  itself), built by the ``host`` factory given to :meth:`Endpoint.create_session`.
- :meth:`Endpoint.create_session` makes a server-role :class:`~resip.core.session.Session` with a
  fresh random 8-byte id and 32-byte secret and returns its entry with the JSON-able
  credentials of the session API (PROTOCOL.md §7). The caller (the app) adds ``udp_port``,
  ``tcp_port`` and ``server_start``. At ``max_sessions`` live sessions it raises
  :class:`SessionLimitReached` instead.
- :meth:`Endpoint.route_untrusted` takes any bytes from the network and returns the entry
  of the session they claim to belong to, with the unmasked :class:`~resip.core.crypto.Header`,
  or ``None``. It only unmasks the header (one AES block); the caller hands that header
  to ``Session.receive_datagram(..., header=)``, which authenticates the packet without
  unmasking again. Malformed datagrams and unknown session ids are
  dropped silently and counted in :attr:`Endpoint.stats`; nothing here ever raises for bad
  input, so a forged flood costs one AES block per datagram and no state.
- A session that has terminated is removed the next time it is looked up (or by
  :meth:`Endpoint.sweep`); the owner may also :meth:`Endpoint.remove` it explicitly.
- Secrets never appear in logs or in ``repr``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from resip.core.config import SessionConfig
from resip.core.crypto import VERSION, Header, HeaderProtection, Suite
from resip.core.errors import ResipError, WireError
from resip.core.session import Role, Session

__all__ = ["Endpoint", "EndpointStats", "SessionLimitReached"]

log = logging.getLogger(__name__)

SESSION_ID_SIZE = 8
SECRET_SIZE = 32
HP_KEY_SIZE = 32

#: What the registry's owner keeps with each session.
H = TypeVar("H")


class SessionLimitReached(ResipError):
    """The server already holds ``max_sessions`` sessions."""


@dataclass(slots=True)
class EndpointStats:
    """Counters of what :meth:`Endpoint.route_untrusted` saw."""

    #: Datagrams handed to a session.
    routed: int = 0
    #: Datagrams whose header did not unmask (size, version, key id, reserved bits).
    malformed: int = 0
    #: Datagrams naming a session id we do not hold (forged, stale or from a past run).
    unknown_session: int = 0
    #: Datagrams claiming to come from the server (direction bit): reflected or forged.
    wrong_direction: int = 0

    @property
    def dropped(self) -> int:
        """Every datagram dropped before reaching a session."""
        return self.malformed + self.unknown_session + self.wrong_direction


class Endpoint(Generic[H]):
    """Holds the server's sessions by id and finds the one a datagram belongs to."""

    def __init__(
        self,
        config: SessionConfig,
        hp: HeaderProtection,
        *,
        hp_key: bytes,
        max_sessions: int,
        suite: Suite = Suite.AES_256_GCM,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``hp_key`` is the 32-byte key of ``hp.current_key_id``: clients need its bytes.

        Raises ``ValueError`` if ``hp_key`` is not the key ``hp`` uses, or ``max_sessions``
        is below 1.
        """
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        if len(hp_key) != HP_KEY_SIZE or not _same_hp_key(hp, hp_key):
            raise ValueError("hp_key is not the current key of hp")
        self.config = config
        self.hp = hp
        self._hp_key = bytes(hp_key)
        self.max_sessions = max_sessions
        self.suite = suite
        self._random_bytes = random_bytes
        self._sessions: dict[bytes, tuple[Session, H]] = {}
        self.stats = EndpointStats()

    def __repr__(self) -> str:
        return f"Endpoint(sessions={len(self._sessions)}, max_sessions={self.max_sessions})"

    @classmethod
    def generate(
        cls,
        config: SessionConfig,
        *,
        max_sessions: int,
        suite: Suite = Suite.AES_256_GCM,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> Endpoint[H]:
        """An endpoint with a fresh random header-protection key (id 0).

        The key lives only in memory: after a restart every old session is gone anyway
        (clients notice by ``server_start`` changing), so nothing needs it on disk.
        """
        key = random_bytes(HP_KEY_SIZE)
        hp = HeaderProtection({0: key}, 0)
        return cls(
            config,
            hp,
            hp_key=key,
            max_sessions=max_sessions,
            suite=suite,
            random_bytes=random_bytes,
        )

    # -- registry ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def sessions(self) -> list[Session]:
        """The sessions held now (terminated ones included until swept)."""
        return [session for session, _ in self._sessions.values()]

    def hosts(self) -> list[H]:
        """The owner's entries of the sessions held now, in the same order."""
        return [host for _, host in self._sessions.values()]

    def get(self, session_id: bytes) -> H | None:
        """The entry of the session with this id, or ``None``."""
        entry = self._sessions.get(session_id)
        return entry[1] if entry is not None else None

    def create_session(
        self, now: float, host: Callable[[Session], H]
    ) -> tuple[H, dict[str, object]]:
        """A new server session's entry (``host(session)``) and the API's credentials.

        Raises :class:`SessionLimitReached` when ``max_sessions`` live sessions exist.
        """
        if len(self._sessions) >= self.max_sessions:
            self.sweep()  # terminated sessions do not count against the limit
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimitReached(
                    f"the server already holds its maximum of {self.max_sessions} sessions"
                )
        while True:
            # 64 random bits: a collision is astronomically unlikely, but an id must
            # never name two sessions, so check rather than hope.
            session_id = self._random_bytes(SESSION_ID_SIZE)
            if session_id not in self._sessions:
                break
        secret = self._random_bytes(SECRET_SIZE)
        session = Session(
            self.config,
            role=Role.SERVER,
            session_id=session_id,
            session_secret=secret,
            hp=self.hp,
            suite=self.suite,
            now=now,
            random_bytes=self._random_bytes,
        )
        entry = host(session)
        self._sessions[session_id] = (session, entry)
        log.info("session %s created (%d held)", session_id.hex(), len(self._sessions))
        credentials: dict[str, object] = {
            "session_id": session_id.hex(),
            "secret": secret.hex(),
            "suite": int(self.suite),
            "hp_key_id": self.hp.current_key_id,
            "hp_key": self._hp_key.hex(),
            "packet_size": self.config.packet_size,
            "idle_timeout": self.config.idle_timeout,
        }
        return entry, credentials

    def remove(self, session_id: bytes) -> H | None:
        """Forget a session (it is not closed here); returns its entry, or ``None``."""
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return None
        log.debug("session %s removed (%d held)", session_id.hex(), len(self._sessions))
        return entry[1]

    def sweep(self) -> list[H]:
        """Remove every terminated session; returns their entries."""
        gone = [sid for sid, (session, _) in self._sessions.items() if session.terminated]
        return [entry for sid in gone if (entry := self.remove(sid)) is not None]

    # -- demultiplexing --------------------------------------------------------------------

    def route_untrusted(self, datagram: bytes) -> tuple[H, Header] | None:
        """The entry of the live session ``datagram`` names and its unmasked header.

        ``None`` if there is none (dropped silently and counted). Only the header is
        unmasked here; the caller feeds the datagram and this header to the session
        (``receive_datagram(..., header=)``), which authenticates it before anything
        changes and does not unmask it again.
        """
        try:
            header = self.hp.unmask_untrusted(datagram)
        except WireError:
            self.stats.malformed += 1
            return None
        if header.from_server:
            self.stats.wrong_direction += 1
            return None
        entry = self._sessions.get(header.session_id)
        if entry is None:
            self.stats.unknown_session += 1
            return None
        if entry[0].terminated:
            self.remove(header.session_id)
            self.stats.unknown_session += 1
            return None
        self.stats.routed += 1
        return entry[1], header


def _same_hp_key(hp: HeaderProtection, key: bytes) -> bool:
    """Whether ``key`` masks exactly like ``hp``'s current key (checked on one sample)."""
    probe = HeaderProtection({hp.current_key_id: key}, hp.current_key_id)
    header = bytes([(VERSION << 4) | hp.current_key_id]) + bytes(15)
    sample = bytes(range(16))
    return probe.mask(header, sample) == hp.mask(header, sample)

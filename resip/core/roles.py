"""What differs between the two ends of a session, chosen once when it is created.

The session engine is the same code at both ends; a :class:`ClientRole` or a
:class:`ServerRole` supplies the differences as data and a few small methods,
so no other module tests which end it runs at.

Invariants:

1. Only the client chooses paths: it sends wherever its owner says
   (:meth:`ClientRole.set_peer`). The server replies to the source of the newest
   authenticated packet and validates new addresses (:class:`~resip.core.path.PathManager`);
   until one answers its challenge the anti-amplification limit bounds what the
   server sends there (:meth:`ServerRole.send_limit`).
2. Only the client opens channels (START) and only the client sends keep-alives:
   the server only answers, so an idle server never wakes a client's radio.
3. Only the server holds records that arrive before their channel's START
   (reordering, or a lost START). The client never receives START, so a record
   for a channel it does not know is refused, never held.
4. A client is *connecting* until it first hears from the server; a server's
   session exists because a client asked for it, so it starts connected.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from enum import Enum

from resip.core.errors import LocalProtocolError
from resip.core.path import PathManager

__all__ = ["ClientRole", "Role", "RolePolicy", "ServerRole", "make_role"]

Path = Hashable
#: A path move: (old, new).
Move = tuple[Hashable, Hashable]


class Role(Enum):
    """Which end of the session this is."""

    CLIENT = "client"
    SERVER = "server"


class RolePolicy(ABC):
    """The differences between the two ends; see the module docstring."""

    role: Role
    #: Our records carry the from-server flag (and the peer's must not).
    is_server: bool
    #: Opens channels (so never receives START).
    opens_channels: bool
    starts_connected: bool
    sends_keepalives: bool
    holds_early_records: bool

    @property
    @abstractmethod
    def peer(self) -> Path | None:
        """Where our packets go."""

    @property
    def path_changes(self) -> int:
        """How often the reply address moved."""
        return 0

    @property
    def challenge_pending(self) -> bool:
        """A PATH_CHALLENGE waits to be sent."""
        return False

    def set_peer(self, path: Path) -> None:
        """Send to ``path`` from now on."""
        raise LocalProtocolError("only the client chooses the path")

    def on_packet(
        self, path: Path, size: int, *, newest: bool, now: float, timeout: float
    ) -> Move | None:
        """An authenticated packet arrived from ``path``; returns a path move if any."""
        return None

    def send_limit(self, packet_size: int, *, min_packet: int) -> int | None:
        """Largest datagram we may send now; None while nothing may be sent."""
        return packet_size

    @abstractmethod
    def on_sent(self, size: int) -> None:
        """A datagram of ``size`` bytes went to :attr:`peer`."""

    def challenge_to_send(self) -> tuple[bytes, Hashable, bool] | None:
        """The PATH_CHALLENGE for the next packet: (data, address, first copy)."""
        return None

    @abstractmethod
    def on_response(self, data: bytes) -> None:
        """A PATH_RESPONSE arrived."""

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` has path work to do."""
        return None

    def handle_timer(self, *, now: float, timeout: float) -> Move | None:
        """Path timers due at ``now``; returns a path move if any."""
        return None

    def keepalive_at(
        self, *, in_flight: bool, last_heard: float | None, sent_at: float, interval: float
    ) -> float | None:
        """When an idle session next asks the peer for a sign of life, or None."""
        return None


class ClientRole(RolePolicy):
    """The client: it chooses the path, opens channels and keeps the session alive."""

    role = Role.CLIENT
    is_server = False
    opens_channels = True
    starts_connected = False
    sends_keepalives = True
    holds_early_records = False

    def __init__(self, peer: Path | None) -> None:
        self._peer = peer

    @property
    def peer(self) -> Path | None:
        """The server address the owner chose (UDP address or the TCP fallback)."""
        return self._peer

    def set_peer(self, path: Path) -> None:
        """Send to ``path`` from now on (address change, or UDP/TCP fallback switch)."""
        self._peer = path

    def on_sent(self, size: int) -> None:
        """Nothing to account: the client sends wherever its owner says."""

    def on_response(self, data: bytes) -> None:
        """Ignored: the client never challenges (PATH_RESPONSE is client to server)."""

    def keepalive_at(
        self, *, in_flight: bool, last_heard: float | None, sent_at: float, interval: float
    ) -> float | None:
        """``interval`` after we last heard or asked, unless packets are in flight."""
        if in_flight:
            return None
        last = last_heard if last_heard is not None else 0.0
        return max(last, sent_at) + interval


class ServerRole(RolePolicy):
    """The server: it follows the client's newest address and validates new ones."""

    role = Role.SERVER
    is_server = True
    opens_channels = False
    starts_connected = True
    sends_keepalives = False
    holds_early_records = True

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._paths = PathManager(random_bytes)

    @property
    def peer(self) -> Path | None:
        """The newest client address."""
        current = self._paths.current
        return current.address if current is not None else None

    @property
    def path_changes(self) -> int:
        """How often the client's address moved."""
        return self._paths.changes

    @property
    def challenge_pending(self) -> bool:
        """A PATH_CHALLENGE waits to be sent."""
        return self._paths.challenge_pending

    def on_packet(
        self, path: Path, size: int, *, newest: bool, now: float, timeout: float
    ) -> Move | None:
        """Account the packet to ``path``; the newest one moves the reply address."""
        return self._paths.on_packet(path, size, newest=newest, now=now, timeout=timeout)

    def send_limit(self, packet_size: int, *, min_packet: int) -> int | None:
        """Full packets within the anti-amplification allowance; None while it blocks.

        To an unvalidated client address the server sends only full packets, except for
        the first copy of a challenge. Tiny packets that each buy an ACK, which buys three
        times its size in more tiny packets, would snowball into a storm of ACKs and
        fragments within one round trip.
        """
        allowance = self._paths.allowance()
        if allowance >= packet_size:
            return packet_size
        if self._paths.challenge_pending and allowance >= min_packet:
            return allowance
        return None

    def on_sent(self, size: int) -> None:
        """Count the bytes against the current address's allowance."""
        self._paths.on_sent(size)

    def challenge_to_send(self) -> tuple[bytes, Hashable, bool] | None:
        """The PATH_CHALLENGE for the next packet (see :meth:`PathManager.challenge_to_send`)."""
        return self._paths.challenge_to_send()

    def on_response(self, data: bytes) -> None:
        """A PATH_RESPONSE may validate the challenged address."""
        self._paths.on_response(data)

    def next_timer(self) -> float | None:
        """When the outstanding challenge gives up."""
        return self._paths.next_timer()

    def handle_timer(self, *, now: float, timeout: float) -> Move | None:
        """An unanswered challenge: fall back to the last validated address, or ask again."""
        return self._paths.handle_timer(now=now, timeout=timeout)


def make_role(role: Role, *, peer: Path | None, random_bytes: Callable[[int], bytes]) -> RolePolicy:
    """The policy object for ``role``."""
    if role is Role.SERVER:
        return ServerRole(random_bytes)
    return ClientRole(peer)

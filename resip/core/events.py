"""Events a :class:`~resip.core.session.Session` hands to its owner through ``next_event()``.

Every event is a frozen, slotted dataclass; :data:`Event` is their union, meant
to be consumed with ``match`` and ``typing.assert_never`` so a new event type
is a type error everywhere it is not handled yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from resip.core.wire import Proto


@dataclass(frozen=True, slots=True)
class SessionConnected:
    """The first authenticated packet from the peer arrived (client side)."""


@dataclass(frozen=True, slots=True)
class ChannelRequested:
    """Server side: the client asks for a channel to ``host:port``.

    Answer with ``Session.accept_channel`` once the target is connected, or
    ``Session.reset_channel`` with a reason. Data may arrive before that.
    """

    channel_id: int
    proto: Proto
    host: IPv4Address | IPv6Address | str
    port: int


@dataclass(frozen=True, slots=True)
class ChannelStarted:
    """Client side: the server connected the channel's target."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class ChannelData:
    """Bytes (stream channel) or one datagram (datagram channel), in order, exactly once.

    The owner must call ``Session.consume(channel_id, len(data))`` once it has
    passed the bytes on; until then they count against the channel's window.
    """

    channel_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelEnded:
    """The peer half-closed the channel and every byte it sent has been delivered."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class ChannelWritable:
    """A channel whose ``send`` accepted less than offered has room again."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """Both directions are finished and acknowledged; the channel id is retired."""

    channel_id: int


@dataclass(frozen=True, slots=True)
class ChannelTerminated:
    """The channel was aborted by the peer (or refused by the server) with a code and reason."""

    channel_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PathChanged:
    """Server side: packets now go to ``new`` (the newest authenticated source address)."""

    old: object
    new: object


@dataclass(frozen=True, slots=True)
class OutageStarted:
    """Nothing has been heard from the peer for several probe timeouts."""

    since: float


@dataclass(frozen=True, slots=True)
class OutageEnded:
    """The peer answered again after an outage of ``duration`` seconds."""

    duration: float


@dataclass(frozen=True, slots=True)
class KeyUpdated:
    """The send key moved to a new epoch."""

    epoch: int


@dataclass(frozen=True, slots=True)
class SessionTerminated:
    """The session is over; no more datagrams will be produced."""

    code: int
    reason: str
    by_peer: bool


Event: TypeAlias = (
    SessionConnected
    | ChannelRequested
    | ChannelStarted
    | ChannelData
    | ChannelEnded
    | ChannelWritable
    | ChannelClosed
    | ChannelTerminated
    | PathChanged
    | OutageStarted
    | OutageEnded
    | KeyUpdated
    | SessionTerminated
)

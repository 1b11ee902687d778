"""The states, inputs and actions of :class:`~resip_proxy.transport_policy.TransportPolicy`.

Plain frozen values, so the policy stays sans-IO and tests can build any of them:

- **Inputs** (what happened; each carries ``now``, the adapter's monotonic clock):
  SessionStarted, AuthenticatedPacket(via), UdpSocketDead, TcpConnected / TcpFailed /
  TcpClosed(attempt), Timer(view), Outage, SessionEnded, ServerRestartAnswer(restarted),
  RecreateFailed, Close.
- **Actions** (what the adapter must do, in the order returned): OpenUdpSocket,
  ConnectTcp / CloseTcp(attempt), UsePath(via), Probe(via), AskServerStart,
  RecreateSession, Notice(level, message). Each action that starts something names the
  input that reports its outcome.
- :class:`SessionView`: the few session statistics the silence rules read (RTT, loss,
  bytes in flight, channel activity, outage), passed with each :class:`Timer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Literal

from resip.core.recovery import INITIAL_RTT

__all__ = [
    "INPUT_KINDS",
    "ON_TCP",
    "SESSIONLESS",
    "Action",
    "AskServerStart",
    "AuthenticatedPacket",
    "Close",
    "CloseTcp",
    "ConnectTcp",
    "Input",
    "Notice",
    "OpenUdpSocket",
    "Outage",
    "PolicyConfig",
    "Probe",
    "RecreateFailed",
    "RecreateSession",
    "ServerRestartAnswer",
    "SessionEnded",
    "SessionStarted",
    "SessionView",
    "TcpClosed",
    "TcpConnected",
    "TcpFailed",
    "Timer",
    "TransportState",
    "UdpSocketDead",
    "UsePath",
    "Via",
]


class Via(StrEnum):
    """A kind of path: the server's UDP port or the TCP fallback connection."""

    UDP = "udp"
    TCP = "tcp"


class TransportState(Enum):
    """Where the policy stands (the table is in :mod:`resip_proxy.transport_policy`)."""

    CREATING = "creating"
    UDP_WAIT = "udp-wait"
    UDP_OK = "udp-ok"
    UDP_PROBE = "udp-probe"
    RACE = "race"
    TCP_VERIFY = "tcp-verify"
    TCP_OK = "tcp-ok"
    TCP_PROBE = "tcp-probe"
    UDP_RETRY = "udp-retry"
    ASKING = "asking"
    WAITING = "waiting"
    BACKOFF = "backoff"
    ENDED = "ended"
    CLOSED = "closed"


S = TransportState
#: States without a session (or with one being replaced): the path there is moot.
SESSIONLESS = frozenset({S.CREATING, S.BACKOFF, S.ENDED, S.CLOSED})
#: States in which the session is committed to the TCP fallback (status views show it).
ON_TCP = frozenset({S.TCP_OK, S.TCP_PROBE, S.UDP_RETRY})


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The adapter's settings. ``can_recreate``: a session API exists to ask and re-create."""

    udp_timeout: float = 3.0
    udp_retry: float = 30.0
    can_recreate: bool = True

    def __post_init__(self) -> None:
        if not (self.udp_timeout > 0 and self.udp_retry > 0):
            raise ValueError("udp_timeout and udp_retry must be positive")


@dataclass(frozen=True, slots=True)
class SessionView:
    """The session statistics the silence rules read, as plain values."""

    #: Smoothed round-trip time (seconds).
    srtt: float = INITIAL_RTT
    #: The worse of the send-side loss estimate and the receive-side loss (0..1).
    loss: float = 0.0
    bytes_in_flight: int = 0
    #: Newest activity of any channel (session clock); -inf without channels.
    last_activity: float = -math.inf
    #: The session is in outage (PTOs without answer, ARCHITECTURE §6).
    in_outage: bool = False


# -- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A new session is installed; it sends to the server's UDP port."""

    now: float


@dataclass(frozen=True, slots=True)
class AuthenticatedPacket:
    """A packet from the server authenticated, arriving over ``via``."""

    now: float
    via: Via


@dataclass(frozen=True, slots=True)
class UdpSocketDead:
    """The UDP socket cannot send at all (its source address vanished), or reopening failed."""

    now: float


@dataclass(frozen=True, slots=True)
class TcpConnected:
    """The connection of ConnectTcp(attempt) is established."""

    now: float
    attempt: int


@dataclass(frozen=True, slots=True)
class TcpFailed:
    """The connection of ConnectTcp(attempt) could not be established."""

    now: float
    attempt: int


@dataclass(frozen=True, slots=True)
class TcpClosed:
    """The established connection of ``attempt`` ended (by the peer or an error)."""

    now: float
    attempt: int


@dataclass(frozen=True, slots=True)
class Timer:
    """:meth:`TransportPolicy.next_deadline` is due (early calls are harmless)."""

    now: float
    view: SessionView = field(default_factory=SessionView)


@dataclass(frozen=True, slots=True)
class Outage:
    """The session entered outage."""

    now: float


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session terminated (closed by either side, or idle)."""

    now: float


@dataclass(frozen=True, slots=True)
class ServerRestartAnswer:
    """The answer to AskServerStart: whether ``server_start`` changed (False if unknown)."""

    now: float
    restarted: bool


@dataclass(frozen=True, slots=True)
class RecreateFailed:
    """RecreateSession could not create or install a session."""

    now: float


@dataclass(frozen=True, slots=True)
class Close:
    """The manager is closing; nothing more will be done."""

    now: float


Input = (
    SessionStarted | AuthenticatedPacket | UdpSocketDead | TcpConnected | TcpFailed | TcpClosed
    | Timer | Outage | SessionEnded | ServerRestartAnswer | RecreateFailed | Close
)  # fmt: skip
INPUT_KINDS: tuple[type[Input], ...] = (
    SessionStarted, AuthenticatedPacket, UdpSocketDead, TcpConnected, TcpFailed, TcpClosed,
    Timer, Outage, SessionEnded, ServerRestartAnswer, RecreateFailed, Close,
)  # fmt: skip

# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenUdpSocket:
    """Replace the UDP socket (new local address and port); report failure as UdpSocketDead."""


@dataclass(frozen=True, slots=True)
class ConnectTcp:
    """Open TCP connection number ``attempt`` to the server; report TcpConnected / TcpFailed."""

    attempt: int


@dataclass(frozen=True, slots=True)
class CloseTcp:
    """Close (or stop connecting) TCP connection ``attempt``; no input about it follows."""

    attempt: int


@dataclass(frozen=True, slots=True)
class UsePath:
    """Point the session at ``via``'s path (it sends a keep-alive there at once)."""

    via: Via


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask on the path in use whether the server still hears us (a keep-alive)."""

    via: Via


@dataclass(frozen=True, slots=True)
class AskServerStart:
    """``GET /v1/info``; report ServerRestartAnswer."""


@dataclass(frozen=True, slots=True)
class RecreateSession:
    """Close the session (its channels end) and create a new one; report the outcome."""


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the log (the lab tests read the warning and info lines)."""

    level: Literal["debug", "info", "warning"]
    message: str


Action = (
    OpenUdpSocket | ConnectTcp | CloseTcp | UsePath | Probe | AskServerStart | RecreateSession
    | Notice
)  # fmt: skip

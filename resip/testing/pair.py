"""A client and a server :class:`~resip.core.session.Session` wired into a :class:`NetSim`.

Each side is wrapped in a :class:`SimPeer`, a simulator endpoint that also plays
the application: it drains session events after every input, consumes received
data (so flow-control credit flows), feeds queued outgoing bytes only when the
application writes or the session says the channel is writable (as a real
socket splice does: retrying every channel after each event would hide a
channel the session forgets to wake), and on the server accepts every channel request
(or refuses it, if ``refuse`` says so). Tests then only describe *what* to
send and check *what* arrived, typically by SHA-256 of each direction.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from resip.core import events as ev
from resip.core.codes import TerminateCode
from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection, Suite
from resip.core.session import Role, Session
from resip.core.wire import Proto
from resip.testing.netsim import LinkSpec, NetSim

CLIENT_ADDR = ("10.0.0.2", 40000)
SERVER_ADDR = ("192.0.2.1", 31266)


@dataclass(slots=True)
class ChannelLog:
    """What one side's application saw and still has to send on a channel."""

    received: bytearray = field(default_factory=bytearray)
    datagrams: list[bytes] = field(default_factory=list)
    to_send: bytearray = field(default_factory=bytearray)
    shutdown_after_send: bool = False
    shutdown_done: bool = False
    started: bool = False
    ended: bool = False
    closed: bool = False
    terminated: tuple[int, str] | None = None

    def digest(self) -> str:
        """SHA-256 of every byte received."""
        return hashlib.sha256(self.received).hexdigest()


class SimPeer:
    """One session plus a scripted application, as a simulator endpoint."""

    def __init__(
        self, session: Session, *, refuse: Callable[[ev.ChannelRequested], str | None] | None = None
    ) -> None:
        self.session = session
        self.channels: dict[int, ChannelLog] = {}
        #: Channels with bytes (or a shutdown) still to hand to the session.
        self._pending: set[int] = set()
        self.events: list[ev.Event] = []
        #: (virtual time, event) for every event, for timing assertions.
        self.timeline: list[tuple[float, ev.Event]] = []
        self.refuse = refuse
        self.now = 0.0

    # -- SimEndpoint -----------------------------------------------------------
    def receive_datagram(self, data: bytes, path: Hashable, *, now: float) -> None:
        """Feed the session, then let the application react."""
        self.now = now
        self.session.receive_datagram(data, path, now=now)
        self._react(now)

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Hashable]]:
        """The session's datagrams."""
        self.now = now
        return self.session.datagrams_to_send(now=now)

    def next_timer(self) -> float | None:
        """The session's timer."""
        return self.session.next_timer()

    def handle_timer(self, *, now: float) -> None:
        """Fire the session's timer, then let the application react."""
        self.now = now
        self.session.handle_timer(now=now)
        self._react(now)

    # -- the application ---------------------------------------------------------
    def log(self, channel_id: int) -> ChannelLog:
        """The log of a channel (created on first use)."""
        return self.channels.setdefault(channel_id, ChannelLog())

    def write(self, channel_id: int, data: bytes, *, shutdown: bool = False) -> None:
        """Queue bytes to send on a channel (and optionally half-close after them)."""
        log = self.log(channel_id)
        log.to_send += data
        log.shutdown_after_send = log.shutdown_after_send or shutdown
        self._pending.add(channel_id)
        self._pump(channel_id, self.now)

    def _pump(self, channel_id: int, now: float) -> None:
        log = self.channels.get(channel_id)
        session = self.session
        if log is None or session.terminated or session.channels.get(channel_id) is None:
            return
        while log.to_send:
            chunk = bytes(log.to_send[: 1 << 20])
            n = session.send(channel_id, chunk, now=now)
            del log.to_send[:n]
            if n < len(chunk):
                break  # refused: the session wakes this channel with ChannelWritable
        if not log.to_send and log.shutdown_after_send and not log.shutdown_done:
            log.shutdown_done = True
            session.shutdown(channel_id, now=now)
        if not log.to_send and (log.shutdown_done or not log.shutdown_after_send):
            self._pending.discard(channel_id)

    def _react(self, now: float) -> None:
        session = self.session
        while (event := session.next_event()) is not None:
            self.events.append(event)
            self.timeline.append((now, event))
            match event:
                case ev.ChannelData(channel_id, data):
                    log = self.log(channel_id)
                    if session.channels.get(channel_id) is not None and (
                        session.channels.get(channel_id).proto is Proto.UDP  # type: ignore[union-attr]
                    ):
                        log.datagrams.append(data)
                    log.received += data
                    session.consume(channel_id, len(data))
                case ev.ChannelRequested(channel_id):
                    reason = self.refuse(event) if self.refuse is not None else None
                    if reason is None:
                        session.accept_channel(channel_id, now=now)
                        self.log(channel_id).started = True
                        self._pump(channel_id, now)  # bytes queued before it existed here
                    else:
                        session.reset_channel(
                            channel_id, TerminateCode.CONNECTION_REFUSED, reason, now=now
                        )
                case ev.ChannelStarted(channel_id):
                    self.log(channel_id).started = True
                case ev.ChannelWritable(channel_id):
                    self._pump(channel_id, now)
                case ev.ChannelEnded(channel_id):
                    self.log(channel_id).ended = True
                case ev.ChannelClosed(channel_id):
                    self.log(channel_id).closed = True
                case ev.ChannelTerminated(channel_id, code, reason):
                    self.log(channel_id).terminated = (code, reason)
                case _:
                    pass

    def event_types(self) -> list[str]:
        """Names of the events seen so far, for assertions."""
        return [type(e).__name__ for e in self.events]


@dataclass
class SessionPair:
    """A client and a server session in one simulator."""

    sim: NetSim
    client: SimPeer
    server: SimPeer

    @classmethod
    def create(
        cls,
        *,
        seed: int,
        link: LinkSpec | None = None,
        reverse: LinkSpec | None = None,
        client_config: SessionConfig | None = None,
        server_config: SessionConfig | None = None,
        suite: Suite = Suite.AES_256_GCM,
        refuse: Callable[[ev.ChannelRequested], str | None] | None = None,
    ) -> SessionPair:
        """Build both sessions with keys drawn from ``seed`` and link them."""
        rng = random.Random(seed)

        def random_bytes(n: int) -> bytes:
            return rng.randbytes(n)

        session_id = random_bytes(8)
        secret = random_bytes(32)
        hp = HeaderProtection({0: random_bytes(32)}, 0)
        server = Session(
            server_config or SessionConfig(),
            role=Role.SERVER,
            session_id=session_id,
            session_secret=secret,
            hp=hp,
            suite=suite,
            now=0.0,
            random_bytes=random_bytes,
        )
        client = Session(
            client_config or SessionConfig(),
            role=Role.CLIENT,
            session_id=session_id,
            session_secret=secret,
            hp=hp,
            suite=suite,
            now=0.0,
            peer=SERVER_ADDR,
            random_bytes=random_bytes,
        )
        sim = NetSim(seed=seed)
        pair = cls(sim, SimPeer(client), SimPeer(server, refuse=refuse))
        sim.add("client", pair.client, CLIENT_ADDR)
        sim.add("server", pair.server, SERVER_ADDR)
        spec = link or LinkSpec()
        sim.link("client", "server", spec, reverse=reverse or spec)
        return pair

    def open(
        self,
        host: IPv4Address | IPv6Address | str = "example.com",
        port: int = 443,
        *,
        proto: Proto = Proto.TCP,
        compress: bool | None = None,
    ) -> int:
        """Open a channel from the client now."""
        return self.client.session.open_channel(
            host, port, proto=proto, compress=compress, now=self.sim.now
        )

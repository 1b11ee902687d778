"""A client Session steered by TransportPolicy inside the simulator, against a server Session.

The client has two simulator nodes: ``client`` is its UDP socket and ``client-tcp`` its
TCP fallback connection, each joined to the server by its own link (the TCP link is
lossless and in order: TCP retransmits by itself). :class:`PolicyClient` plays the
adapter's part: it feeds the policy (through ``Checked``, which asserts the invariants
after every input) with authenticated packets, outages, session ends, timers carrying
``session_view`` of the session, and TCP connects that succeed after one round trip
(or fail, or never answer), and executes the policy's actions on the simulated sockets.
The server sits in a :class:`ServerSlot`, so a test can restart it: a fresh session
with new keys in place of the old one, as a restarted server has.
"""

from __future__ import annotations

import random
from collections.abc import Hashable

from resip.core import events as ev
from resip.core.codes import CloseCode
from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection, Suite
from resip.core.session import Role, Session
from resip.testing.netsim import LinkSpec, NetSim
from resip.testing.pair import SimPeer
from resip_proxy.client import session_view
from resip_proxy.transport_events import (
    Action,
    AskServerStart,
    AuthenticatedPacket,
    CloseTcp,
    ConnectTcp,
    Input,
    OpenUdpSocket,
    Outage,
    PolicyConfig,
    Probe,
    RecreateSession,
    ServerRestartAnswer,
    SessionEnded,
    SessionStarted,
    TcpConnected,
    TcpFailed,
    Timer,
    UsePath,
    Via,
)
from resip_proxy.transport_policy import TransportPolicy
from tests.unit.policy_model import Checked

CLIENT_UDP = ("10.0.0.2", 40000)
CLIENT_TCP = ("10.0.0.2", "tcp")
SERVER = ("192.0.2.1", 31266)
#: 20 Mbit/s each way, 100 ms round trip, 1 % loss: a plain broadband path.
UDP_LINK = LinkSpec(delay=0.05, rate_bps=20e6, queue_bytes=128 * 1024, loss=0.01)
BLOCKED = LinkSpec(delay=0.05, loss=1.0)
TCP_LINK = LinkSpec(delay=0.05, rate_bps=20e6, queue_bytes=1 << 20)


def session_pair(rng: random.Random) -> tuple[Session, Session]:
    """A client and a server session sharing fresh keys (what the session API hands out)."""

    def random_bytes(n: int) -> bytes:
        return rng.randbytes(n)

    session_id, secret = random_bytes(8), random_bytes(32)
    hp = HeaderProtection({0: random_bytes(32)}, 0)

    def make(role: Role, peer: Hashable | None) -> Session:
        return Session(
            SessionConfig(), role=role, session_id=session_id, session_secret=secret, hp=hp,
            suite=Suite.AES_256_GCM, now=0.0, peer=peer, random_bytes=random_bytes,
        )  # fmt: skip

    server, client = make(Role.SERVER, None), make(Role.CLIENT, SERVER)
    return client, server


class ServerSlot:
    """The server node: whichever server session currently runs (restarts replace it)."""

    def __init__(self, peer: SimPeer) -> None:
        self.peer = peer

    def receive_datagram(self, data: bytes, path: Hashable, *, now: float) -> None:
        self.peer.receive_datagram(data, path, now=now)

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Hashable]]:
        return self.peer.datagrams_to_send(now=now)

    def next_timer(self) -> float | None:
        return self.peer.next_timer()

    def handle_timer(self, *, now: float) -> None:
        self.peer.handle_timer(now=now)


class Face:
    """One of the client's sockets as a simulator node."""

    def __init__(self, client: PolicyClient, via: Via) -> None:
        self.client, self.via = client, via

    def receive_datagram(self, data: bytes, path: Hashable, *, now: float) -> None:
        self.client.received(self.via, data, now)

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Hashable]]:
        return self.client.outgoing(self.via, now)

    def next_timer(self) -> float | None:
        return self.client.next_timer() if self.via is Via.UDP else None

    def handle_timer(self, *, now: float) -> None:
        self.client.fire(now)


class PolicyClient(SimPeer):
    """The client session plus the policy and the adapter's bookkeeping."""

    def __init__(self, sim: NetSim, rng: random.Random, config: PolicyConfig) -> None:
        client, server = session_pair(rng)
        super().__init__(client)
        self.sim, self.rng = sim, rng
        self.server = ServerSlot(SimPeer(server))
        #: The sessions a restarted server hands out: (client side, server side).
        self._fresh = (client, server)
        self.checked = Checked(TransportPolicy(config))
        #: What TCP connects do: "ok" (after one round trip), "refused", or "silent".
        self.tcp_mode = "ok"
        #: What AskServerStart answers.
        self.server_restarted = False
        self.tcp_open: int | None = None
        self._connecting: int | None = None
        self._queues: dict[Via, list[tuple[bytes, Hashable]]] = {Via.UDP: [], Via.TCP: []}
        self._udp_port = CLIENT_UDP[1]
        #: (time, transport) at every change of the policy's transport.
        self.transports: list[tuple[float, Via]] = [(0.0, Via.UDP)]
        sim.add("client", Face(self, Via.UDP), CLIENT_UDP)
        sim.add("client-tcp", Face(self, Via.TCP), CLIENT_TCP)
        sim.add("server", self.server, SERVER)
        sim.link("client", "server", UDP_LINK)
        sim.link("client-tcp", "server", TCP_LINK)
        self.feed(SessionStarted(0.0))

    # -- the adapter's part ----------------------------------------------------------------

    def feed(self, event: Input) -> None:
        for action in self.checked.feed(event):
            self._execute(action)
        transport = self.checked.policy.transport
        if transport is not self.transports[-1][1]:
            self.transports.append((event.now, transport))

    def received(self, via: Via, data: bytes, now: float) -> None:
        if via is Via.TCP and self.tcp_open is None:
            return  # a connection we closed
        self.now = now
        seen = len(self.events)
        authenticated = self.session.receive_datagram(data, SERVER, now=now)
        self._react(now)
        self._session_events(seen, now)
        if authenticated:
            self.feed(AuthenticatedPacket(now, via))

    def _session_events(self, seen: int, now: float) -> None:
        for event in self.events[seen:]:
            if isinstance(event, ev.OutageStarted):
                self.feed(Outage(now))
            elif isinstance(event, ev.SessionTerminated):
                self.feed(SessionEnded(now))

    def outgoing(self, via: Via, now: float) -> list[tuple[bytes, Hashable]]:
        for data, path in self.session.datagrams_to_send(now=now):
            if path == SERVER:
                self._queues[Via.UDP].append((data, SERVER))
            elif path == ("tcp", self.tcp_open):
                self._queues[Via.TCP].append((data, SERVER))
            # else: a TCP connection that is gone, like loss
        out, self._queues[via] = self._queues[via], []
        return out

    def next_timer(self) -> float | None:
        times = [t for t in (self.session.next_timer(), self.checked.policy.next_deadline()) if t]
        return min(times) if times else None

    def fire(self, now: float) -> None:
        self.now = now
        at = self.session.next_timer()
        if at is not None and at <= now:
            seen = len(self.events)
            self.session.handle_timer(now=now)
            self._react(now)
            self._session_events(seen, now)
        deadline = self.checked.policy.next_deadline()
        if deadline is not None and deadline <= now:
            self.feed(Timer(now, session_view(self.session, now)))

    def _execute(self, action: Action) -> None:
        match action:
            case OpenUdpSocket():
                self._udp_port += 1  # a fresh socket: a new local port
                self.sim.rebind("client", (CLIENT_UDP[0], self._udp_port), at=self.sim.now)
            case ConnectTcp(attempt):
                self._connect(attempt)
            case CloseTcp(attempt):
                if attempt in (self.tcp_open, self._connecting):
                    self.tcp_open = self._connecting = None
            case UsePath(via) | Probe(via):
                self.session.set_peer(SERVER if via is Via.UDP else ("tcp", self.tcp_open))
            case AskServerStart():
                at = self.sim.now + 0.1
                self.sim.schedule(
                    at, lambda: self.feed(ServerRestartAnswer(at, self.server_restarted))
                )
            case RecreateSession():
                self.sim.schedule(self.sim.now + 0.1, self._recreate)
            case _:
                pass

    def _connect(self, attempt: int) -> None:
        self._connecting = attempt
        at = self.sim.now + 2 * TCP_LINK.delay  # SYN, SYN-ACK

        def done() -> None:
            if self._connecting != attempt:
                return  # given up on meanwhile
            self._connecting = None
            if self.tcp_mode == "ok":
                self.tcp_open = attempt
                self.feed(TcpConnected(at, attempt))
            else:
                self.feed(TcpFailed(at, attempt))

        if self.tcp_mode != "silent":
            self.sim.schedule(at, done)

    def _recreate(self) -> None:
        """The session API's answer: the session the (restarted) server now holds."""
        self.session.close(CloseCode.REPLACED, "session replaced", now=self.sim.now)
        self.session = self._fresh[0]
        self.channels.clear()
        self._pending.clear()
        self.server_restarted = False
        self.feed(SessionStarted(self.sim.now))

    # -- scenario controls --------------------------------------------------------------------

    def block_udp(self, at: float, blocked: bool = True) -> None:
        spec = BLOCKED if blocked else UDP_LINK
        self.sim.schedule(at, lambda: self.sim.link("client", "server", spec))

    def restart_server(self, at: float) -> None:
        """From ``at`` the server knows only a new session; the API would hand that one out."""

        def restart() -> None:
            self._fresh = session_pair(self.rng)
            self.server.peer = SimPeer(self._fresh[1])
            self.server_restarted = True

        self.sim.schedule(at, restart)

    @property
    def transport(self) -> Via:
        return self.checked.policy.transport

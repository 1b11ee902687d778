"""A TransportPolicy wrapped in a model of its adapter that checks the invariants.

:class:`Checked` feeds inputs, plays the adapter's part of the bookkeeping (which TCP
attempt it holds and whether it is connected, which path the session uses) from the
actions returned, and after every input asserts the invariants of the policy's module
docstring. Unit, hypothesis and simulator tests all drive the policy through it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from resip_proxy import transport_rules as rules
from resip_proxy.transport_events import (
    SESSIONLESS,
    Action,
    AuthenticatedPacket,
    Close,
    CloseTcp,
    ConnectTcp,
    Input,
    Outage,
    PolicyConfig,
    Probe,
    RecreateFailed,
    ServerRestartAnswer,
    SessionEnded,
    SessionStarted,
    SessionView,
    TcpClosed,
    TcpConnected,
    TcpFailed,
    Timer,
    TransportState,
    UsePath,
    Via,
)
from resip_proxy.transport_policy import TRANSITIONS, TransportPolicy

S = TransportState
#: Statistics of a quiet 100 ms path: what run_to feeds unless told otherwise.
QUIET = SessionView(srtt=0.1)
#: States that wait for the adapter's answer (or for nothing): no deadline there.
NO_DEADLINE = frozenset({S.CREATING, S.ASKING, S.ENDED, S.CLOSED})


@dataclass
class Checked:
    """A policy plus the adapter's view of the TCP connection and the session's path."""

    policy: TransportPolicy
    #: The attempt the adapter holds (connecting or connected), if any.
    tcp: int | None = None
    tcp_connected: bool = False
    path: Via = Via.UDP
    now: float = 0.0
    log: list[tuple[Input, list[Action]]] = field(default_factory=list)

    @classmethod
    def new(cls, **config: float | bool) -> Checked:
        return cls(TransportPolicy(PolicyConfig(**config)))  # type: ignore[arg-type]

    @property
    def state(self) -> TransportState:
        return self.policy.state

    def at(self, state: TransportState) -> bool:
        """Whether the policy is in ``state`` (a call, so type checkers do not narrow)."""
        return self.policy.state is state

    @property
    def attempt(self) -> int:
        """The number of the newest ConnectTcp (0 before the first)."""
        connects = [a for a in self.actions_of(ConnectTcp) if isinstance(a, ConnectTcp)]
        return connects[-1].attempt if connects else 0

    def feed(self, event: Input) -> list[Action]:
        """Give ``event`` to the policy and check everything about the outcome."""
        self.now = max(self.now, event.now)
        deadline = self.policy.next_deadline()
        if deadline is not None and self.now >= deadline and not isinstance(event, Timer):
            # The policy catches up with a missed deadline itself; doing it here first
            # lets the table check below see the state the real input meets.
            self.feed(Timer(self.now, self.policy._view))
        before = self.policy.state
        actions = self.policy.handle(event)
        self.log.append((event, actions))
        if before is S.CLOSED:
            assert actions == [], f"CLOSED answered {event} with {actions}"
        targets = TRANSITIONS[(before, type(event))].targets
        assert self.policy.state in targets, (
            f"{before.name} --{type(event).__name__}--> {self.policy.state.name}, "
            f"table allows {sorted(s.name for s in targets)}"
        )
        self._adapter_side(event)
        for action in actions:
            self._execute(action)
        self.check()
        return actions

    def _adapter_side(self, event: Input) -> None:
        """What the adapter knows from the input it reported."""
        if isinstance(event, TcpConnected) and event.attempt == self.tcp:
            self.tcp_connected = True
        if isinstance(event, TcpFailed | TcpClosed) and event.attempt == self.tcp:
            self.tcp, self.tcp_connected = None, False

    def _execute(self, action: Action) -> None:
        match action:
            case ConnectTcp(attempt):
                assert self.tcp is None, f"ConnectTcp({attempt}) while {self.tcp} is open"
                self.tcp, self.tcp_connected = attempt, False
            case CloseTcp(attempt):
                assert attempt == self.tcp, f"CloseTcp({attempt}), the adapter has {self.tcp}"
                self.tcp, self.tcp_connected = None, False
            case UsePath(via):
                assert via is Via.UDP or self.tcp_connected, "UsePath(TCP) without a connection"
                self.path = via
            case Probe(via):
                assert via is self.path, f"Probe({via}) while the session uses {self.path}"
            case _:
                pass

    def check(self) -> None:
        """The invariants, after any input."""
        policy = self.policy
        state = policy.state
        if self.path is Via.TCP and state not in SESSIONLESS:
            assert self.tcp is not None and self.tcp_connected, "on TCP without a connection"
        if state not in SESSIONLESS:
            assert policy.path is self.path, "the policy's path is not the session's"
        else:
            self.path = Via.UDP  # a new session starts there
        deadline = policy.next_deadline()
        if state in NO_DEADLINE:
            assert deadline is None, f"{state.name} has a deadline"
        else:
            assert deadline is not None, f"{state.name} has no deadline"
            assert math.isfinite(deadline), deadline
            assert deadline > self.now, f"{state.name}: deadline {deadline} <= now {self.now}"

    # -- driving helpers ----------------------------------------------------------------

    def run_to(self, t: float, view: SessionView | None = None) -> None:
        """Fire every deadline up to ``t`` with ``view`` (quiet statistics by default)."""
        view = view or QUIET
        while (deadline := self.policy.next_deadline()) is not None and deadline <= t:
            self.feed(Timer(deadline, view))
        self.now = max(self.now, t)

    @property
    def last_at(self) -> float:
        """When the newest input happened (a Timer: its deadline)."""
        return self.log[-1][0].now

    def actions_of(self, kind: type) -> list[Action]:
        """Every action of ``kind`` returned so far."""
        return [a for _, actions in self.log for a in actions if isinstance(a, kind)]


# -- reaching each state through ordinary inputs ----------------------------------------

#: Data waiting for an answer: silence counts.
BUSY = SessionView(srtt=0.1, bytes_in_flight=10_000)
UDP, TCP = Via.UDP, Via.TCP


def started(**config: float | bool) -> Checked:
    c = Checked.new(**config)
    c.feed(SessionStarted(0.0))
    return c


def on_udp(**config: float | bool) -> Checked:
    c = started(**config)
    c.feed(AuthenticatedPacket(0.05, UDP))
    assert c.at(S.UDP_OK)
    return c


def in_race(**config: float | bool) -> Checked:
    """UDP worked, then went silent while busy: the probe failed, the race is on."""
    c = on_udp(**config)
    c.feed(Timer(0.5, BUSY))  # early: changes nothing but the statistics (RTT 0.1 s)
    c.feed(Outage(1.0))
    assert c.at(S.UDP_PROBE)
    c.run_to(1.0 + rules.PROBE_WAIT_MIN)
    assert c.at(S.RACE)
    return c


def on_tcp(**config: float | bool) -> Checked:
    """UDP never answered: TCP alone, adopted once connected and answering."""
    c = started(**config)
    c.run_to(3.0)
    assert c.at(S.RACE)
    c.feed(TcpConnected(3.05, c.attempt))
    assert c.at(S.TCP_VERIFY)
    c.feed(AuthenticatedPacket(3.1, TCP))
    assert c.at(S.TCP_OK)
    return c


def asking(**config: float | bool) -> Checked:
    c = in_race(**config)
    c.feed(TcpFailed(2.0, c.attempt))
    c.run_to(3.0)
    assert c.at(S.ASKING)
    return c


def reach(state: TransportState) -> Checked:
    """A policy in ``state``, reached through ordinary inputs."""
    recipes: dict[TransportState, Callable[[], Checked]] = {
        S.CREATING: Checked.new,
        S.UDP_WAIT: started,
        S.UDP_OK: on_udp,
        S.UDP_PROBE: lambda: _then(on_udp(), Outage(1.0)),
        S.RACE: in_race,
        S.TCP_VERIFY: lambda: _then(in_race(), TcpConnected(2.1, 1)),
        S.TCP_OK: on_tcp,
        S.TCP_PROBE: lambda: _then(on_tcp(), Outage(4.0)),
        S.UDP_RETRY: lambda: _run(on_tcp(), 33.2),
        S.ASKING: asking,
        S.WAITING: lambda: _then(asking(), ServerRestartAnswer(3.1, False)),
        S.BACKOFF: lambda: _then(asking(), ServerRestartAnswer(3.1, True), RecreateFailed(3.2)),
        S.ENDED: lambda: _then(started(can_recreate=False), SessionEnded(0.1)),
        S.CLOSED: lambda: _then(on_udp(), Close(0.2)),
    }
    c = recipes[state]()
    assert c.state is state
    return c


def _then(c: Checked, *events: Input) -> Checked:
    for event in events:
        c.feed(event)
    return c


def _run(c: Checked, t: float) -> Checked:
    c.run_to(t)
    return c

"""TransportPolicy under hypothesis: any input, in any state, at any time.

Random sequences of every input kind (TCP reports for the current attempt and for stale
ones, timers early, due and late, statistics busy and quiet) go through ``Checked``,
which asserts after each one that the state is one the table allows for that pair and
that the invariants hold: never two TCP connections, one path in use and TCP only with
a connection, Probe only on that path, deadlines finite and in the future, nothing
done once closed. A second machine pins the TCP reports to what a real adapter can say.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from resip_proxy.transport_events import (
    INPUT_KINDS,
    AuthenticatedPacket,
    Close,
    Input,
    Outage,
    PolicyConfig,
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
    UdpSocketDead,
    Via,
)
from resip_proxy.transport_policy import TransportPolicy

from .policy_model import Checked, reach

#: Time steps: bursts (0), a few round trips, and long gaps past every deadline.
steps = st.one_of(
    st.just(0.0),
    st.floats(0.0, 0.5),
    st.floats(0.5, 40.0),
    st.sampled_from([0.3, 0.75, 1.0, 1.5, 3.0, 5.0, 10.0, 30.0]),
)
views = st.builds(
    SessionView,
    srtt=st.floats(0.001, 3.0),
    loss=st.floats(0.0, 1.0),
    bytes_in_flight=st.integers(0, 1 << 20),
    last_activity=st.floats(-100.0, 200.0),
    in_outage=st.booleans(),
)
vias = st.sampled_from(list(Via))
ONTO_TCP = frozenset({TransportState.UDP_OK, TransportState.UDP_PROBE, TransportState.RACE})


def input_of(kind: type[Input], c: Checked) -> st.SearchStrategy[Input]:
    """Inputs of ``kind`` from ``c.now`` on, current and stale TCP attempts alike."""
    now = st.builds(lambda dt: c.now + dt, steps)
    if kind is AuthenticatedPacket:
        return st.builds(kind, now, vias)
    if kind is Timer:
        due = c.policy.next_deadline()
        times = now if due is None else st.one_of(now, st.just(due))
        return st.builds(kind, times, views)
    if kind in (TcpConnected, TcpFailed, TcpClosed):
        return st.builds(kind, now, st.sampled_from([c.attempt, c.attempt - 1, c.attempt + 1]))
    if kind is ServerRestartAnswer:
        return st.builds(kind, now, st.booleans())
    return st.builds(kind, now)


@pytest.mark.parametrize("kind", INPUT_KINDS, ids=lambda k: k.__name__)
@pytest.mark.parametrize("state", list(TransportState), ids=lambda s: s.name)
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_state_and_input_with_any_parameters_then_anything(
    state: TransportState, kind: type[Input], data: st.DataObject
) -> None:
    """Each (state, input) pair with drawn parameters, then a few arbitrary inputs."""
    c = reach(state)
    c.feed(data.draw(input_of(kind, c)))  # Checked asserts table target and invariants
    for follow in data.draw(st.lists(st.sampled_from(INPUT_KINDS), max_size=4)):
        c.feed(data.draw(input_of(follow, c)))


class AnyInput(RuleBasedStateMachine):
    """Every input kind, freely; the policy must cope with all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.c = Checked(TransportPolicy())

    @initialize(
        can_recreate=st.booleans(),
        udp_timeout=st.sampled_from([0.3, 1.0, 3.0]),
        udp_retry=st.sampled_from([0.5, 5.0, 30.0]),
        started=st.booleans(),
    )
    def configure(
        self, can_recreate: bool, udp_timeout: float, udp_retry: float, started: bool
    ) -> None:
        config = PolicyConfig(udp_timeout, udp_retry, can_recreate)
        self.c = Checked(TransportPolicy(config))
        if started:
            self.c.feed(SessionStarted(0.0))

    def at(self, dt: float) -> float:
        return self.c.now + dt

    @rule(dt=steps, via=vias)
    def packet(self, dt: float, via: Via) -> None:
        self.c.feed(AuthenticatedPacket(self.at(dt), via))

    @rule(dt=steps, view=views)
    def timer(self, dt: float, view: SessionView) -> None:
        self.c.feed(Timer(self.at(dt), view))

    @precondition(lambda self: self.c.policy.next_deadline() is not None)
    @rule(view=views, late=st.floats(0.0, 2.0))
    def timer_when_due(self, view: SessionView, late: float) -> None:
        deadline = self.c.policy.next_deadline()
        assert deadline is not None
        self.c.feed(Timer(deadline + late, view))

    @rule(dt=steps, kind=st.sampled_from([TcpConnected, TcpFailed, TcpClosed]), stale=st.booleans())
    def tcp_report(
        self, dt: float, kind: type[TcpConnected | TcpFailed | TcpClosed], stale: bool
    ) -> None:
        attempt = self.c.attempt - 1 if stale else self.c.attempt
        self.c.feed(kind(self.at(dt), attempt))

    @rule(dt=steps, kind=st.sampled_from([UdpSocketDead, Outage]))
    def trouble(self, dt: float, kind: type[UdpSocketDead | Outage]) -> None:
        self.c.feed(kind(self.at(dt)))

    @rule(
        dt=steps,
        kind=st.sampled_from([SessionEnded, SessionStarted, RecreateFailed, Close]),
        roll=st.integers(0, 5),
    )
    def rare(self, dt: float, kind: type[SessionEnded | SessionStarted | Close], roll: int) -> None:
        # Rare, or most runs would spend their steps closed or re-creating.
        if roll == 0:
            self.c.feed(kind(self.at(dt)))

    @precondition(lambda self: self.c.state is TransportState.CREATING)
    @rule(dt=steps, ok=st.integers(0, 4))
    def creation_ends(self, dt: float, ok: int) -> None:
        self.c.feed(SessionStarted(self.at(dt)) if ok else RecreateFailed(self.at(dt)))

    @rule(dt=steps, restarted=st.booleans())
    def restart_answer(self, dt: float, restarted: bool) -> None:
        self.c.feed(ServerRestartAnswer(self.at(dt), restarted))

    @precondition(lambda self: self.c.state in ONTO_TCP)
    @rule(late=st.floats(0.0, 0.5))
    def onto_tcp(self, late: float) -> None:
        """Drive to the fallback, so the TCP states get their share of random inputs."""
        c = self.c
        if c.state is not TransportState.RACE:
            c.feed(UdpSocketDead(c.now))
        if c.tcp is not None and not c.tcp_connected:
            c.feed(TcpConnected(c.now + 0.01, c.tcp))
        while c.state is TransportState.RACE and (deadline := c.policy.next_deadline()):
            c.feed(Timer(deadline + late))
        if c.state is TransportState.TCP_VERIFY:
            c.feed(AuthenticatedPacket(c.now + 0.05, Via.TCP))

    @invariant()
    def consistent(self) -> None:
        self.c.check()


class RealisticAdapter(AnyInput):
    """TCP reports only as a real adapter makes them: connected once, then maybe closed."""

    @rule(dt=steps, kind=st.sampled_from([TcpConnected, TcpFailed, TcpClosed]), stale=st.booleans())
    def tcp_report(
        self, dt: float, kind: type[TcpConnected | TcpFailed | TcpClosed], stale: bool
    ) -> None:
        c = self.c
        if c.tcp is None:
            return
        if (kind is TcpClosed) != c.tcp_connected:
            return  # only a connecting attempt fails; only a connected one closes
        c.feed(kind(self.at(dt), c.tcp))


_settings = settings(
    max_examples=100, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)
TestAnyInput = AnyInput.TestCase
TestAnyInput.settings = _settings
TestRealisticAdapter = RealisticAdapter.TestCase
TestRealisticAdapter.settings = _settings

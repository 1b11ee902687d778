"""TransportPolicy: the table over every (state, input) pair, and each transport rule.

Times below are the policy's clock (seconds). ``Checked`` (policy_model.py) asserts the
invariants after every input, so each test also checks them along its way.
"""

from __future__ import annotations

import pytest

from resip_proxy import transport_rules as rules
from resip_proxy.transport_events import (
    INPUT_KINDS,
    AskServerStart,
    AuthenticatedPacket,
    Close,
    CloseTcp,
    ConnectTcp,
    Input,
    Notice,
    OpenUdpSocket,
    Outage,
    Probe,
    RecreateFailed,
    RecreateSession,
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
    UsePath,
    Via,
)
from resip_proxy.transport_policy import TRANSITIONS

from .policy_model import BUSY, Checked, asking, in_race, on_tcp, on_udp, reach, started

S = TransportState
UDP, TCP = Via.UDP, Via.TCP


def variants(c: Checked) -> list[Input]:
    """Every kind of input, with the variants that take different branches."""
    t = c.now + 0.01
    attempt = c.attempt
    deadline = c.policy.next_deadline()
    due = [] if deadline is None else [Timer(deadline, SessionView()), Timer(deadline, BUSY)]
    return [
        SessionStarted(t),
        AuthenticatedPacket(t, UDP),
        AuthenticatedPacket(t, TCP),
        UdpSocketDead(t),
        *(kind(t, n) for kind in (TcpConnected, TcpFailed, TcpClosed) for n in (attempt, 99)),
        Timer(t, BUSY),
        *due,
        Outage(t),
        SessionEnded(t),
        ServerRestartAnswer(t, True),
        ServerRestartAnswer(t, False),
        RecreateFailed(t),
        Close(t),
    ]


def test_the_table_covers_every_state_and_input() -> None:
    assert set(TRANSITIONS) == {(s, k) for s in TransportState for k in INPUT_KINDS}
    assert all(TRANSITIONS[(s, Close)].targets == {S.CLOSED} for s in S if s is not S.CLOSED)


@pytest.mark.parametrize("state", list(TransportState), ids=lambda s: s.name)
def test_every_input_in_every_state_lands_where_the_table_says(state: TransportState) -> None:
    kinds = set()
    for event in variants(reach(state)):
        reach(state).feed(event)  # Checked asserts the target state and the invariants
        kinds.add(type(event))
    assert kinds == set(INPUT_KINDS)


# -- UDP ------------------------------------------------------------------------------------


def test_udp_answering_within_udp_timeout_stays_on_udp() -> None:
    c = started()
    assert c.log[-1][1] == [UsePath(UDP)]
    c.feed(AuthenticatedPacket(2.9, UDP))
    assert c.at(S.UDP_OK)
    c.run_to(60.0)  # quiet statistics: nothing waits, so silence is no trouble
    assert c.at(S.UDP_OK)
    assert c.actions_of(ConnectTcp) == []


def test_udp_blocked_from_the_start_takes_tcp_alone_after_udp_timeout() -> None:
    c = started()
    c.run_to(2.99)
    assert c.at(S.UDP_WAIT)
    c.run_to(3.0)
    # UDP never answered: no fresh socket, and TCP is taken as soon as it connects.
    assert c.log[-1][1] == [ConnectTcp(1)]
    c.feed(TcpConnected(3.2, 1))
    assert c.log[-1][1] == [UsePath(TCP)]
    c.feed(AuthenticatedPacket(3.3, TCP))
    assert c.policy.transport is TCP
    assert Notice("warning", "UDP gets no answer; using the TCP fallback") in c.log[-1][1]


def test_udp_silent_mid_transfer_probes_then_races_and_moves_to_tcp_within_5_s() -> None:
    c = on_udp()
    c.run_to(1.5, BUSY)  # heard at 0.05: silent from 1.55 on
    assert c.at(S.UDP_OK)
    c.run_to(1.6, BUSY)
    assert c.at(S.UDP_PROBE)
    probe_at = c.last_at
    assert probe_at == pytest.approx(1.55, abs=0.03)
    assert Probe(UDP) in c.log[-1][1]
    c.run_to(probe_at + 0.75, BUSY)
    assert c.at(S.RACE)
    assert c.log[-1][1] == [OpenUdpSocket(), UsePath(UDP), ConnectTcp(1)]
    race_at = c.last_at
    c.feed(TcpConnected(race_at + 0.05, 1))
    assert c.at(S.RACE)  # UDP keeps max(0.3, 3 RTT) since the race began
    c.run_to(race_at + 0.29, BUSY)
    assert c.at(S.RACE)
    c.run_to(race_at + 0.3, BUSY)
    assert c.at(S.TCP_VERIFY)
    c.feed(AuthenticatedPacket(race_at + 0.4, TCP))
    assert c.policy.transport is TCP
    assert c.now < 5.0


def test_silence_counts_only_while_data_waits() -> None:
    c = on_udp()
    idle_channel = SessionView(srtt=0.1, last_activity=-100.0)
    c.run_to(30.0, idle_channel)
    assert c.at(S.UDP_OK)  # an ssh session waiting for a key press: no probing
    download = SessionView(srtt=0.1, last_activity=29.0)  # nothing of ours in flight
    c.run_to(31.0, download)
    assert c.at(S.UDP_PROBE)


def test_a_probe_answered_on_the_same_socket_keeps_it() -> None:
    c = on_udp()
    c.feed(Outage(5.0))
    c.feed(AuthenticatedPacket(5.2, UDP))
    assert c.at(S.UDP_OK)
    assert c.actions_of(OpenUdpSocket) == [] and c.actions_of(ConnectTcp) == []


def test_a_dead_udp_socket_is_replaced_at_once() -> None:
    c = on_udp()
    c.feed(UdpSocketDead(2.0))
    assert c.at(S.RACE)
    assert c.log[-1][1] == [OpenUdpSocket(), UsePath(UDP), ConnectTcp(1)]


def test_a_late_dead_report_about_the_replaced_socket_starts_no_second_race() -> None:
    c = on_udp()
    c.feed(UdpSocketDead(2.0))  # the race: a fresh socket is on its way
    c.feed(UdpSocketDead(2.001))  # the old socket again, before the adapter swapped them
    c.feed(AuthenticatedPacket(2.1, UDP))  # the fresh socket is answered
    assert c.at(S.UDP_OK)
    c.run_to(10.0)
    assert c.at(S.UDP_OK)
    assert len(c.actions_of(OpenUdpSocket)) == 1 and len(c.actions_of(ConnectTcp)) == 1


def test_udp_winning_the_race_drops_the_tcp_connection() -> None:
    c = in_race()
    c.feed(TcpConnected(1.8, 1))
    c.feed(AuthenticatedPacket(1.85, UDP))
    assert c.at(S.UDP_OK)
    assert c.log[-1][1] == [CloseTcp(1)]


def test_tcp_connecting_late_is_taken_at_once_and_does_not_hide_udp() -> None:
    c = in_race()
    c.run_to(5.0, BUSY)  # the UDP window (0.75 s) is long over; TCP still connecting
    assert c.at(S.RACE)
    c.feed(AuthenticatedPacket(5.5, UDP))  # UDP comes back first: it wins
    assert c.at(S.UDP_OK)
    c = in_race()
    c.feed(TcpConnected(5.0, 1))
    assert c.at(S.TCP_VERIFY)


def test_tcp_failing_early_leaves_udp_its_window_then_asks_the_server() -> None:
    c = in_race()
    race_at = c.last_at
    c.feed(TcpFailed(race_at + 0.1, 1))
    assert c.at(S.RACE)
    c.run_to(race_at + 0.74, BUSY)
    assert c.at(S.RACE)
    c.run_to(race_at + 0.75, BUSY)
    assert c.at(S.ASKING)
    assert c.log[-1][1] == [UsePath(UDP), AskServerStart()]


def test_tcp_connect_times_out() -> None:
    c = in_race()
    race_at = c.last_at
    c.run_to(race_at + rules.TCP_CONNECT_TIMEOUT, BUSY)
    assert c.at(S.ASKING)
    assert c.actions_of(CloseTcp) == [CloseTcp(1)]


def test_tcp_that_never_answers_is_closed() -> None:
    c = in_race()
    c.feed(TcpConnected(1.8, 1))
    c.run_to(2.05, BUSY)
    assert c.at(S.TCP_VERIFY)
    c.run_to(2.05 + 3.0, BUSY)
    assert c.at(S.ASKING)
    assert CloseTcp(1) in c.log[-1][1]


# -- on the fallback --------------------------------------------------------------------------


def test_udp_is_retried_every_udp_retry_and_taken_back_when_it_answers() -> None:
    c = on_tcp()
    c.run_to(33.09, SessionView())
    assert c.at(S.TCP_OK)
    c.run_to(33.1, SessionView())
    assert c.at(S.UDP_RETRY)
    assert c.policy.transport is TCP  # still the fallback until UDP answers
    c.run_to(36.1, SessionView())  # no answer within udp_timeout: back to TCP
    assert c.at(S.TCP_OK) and c.log[-1][1] == [UsePath(TCP)]
    c.run_to(66.1, SessionView())
    assert c.at(S.UDP_RETRY)
    c.feed(AuthenticatedPacket(66.5, UDP))
    assert c.at(S.UDP_OK)
    assert c.log[-1][1] == [
        Notice("info", "UDP works again; leaving the TCP fallback"),
        CloseTcp(1),
    ]


def test_tcp_lost_or_silent_goes_back_to_udp() -> None:
    c = on_tcp()
    c.feed(TcpClosed(10.0, 1))
    assert c.at(S.UDP_WAIT)
    assert c.policy.path is UDP
    c = on_tcp()
    c.run_to(3.1 + 5.0, BUSY)  # TCP silent 5 s while data waits: probe it
    assert c.at(S.TCP_PROBE)
    c.run_to(9.0, BUSY)
    assert c.at(S.UDP_WAIT)
    assert CloseTcp(1) in c.log[-1][1]


def test_a_download_stalled_on_a_dead_tcp_connection_counts_as_silence() -> None:
    c = on_tcp()
    c.feed(AuthenticatedPacket(10.0, TCP))  # the last data: nothing of ours in flight
    stalled = SessionView(srtt=0.1, last_activity=10.0)
    c.run_to(14.99, stalled)
    assert c.at(S.TCP_OK)
    c.run_to(15.0, stalled)
    assert c.at(S.TCP_PROBE)


def test_a_tcp_probe_answered_keeps_the_fallback() -> None:
    c = on_tcp()
    c.feed(Outage(20.0))
    c.feed(AuthenticatedPacket(20.3, TCP))
    assert c.at(S.TCP_OK)


def test_stale_tcp_reports_are_ignored() -> None:
    c = on_tcp()
    for event in (TcpClosed(5.0, 7), TcpFailed(5.0, 0), TcpConnected(5.0, 2)):
        assert c.feed(event) == []
    assert c.at(S.TCP_OK)


# -- neither answers; re-creation -----------------------------------------------------------


def test_a_restarted_server_means_a_new_session_with_capped_backoff() -> None:
    c = asking()
    c.feed(ServerRestartAnswer(3.1, True))
    assert c.at(S.CREATING) and c.log[-1][1][-1] == RecreateSession()
    waits = []
    for _ in range(8):
        c.feed(RecreateFailed(c.now))
        deadline = c.policy.next_deadline()
        assert deadline is not None
        waits.append(round(deadline - c.now, 3))
        c.run_to(deadline)
        assert c.at(S.CREATING)
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]
    c.feed(SessionStarted(c.now + 1))
    assert c.at(S.UDP_WAIT)
    c.feed(RecreateFailed(c.now + 1))  # stale: ignored outside CREATING
    assert c.at(S.UDP_WAIT)


def test_server_not_restarted_waits_then_tries_udp_again() -> None:
    c = asking()
    race_at = 1.75
    c.feed(ServerRestartAnswer(3.1, False))
    assert c.at(S.WAITING)
    c.run_to(race_at + 30.0 - 0.01)
    assert c.at(S.WAITING)
    c.run_to(race_at + 30.0)
    assert c.at(S.UDP_WAIT)


def test_without_an_api_nothing_is_asked_and_an_ended_session_stays_ended() -> None:
    c = in_race(can_recreate=False)
    c.feed(TcpFailed(2.0, 1))
    c.run_to(3.0)
    assert c.at(S.WAITING)
    assert c.actions_of(AskServerStart) == []
    c.feed(SessionEnded(4.0))
    assert c.at(S.ENDED)
    assert c.feed(Timer(100.0)) == [] and c.feed(AuthenticatedPacket(101.0, UDP)) == []


def test_session_ended_re_creates_and_closing_stops_everything() -> None:
    c = on_tcp()
    assert c.feed(SessionEnded(5.0)) == [CloseTcp(1), RecreateSession()]
    assert c.feed(SessionEnded(5.1)) == []  # the old session being closed
    c = on_tcp()
    assert c.feed(Close(6.0)) == [CloseTcp(1)]
    for event in variants(c):
        assert c.feed(event) == []


def test_a_late_input_first_runs_the_missed_deadline() -> None:
    c = started()
    # UDP_WAIT's deadline (3 s) passed without a Timer: the packet meets the race.
    assert c.policy.handle(AuthenticatedPacket(3.5, UDP)) == [ConnectTcp(1), CloseTcp(1)]
    assert c.policy.state is S.UDP_OK


def test_time_never_runs_backwards() -> None:
    c = on_udp()
    c.feed(Outage(5.0))
    deadline = c.policy.next_deadline()
    c.policy.handle(Timer(1.0, BUSY))  # older than the last input: counts as 5.0
    assert c.policy.next_deadline() == deadline


# -- the numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("srtt", "loss", "patience"),
    [(0.05, 0.0, 1.5), (1.0, 0.0, 4.0), (0.05, 0.5, 3.0), (0.05, 0.9, 10.0), (3.0, 0.0, 10.0)],
)
def test_udp_patience_scales_with_rtt_and_loss(srtt: float, loss: float, patience: float) -> None:
    view = SessionView(srtt=srtt, loss=loss, bytes_in_flight=1)
    assert rules.recheck_in(UDP, 0.0, view, patience - 0.01) is not None
    assert rules.recheck_in(UDP, 0.0, view, patience + 1e-9) is None


def test_tcp_patience_and_probe_waits() -> None:
    view = SessionView(srtt=1.0, bytes_in_flight=1)
    assert rules.recheck_in(TCP, 0.0, view, 7.99) is not None
    assert rules.recheck_in(TCP, 0.0, view, 8.0) is None
    assert rules.recheck_in(TCP, 0.0, SessionView(bytes_in_flight=1), 5.0) is None
    assert rules.probe_wait(SessionView(srtt=0.05)) == 0.75
    assert rules.probe_wait(SessionView(srtt=1.0)) == 3.0
    assert rules.race_grace(SessionView(srtt=0.05)) == 0.3
    assert rules.race_grace(SessionView(srtt=1.0)) == 3.0
    assert rules.recheck_in(UDP, 0.0, SessionView(in_outage=True), 0.1) is None

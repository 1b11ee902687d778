"""The client's transport choice as a sans-IO state machine (docs/ARCHITECTURE.md §8).

:class:`TransportPolicy` decides which way the client session's packets go: UDP, a
fresh UDP socket, the framed-TCP fallback, back to UDP, and a new session once the
server lost ours. It does no I/O and reads no clock: every input carries ``now=``,
:meth:`TransportPolicy.handle` returns the actions to take, in order, and
:meth:`TransportPolicy.next_deadline` says when to feed the next :class:`Timer`. The
asyncio adapter (``SessionManager`` in ``resip_proxy/client.py``) executes the actions
and feeds the inputs; ``tests/unit/test_transport_policy*.py`` drive it through every
(state, input) pair and through the network simulator.

States
------
============  ====================================================================
CREATING      no session: RecreateSession (or the first start) is under way
UDP_WAIT      on UDP, waiting ``udp_timeout`` (3 s) for an authenticated packet
UDP_OK        on UDP and heard; every <= 1 s the session statistics are checked
UDP_PROBE     UDP silent while data waits: a keep-alive on the same socket
RACE          a fresh UDP socket against a new TCP connection (or TCP alone if UDP
              never answered this session)
TCP_VERIFY    TCP connected and in use: does the server answer over it?
TCP_OK        on the TCP fallback; UDP is tried again every ``udp_retry`` (30 s)
TCP_PROBE     TCP silent while data waits: a keep-alive over it
UDP_RETRY     on the fallback, the session is pointed at UDP for ``udp_timeout``
ASKING        neither answers: AskServerStart (did the server restart?)
WAITING       neither answers and the server did not restart: UDP again later
BACKOFF       creating a session failed: try again after 1, 2, 4 ... 30 s
ENDED         the session ended and cannot be re-created (no API); terminal
CLOSED        the manager was closed; terminal
============  ====================================================================

Inputs (each with ``now``): SessionStarted, AuthenticatedPacket(via), UdpSocketDead,
TcpConnected / TcpFailed / TcpClosed(attempt), Timer(view), Outage, SessionEnded,
ServerRestartAnswer(restarted), RecreateFailed, Close. Actions: OpenUdpSocket,
ConnectTcp / CloseTcp(attempt), UsePath(via), Probe(via), AskServerStart,
RecreateSession, Notice(level, message).

Transitions in brief (``TRANSITIONS`` below is the complete table; a pair it marks
``_ignore`` changes nothing, so every input is legal in every state)::

    CREATING   --SessionStarted-->  UDP_WAIT       --RecreateFailed-->  BACKOFF
    UDP_WAIT   --packet(udp)-->     UDP_OK         --Timer-->           RACE
    UDP_OK     --silence/Outage-->  UDP_PROBE      --UdpSocketDead-->   RACE
    UDP_PROBE  --packet(udp)-->     UDP_OK         --Timer/dead-->      RACE
    RACE       --packet(udp)-->     UDP_OK         --TCP up + grace-->  TCP_VERIFY
               --TCP failed, UDP window over-->    ASKING
    TCP_VERIFY --packet(tcp)-->     TCP_OK         --Timer/TcpClosed--> ASKING
    TCP_OK     --silence/Outage-->  TCP_PROBE      --retry time-->      UDP_RETRY
               --TcpClosed-->       UDP_WAIT
    TCP_PROBE  --packet(tcp)-->     TCP_OK         --Timer/TcpClosed--> UDP_WAIT
    UDP_RETRY  --packet(udp)-->     UDP_OK         --Timer/dead-->      TCP_OK
    ASKING     --restarted-->       CREATING       --not restarted-->   WAITING
    WAITING    --Timer/dead-->      UDP_WAIT       --packet(udp)-->     UDP_OK
    BACKOFF    --Timer-->           CREATING
    any live   --SessionEnded-->    CREATING (or ENDED without an API)
    any        --Close-->           CLOSED

Invariants (checked by the tests after every input):

* At most one TCP connection exists: every ConnectTcp follows the CloseTcp (or the
  TcpFailed / TcpClosed) of the previous attempt. Inputs about another attempt than
  the current one are stale and ignored.
* Exactly one path is in use (:attr:`TransportPolicy.path`): it is TCP only while a
  TCP connection is open, and Probe goes only to the path in use.
* :meth:`~TransportPolicy.next_deadline` is None (CREATING and ASKING wait for the
  adapter's answer; ENDED and CLOSED wait for nothing) or finite and later than the
  last input's ``now``. An input that arrives after a missed deadline first runs that
  deadline's timer, so the policy never acts on a stale plan.
* Time never runs backwards: an input older than the last one counts as "now".
* CLOSED answers every input with no action.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import transport_rules as rules
from .transport_events import (
    INPUT_KINDS,
    ON_TCP,
    SESSIONLESS,
    Action,
    AskServerStart,
    AuthenticatedPacket,
    Close,
    CloseTcp,
    ConnectTcp,
    Input,
    Notice,
    OpenUdpSocket,
    Outage,
    PolicyConfig,
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

__all__ = ["TRANSITIONS", "Transition", "TransportPolicy"]


S = TransportState
TcpStatus = Literal["none", "connecting", "open"]
Step = Callable[["TransportPolicy", float], None]


class TransportPolicy:
    """The transport choice of one client; see the module docstring."""

    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()
        self._state = S.CREATING
        self._now = -math.inf
        self._deadline: float | None = None
        self._actions: list[Action] = []
        self._path = Via.UDP
        #: When each kind of path last carried an authenticated packet (this session).
        self._heard: dict[Via, float | None] = {Via.UDP: None, Via.TCP: None}
        self._udp_dead = False
        #: The statistics of the newest Timer.
        self._view = SessionView()
        self._tcp: TcpStatus = "none"
        self._attempt = 0
        #: When the race began (and with it the attempts "neither answers" refers to).
        self._escalated_at = 0.0
        self._race_window = 0.0
        self._race_grace = 0.0
        self._retry_at = 0.0
        self._backoff = rules.RECREATE_BACKOFF_FIRST

    @property
    def state(self) -> TransportState:
        """The current state."""
        return self._state

    @property
    def path(self) -> Via:
        """The path the session is pointed at."""
        return self._path

    @property
    def transport(self) -> Via:
        """The transport the session is committed to (TCP while on the fallback)."""
        return Via.TCP if self._state in ON_TCP else Via.UDP

    def next_deadline(self) -> float | None:
        """When to feed the next :class:`Timer`; None: only other inputs matter."""
        return self._deadline

    def handle(self, event: Input) -> list[Action]:
        """Take one input; return the actions to execute, in order."""
        now = max(event.now, self._now)
        self._now = now
        due = self._deadline is not None and now >= self._deadline
        if due and not isinstance(event, Timer):
            # Catch up with a deadline the adapter has not fired yet: act as it would have
            # (every timer handler leaves a deadline after ``now``, so once is enough).
            self._dispatch(Timer(now, self._view), now)
        self._dispatch(event, now)
        actions, self._actions = self._actions, []
        return actions

    def _dispatch(self, event: Input, now: float) -> None:
        TRANSITIONS[(self._state, type(event))].handler(self, event, now)

    # -- small steps -------------------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _enter(self, state: TransportState, deadline: float | None) -> None:
        self._state = state
        self._deadline = deadline

    def _use(self, via: Via) -> None:
        self._path = via
        self._emit(UsePath(via))

    def _open_udp(self) -> None:
        self._udp_dead = False
        self._emit(OpenUdpSocket())

    def _connect_tcp(self, now: float) -> None:
        self._close_tcp()  # never two connections
        self._attempt += 1
        self._tcp = "connecting"
        self._emit(ConnectTcp(self._attempt))

    def _close_tcp(self) -> None:
        if self._tcp != "none":
            self._tcp = "none"
            self._emit(CloseTcp(self._attempt))

    def _silent(self, via: Via, now: float) -> float | None:
        """``recheck_in`` for ``via``; a UDP socket that cannot send is silent."""
        if via is Via.UDP and self._udp_dead:
            return None
        return rules.recheck_in(via, self._heard[via], self._view, now)

    # -- entering states (each a Step) -------------------------------------------------------

    def _to_udp_wait(self, now: float) -> None:
        if self._udp_dead:
            self._open_udp()  # it cannot send at all: its address is gone
        self._use(Via.UDP)
        self._enter(S.UDP_WAIT, now + self.config.udp_timeout)

    def _to_udp_ok(self, now: float) -> None:
        self._enter(S.UDP_OK, now + rules.RECHECK_MAX)

    def _check_udp(self, now: float) -> None:
        left = self._silent(Via.UDP, now)
        if left is not None:
            self._deadline = now + left
        elif self._udp_dead:
            self._to_race(now)  # a socket that cannot send: no point asking on it
        else:
            self._to_udp_probe(now)

    def _to_udp_probe(self, now: float) -> None:
        # Maybe only our last packets were lost: ask on the same socket first.
        self._emit(Notice("debug", "UDP silent or an outage: probing"))
        self._emit(Probe(self._path))
        self._enter(S.UDP_PROBE, now + rules.probe_wait(self._view))

    def _to_race(self, now: float) -> None:
        """UDP does not answer: a fresh socket against TCP, or TCP alone.

        If UDP worked this session (or its socket died), our address may have changed
        (Wi-Fi to LTE) and a connected socket keeps its old source: a fresh socket
        races a TCP connection. UDP that never answered gets no second socket: TCP is
        taken as soon as it connects.
        """
        self._escalated_at = now
        if self._heard[Via.UDP] is not None or self._udp_dead:
            self._open_udp()
            self._use(Via.UDP)
            self._race_window = rules.probe_wait(self._view)
            self._race_grace = rules.race_grace(self._view)
        else:
            self._race_window = self._race_grace = 0.0
        self._connect_tcp(now)
        self._enter(S.RACE, now + rules.TCP_CONNECT_TIMEOUT)

    def _udp_wins(self, now: float) -> None:
        self._close_tcp()  # drop the connection made in case UDP would not come back
        self._to_udp_ok(now)

    def _race_deadline(self, now: float) -> None:
        if self._tcp == "connecting":
            self._close_tcp()  # the connect timed out
        self._settle_race(now)

    def _settle_race(self, now: float) -> None:
        """Decide the race, or set the deadline by which it will be decided."""
        if self._tcp == "open":
            # TCP is taken once UDP has had its grace since the race began.
            adopt_at = self._escalated_at + self._race_grace
            if now < adopt_at:
                self._deadline = adopt_at
            else:
                self._to_tcp_verify(now)
        else:  # TCP failed or timed out: UDP keeps the rest of its window
            end = self._escalated_at + self._race_window
            if now < end:
                self._deadline = end
            else:
                self._to_asking(now)

    def _to_tcp_verify(self, now: float) -> None:
        self._use(Via.TCP)
        self._enter(S.TCP_VERIFY, now + self.config.udp_timeout)

    def _tcp_verified(self, now: float) -> None:
        self._emit(Notice("warning", "UDP gets no answer; using the TCP fallback"))
        self._retry_at = now + self.config.udp_retry
        self._to_tcp_ok(now)

    def _to_tcp_ok(self, now: float) -> None:
        if now >= self._retry_at:
            self._to_udp_retry(now)  # the retry fell due while we were probing
        else:
            self._enter(S.TCP_OK, min(self._retry_at, now + rules.RECHECK_MAX))

    def _check_tcp(self, now: float) -> None:
        left = self._silent(Via.TCP, now)
        if left is None:
            # Silent, not closed: maybe just quiet (a download that ended). Ask first.
            self._to_tcp_probe(now)
        elif now >= self._retry_at:
            self._to_udp_retry(now)
        else:
            self._deadline = min(self._retry_at, now + left)

    def _to_tcp_probe(self, now: float) -> None:
        self._emit(Probe(self._path))
        self._enter(S.TCP_PROBE, now + rules.probe_wait(self._view))

    def _leave_tcp(self, now: float) -> None:
        self._emit(Notice("info", "TCP fallback lost or silent; trying UDP again"))
        self._close_tcp()
        self._to_udp_wait(now)

    def _to_udp_retry(self, now: float) -> None:
        if self._udp_dead:
            self._open_udp()  # its address is gone: the retry needs a new socket
        self._use(Via.UDP)
        self._enter(S.UDP_RETRY, now + self.config.udp_timeout)

    def _udp_works_again(self, now: float) -> None:
        self._emit(Notice("info", "UDP works again; leaving the TCP fallback"))
        self._close_tcp()
        self._to_udp_ok(now)

    def _back_to_tcp(self, now: float) -> None:
        self._use(Via.TCP)
        self._retry_at = now + self.config.udp_retry
        self._to_tcp_ok(now)

    def _to_asking(self, now: float) -> None:
        self._close_tcp()
        self._use(Via.UDP)
        if self.config.can_recreate:
            self._emit(AskServerStart())
            self._enter(S.ASKING, None)
        else:
            self._to_waiting(now)

    def _to_waiting(self, now: float) -> None:
        # Nothing answers: the session keeps probing on its own (capped backoff); look
        # again after a while, or as soon as something changes.
        self._emit(Notice("debug", "neither UDP nor TCP answers; waiting"))
        end = self._escalated_at + self.config.udp_retry
        heard = self._heard[Via.UDP]
        if self._udp_dead or now >= end or (heard is not None and heard >= self._escalated_at):
            self._to_udp_wait(now)
        else:
            self._enter(S.WAITING, end)

    def _recreate(self, now: float) -> None:
        self._close_tcp()
        self._path = Via.UDP  # the new session starts there
        self._emit(RecreateSession())
        self._enter(S.CREATING, None)

    # -- handlers that read their input ----------------------------------------------------

    def _ignore(self, event: Input, now: float) -> None:
        pass

    def _record(self, event: AuthenticatedPacket, now: float) -> None:
        if event.via is Via.UDP:
            # An answer proves the socket sends: a dead report about the socket it
            # replaced (arriving before the adapter swapped them) is void.
            self._udp_dead = False
            self._heard[Via.UDP] = now
        elif self._tcp == "open":
            self._heard[Via.TCP] = now

    def _on_close(self, event: Close, now: float) -> None:
        self._close_tcp()
        self._path = Via.UDP
        self._enter(S.CLOSED, None)

    def _on_session_ended(self, event: SessionEnded, now: float) -> None:
        if self.config.can_recreate:
            self._recreate(now)
        else:  # built from credentials: nothing to re-create the session with
            self._close_tcp()
            self._path = Via.UDP
            self._enter(S.ENDED, None)

    def _on_session_started(self, event: SessionStarted, now: float) -> None:
        self._close_tcp()
        self._heard = {Via.UDP: None, Via.TCP: None}
        self._retry_at = 0.0
        self._backoff = rules.RECREATE_BACKOFF_FIRST
        self._to_udp_wait(now)

    def _race_tcp_connected(self, event: TcpConnected, now: float) -> None:
        if event.attempt == self._attempt and self._tcp == "connecting":
            self._tcp = "open"
            self._settle_race(now)

    def _on_restart_answer(self, event: ServerRestartAnswer, now: float) -> None:
        if event.restarted:
            self._emit(Notice("warning", "the server restarted: our session is gone"))
            self._recreate(now)
        else:
            self._to_waiting(now)

    def _on_recreate_failed(self, event: RecreateFailed, now: float) -> None:
        self._enter(S.BACKOFF, now + self._backoff)
        self._backoff = min(self._backoff * 2, rules.RECREATE_BACKOFF_CAP)


# -- the table -----------------------------------------------------------------------------

Handler = Callable[[TransportPolicy, Any, float], None]
"""A handler takes the input type its table key names (hence ``Any`` here)."""


def _when_due(step: Step) -> Handler:
    """Timer: note the statistics; once the deadline has come, take ``step``."""

    def handler(policy: TransportPolicy, event: Timer, now: float) -> None:
        policy._view = event.view
        if policy._deadline is not None and now >= policy._deadline:
            step(policy, now)

    return handler


def _packet(via: Via, step: Step) -> Handler:
    """AuthenticatedPacket: note it; if it came over ``via``, take ``step``."""

    def handler(policy: TransportPolicy, event: AuthenticatedPacket, now: float) -> None:
        policy._record(event, now)
        if event.via is via:
            step(policy, now)

    return handler


def _tcp_lost(step: Step) -> Handler:
    """TcpFailed / TcpClosed of the current attempt (others are stale): take ``step``."""

    def handler(policy: TransportPolicy, event: TcpFailed | TcpClosed, now: float) -> None:
        if event.attempt == policy._attempt and policy._tcp != "none":
            policy._tcp = "none"
            step(policy, now)

    return handler


def _udp_dead(step: Step | None = None) -> Handler:
    """UdpSocketDead: remember that the socket needs replacing; take ``step`` if any."""

    def handler(policy: TransportPolicy, event: UdpSocketDead, now: float) -> None:
        policy._udp_dead = True
        if step is not None:
            step(policy, now)

    return handler


def _then(step: Step) -> Handler:
    """Any input: take ``step``."""

    def handler(policy: TransportPolicy, event: Input, now: float) -> None:
        step(policy, now)

    return handler


@dataclass(frozen=True, slots=True)
class Transition:
    """What (state, input kind) does: the handler, and every state it may end in."""

    handler: Handler
    targets: frozenset[TransportState]


P = TransportPolicy
_Row = dict[type[Input], tuple[Handler, frozenset[TransportState]]]


def _to(*states: TransportState) -> frozenset[TransportState]:
    return frozenset(states)


#: Where "neither answers" leads: ASKING, or without an API straight on to WAITING,
#: or to UDP_WAIT when UDP answered meanwhile or its socket died.
_ASK_END = _to(S.ASKING, S.WAITING, S.UDP_WAIT)
#: Entering TCP_OK goes on to UDP_RETRY if the retry fell due meanwhile.
_TCP_STAY = _to(S.TCP_OK, S.UDP_RETRY)
_LEAVE_TCP = _to(S.UDP_WAIT)

#: Per state, the inputs that do something; every other input is ignored there, except
#: the common rows of ``_table`` (Close, SessionStarted, SessionEnded).
_ROWS: dict[TransportState, _Row] = {
    S.CREATING: {
        RecreateFailed: (P._on_recreate_failed, _to(S.BACKOFF)),
    },
    S.UDP_WAIT: {
        AuthenticatedPacket: (_packet(Via.UDP, P._to_udp_ok), _to(S.UDP_WAIT, S.UDP_OK)),
        UdpSocketDead: (_udp_dead(), _to(S.UDP_WAIT)),
        Timer: (_when_due(P._to_race), _to(S.UDP_WAIT, S.RACE)),
    },
    S.UDP_OK: {
        AuthenticatedPacket: (P._record, _to(S.UDP_OK)),
        UdpSocketDead: (_udp_dead(P._to_race), _to(S.RACE)),
        Timer: (_when_due(P._check_udp), _to(S.UDP_OK, S.UDP_PROBE, S.RACE)),
        Outage: (_then(P._to_udp_probe), _to(S.UDP_PROBE)),
    },
    S.UDP_PROBE: {
        AuthenticatedPacket: (_packet(Via.UDP, P._to_udp_ok), _to(S.UDP_PROBE, S.UDP_OK)),
        UdpSocketDead: (_udp_dead(P._to_race), _to(S.RACE)),
        Timer: (_when_due(P._to_race), _to(S.UDP_PROBE, S.RACE)),
    },
    S.RACE: {
        AuthenticatedPacket: (_packet(Via.UDP, P._udp_wins), _to(S.RACE, S.UDP_OK)),
        UdpSocketDead: (_udp_dead(), _to(S.RACE)),
        TcpConnected: (P._race_tcp_connected, _to(S.RACE, S.TCP_VERIFY)),
        TcpFailed: (_tcp_lost(P._settle_race), _ASK_END | {S.RACE}),
        TcpClosed: (_tcp_lost(P._settle_race), _ASK_END | {S.RACE}),
        Timer: (_when_due(P._race_deadline), _ASK_END | {S.RACE, S.TCP_VERIFY}),
    },
    S.TCP_VERIFY: {
        AuthenticatedPacket: (_packet(Via.TCP, P._tcp_verified), _TCP_STAY | {S.TCP_VERIFY}),
        UdpSocketDead: (_udp_dead(), _to(S.TCP_VERIFY)),
        TcpFailed: (_tcp_lost(P._to_asking), _ASK_END | {S.TCP_VERIFY}),
        TcpClosed: (_tcp_lost(P._to_asking), _ASK_END | {S.TCP_VERIFY}),
        Timer: (_when_due(P._to_asking), _ASK_END | {S.TCP_VERIFY}),
    },
    S.TCP_OK: {
        AuthenticatedPacket: (P._record, _to(S.TCP_OK)),
        UdpSocketDead: (_udp_dead(), _to(S.TCP_OK)),
        TcpFailed: (_tcp_lost(P._leave_tcp), _LEAVE_TCP | {S.TCP_OK}),
        TcpClosed: (_tcp_lost(P._leave_tcp), _LEAVE_TCP | {S.TCP_OK}),
        Timer: (_when_due(P._check_tcp), _to(S.TCP_OK, S.TCP_PROBE, S.UDP_RETRY)),
        Outage: (_then(P._to_tcp_probe), _to(S.TCP_PROBE)),
    },
    S.TCP_PROBE: {
        AuthenticatedPacket: (_packet(Via.TCP, P._to_tcp_ok), _TCP_STAY | {S.TCP_PROBE}),
        UdpSocketDead: (_udp_dead(), _to(S.TCP_PROBE)),
        TcpFailed: (_tcp_lost(P._leave_tcp), _LEAVE_TCP | {S.TCP_PROBE}),
        TcpClosed: (_tcp_lost(P._leave_tcp), _LEAVE_TCP | {S.TCP_PROBE}),
        Timer: (_when_due(P._leave_tcp), _LEAVE_TCP | {S.TCP_PROBE}),
    },
    S.UDP_RETRY: {
        AuthenticatedPacket: (_packet(Via.UDP, P._udp_works_again), _to(S.UDP_RETRY, S.UDP_OK)),
        # This socket cannot answer: stop stalling the fallback.
        UdpSocketDead: (_udp_dead(P._back_to_tcp), _to(S.TCP_OK)),
        TcpFailed: (_tcp_lost(P._leave_tcp), _LEAVE_TCP | {S.UDP_RETRY}),
        TcpClosed: (_tcp_lost(P._leave_tcp), _LEAVE_TCP | {S.UDP_RETRY}),
        Timer: (_when_due(P._back_to_tcp), _to(S.UDP_RETRY, S.TCP_OK)),
    },
    S.ASKING: {
        AuthenticatedPacket: (_packet(Via.UDP, P._to_udp_ok), _to(S.ASKING, S.UDP_OK)),
        UdpSocketDead: (_udp_dead(), _to(S.ASKING)),
        ServerRestartAnswer: (P._on_restart_answer, _to(S.CREATING, S.WAITING, S.UDP_WAIT)),
    },
    S.WAITING: {
        AuthenticatedPacket: (_packet(Via.UDP, P._to_udp_ok), _to(S.WAITING, S.UDP_OK)),
        UdpSocketDead: (_udp_dead(P._to_udp_wait), _to(S.UDP_WAIT)),
        Timer: (_when_due(P._to_udp_wait), _to(S.WAITING, S.UDP_WAIT)),
    },
    S.BACKOFF: {
        Timer: (_when_due(P._recreate), _to(S.BACKOFF, S.CREATING)),
    },
    S.ENDED: {},
    S.CLOSED: {},
}


def _table() -> dict[tuple[TransportState, type[Input]], Transition]:
    """Every (state, input kind): the row's entry, a common one, or ``_ignore``."""
    table: dict[tuple[TransportState, type[Input]], Transition] = {}
    for state, row in _ROWS.items():
        common: _Row = {}
        if state is not S.CLOSED:
            common[Close] = (P._on_close, _to(S.CLOSED))
        if state not in (S.CLOSED, S.ENDED):
            # A new session is a fact whatever we thought: start over on UDP.
            common[SessionStarted] = (P._on_session_started, _to(S.UDP_WAIT))
        if state not in SESSIONLESS:
            # CREATING and BACKOFF ignore it: that is the old session being closed.
            common[SessionEnded] = (P._on_session_ended, _to(S.CREATING, S.ENDED))
        for kind in INPUT_KINDS:
            handler, targets = row.get(kind) or common.get(kind) or (P._ignore, _to(state))
            table[(state, kind)] = Transition(handler, targets)
    return table


#: The transition table: (state, input kind) -> handler and the states it may end in.
TRANSITIONS = _table()

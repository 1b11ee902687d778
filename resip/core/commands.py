"""Incoming records and commands: data to channels, commands applied, early records held.

Every record here comes from a packet that already authenticated. Data records
go to their channel's :class:`~resip.core.channel.RecvSide`; channel-0 records are
commands, unordered (pnum 0) or ordered (reassembled like any channel).

Transitions, per command (PROTOCOL.md §5):

=============  ===========================================================
START          server: new channel (``ChannelRequested``), or TERMINATE
               ``CHANNEL_LIMIT``; held early records are replayed; client:
               protocol error
STARTED        client: ``ChannelStarted`` once
STOP           the peer's direction ends at ``last``
TERMINATE      channel retired, ``ChannelTerminated``
CREDIT         the peer's window grows (never shrinks)
CLOSE          the session ends (by peer)
ACK            to loss recovery (the session's ``on_ack``)
KEEPALIVE      a request is answered, with every channel's credit
PATH_*         a challenge is answered (at most once per RTT); a response
               may validate the server's new client address
=============  ===========================================================

Invariants:

1. A record is *refused* (no ACK for its packet) only when it cannot be kept:
   no channel and no room to hold it early. Anything refused is retransmitted
   by the peer; anything taken is never asked for again.
2. Records for a retired channel are acknowledged and dropped, so the peer
   stops retransmitting them.
3. Early records are bounded (1024 over all channels) and only the server holds
   them (:mod:`resip.core.roles`); they are replayed, in arrival order, when START
   arrives.
4. An authenticated peer breaking these rules raises
   :class:`~resip.core.errors.ProtocolViolation`; the session closes with its code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from resip.core import events as ev
from resip.core.ack_state import AckState
from resip.core.channel_table import ChannelTable
from resip.core.codes import CloseCode, TerminateCode
from resip.core.errors import ProtocolViolation
from resip.core.lifecycle import ChannelLifecycle
from resip.core.packet_builder import Outbox
from resip.core.recovery import RttEstimator
from resip.core.roles import RolePolicy
from resip.core.wire import (
    Ack,
    Close,
    Command,
    Credit,
    KeepAlive,
    PathChallenge,
    PathResponse,
    Record,
    Start,
    Started,
    Stop,
    Terminate,
    parse_command_untrusted,
    parse_inner_untrusted,
)

__all__ = ["CommandHandler"]

#: Records held for channels whose START has not arrived yet (bounded memory).
_EARLY_RECORDS = 1024


class CommandHandler:
    """Applies the records of authenticated packets; see the module docstring."""

    def __init__(
        self,
        *,
        role: RolePolicy,
        channels: ChannelTable,
        lifecycle: ChannelLifecycle,
        acks: AckState,
        outbox: Outbox,
        rtt: RttEstimator,
        events: deque[ev.Event],
        on_ack: Callable[[Ack, float], None],
        on_close: Callable[[int, str], None],
    ) -> None:
        self._role = role
        self._peer_is_server = not role.is_server
        self._channels = channels
        self._cmd_recv = channels.command_recv
        self._lifecycle = lifecycle
        self._acks = acks
        self._outbox = outbox
        self._rtt = rtt
        self._events = events
        self._on_ack = on_ack
        self._on_close = on_close
        self._early: dict[int, list[Record]] = {}
        self._early_count = 0
        self._refused = False
        #: The challenge we last answered and when: see _on_challenge.
        self._answered: tuple[bytes, float] | None = None
        self.duplicates = 0

    def on_packet(self, plaintext: bytes, *, now: float) -> tuple[bool, bool]:
        """Apply one packet's records: (ack-eliciting, every record taken)."""
        records = parse_inner_untrusted(plaintext, from_server=self._peer_is_server)
        eliciting = False
        self._refused = False
        for record in records:
            eliciting |= self._on_record(record, now=now)
        return eliciting, not self._refused

    def _parse(self, data: bytes) -> Command:
        return parse_command_untrusted(data, from_server=self._peer_is_server)

    def _on_record(self, record: Record, *, now: float) -> bool:
        """Handle one record; returns whether it was ack-eliciting."""
        if record.channel == 0:
            if record.pnum == 0:
                return self._on_command(self._parse(record.data), now=now)
            self._acks.on_channel_record(0, now=now)
            commands = self._cmd_recv.on_record(
                record.pnum, record.data, record.compressed, record.fragment
            )
            for data in commands:
                self._cmd_recv.consume(len(data))
                self._on_command(self._parse(data), now=now)
            return True
        channel = self._channels.get(record.channel)
        if channel is None:
            if self._channels.is_retired(record.channel):
                # Finished or aborted: acknowledge so the peer stops retransmitting.
                self._acks.on_retired_record(record.channel, record.pnum)
                return True
            return self._hold_early(record)
        self._acks.on_channel_record(record.channel, now=now)
        before = channel.recv.duplicates
        top = channel.recv.received.last
        messages = channel.recv.on_record(
            record.pnum, record.data, record.compressed, record.fragment
        )
        if channel.recv.duplicates != before:
            self.duplicates += 1
        elif top is not None and record.pnum > top + 1:
            self._acks.on_gap(now=now)
        for message in messages:
            channel.bytes_received += len(message)
            channel.last_activity = now
            self._events.append(ev.ChannelData(channel.channel_id, message))
        if messages:
            self._channels.mark_credit(channel.channel_id)
        self._lifecycle.check_done(channel, now=now)
        return True

    def _hold_early(self, record: Record) -> bool:
        """A record for a channel whose START is still on its way (reordered or lost)."""
        if not self._role.holds_early_records or self._early_count >= _EARLY_RECORDS:
            self._refused = True
            return False
        self._early.setdefault(record.channel, []).append(record)
        self._early_count += 1
        return True

    def _on_command(self, cmd: Command, *, now: float) -> bool:
        """Apply one command-channel message; returns whether it is ack-eliciting."""
        match cmd:
            case Ack():
                self._on_ack(cmd, now)
                return False
            case KeepAlive(response=False):
                self._outbox.keepalive_response = True
                self._outbox.credit_all = True
                return True
            case KeepAlive(response=True):
                return False
            case Credit(channel_id, max_pnum):
                self._on_credit(channel_id, max_pnum)
                return False
            case Start():
                self._on_start(cmd, now=now)
            case Close(code, reason):
                self._on_close(code, reason)
            case PathChallenge(data):
                self._on_challenge(data, now=now)
            case PathResponse(data):
                self._role.on_response(data)
            case Started() | Stop() | Terminate():
                self._on_channel_command(cmd, now=now)
            case _:
                raise ProtocolViolation(
                    CloseCode.PROTOCOL_ERROR, f"unexpected {type(cmd).__name__}"
                )
        return True

    def _on_channel_command(self, cmd: Started | Stop | Terminate, *, now: float) -> None:
        match cmd:
            case Started(channel_id):
                channel = self._channels.get(channel_id)
                if channel is not None and not channel.started:
                    channel.started = True
                    self._events.append(ev.ChannelStarted(channel_id))
            case Stop(channel_id, last):
                channel = self._channels.get(channel_id)
                if channel is not None:
                    channel.recv.on_stop(last)
                    self._lifecycle.check_done(channel, now=now)
            case Terminate(channel_id, code, reason):
                if self._channels.get(channel_id) is not None:
                    self._channels.retire(channel_id)
                    self._events.append(ev.ChannelTerminated(channel_id, code, reason))

    def _on_credit(self, channel_id: int, max_pnum: int) -> None:
        channel = self._channels.get(channel_id)
        if channel is not None and max_pnum > channel.send.peer_credit:
            channel.send.peer_credit = max_pnum
            self._channels.mark_ready(channel_id)

    def _on_challenge(self, data: bytes, *, now: float) -> None:
        """Answer a PATH_CHALLENGE, each one at most once per round trip.

        The server repeats its challenge in every packet to an unvalidated address, and
        until validation it may send only three times what it received: answering every
        copy would make each answer buy three more challenges, a packet storm that grows
        within one round trip. Once per round trip still outlives lost answers.
        """
        if self._answered is not None:
            answered, at = self._answered
            if answered == data and now - at < self._rtt.smoothed:
                return
        self._answered = (data, now)
        self._outbox.path_response = data

    def _on_start(self, cmd: Start, *, now: float) -> None:
        if self._role.opens_channels:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "server tried to open a channel")
        outcome = self._channels.create_remote(cmd, now=now)
        if outcome is None:
            return  # a repeated START for a channel we know: ignore
        if outcome == "limit":
            self._lifecycle.queue_command(
                Terminate(cmd.channel, TerminateCode.CHANNEL_LIMIT, "too many channels"),
                now=now,
            )
            return
        self._events.append(ev.ChannelRequested(cmd.channel, cmd.proto, cmd.host, cmd.port))
        for early in self._early.pop(cmd.channel, ()):
            self._early_count -= 1
            self._on_record(early, now=now)

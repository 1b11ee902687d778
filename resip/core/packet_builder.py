"""The packet builder: what goes into the next datagram, in which order, and sealing it.

A packet is filled in priority order, each part only while room is left:

1. unordered control records: the path challenge (server), a path response, a
   keep-alive response, the ACK with the CREDITs of the channels it lists (or the
   CREDITs that grew enough on their own);
2. a keep-alive request (ack-eliciting), when one is due;
3. while streaming is allowed (no outage, window open, pacing allows) or a probe
   is due: ordered commands (retransmissions first), repeated commands on a
   very lossy link, then channel records (retransmissions first, then new data
   round-robin);
4. a keep-alive request when a probe is due but there was nothing to retransmit.

Invariants:

1. Every ordered record in a sealed packet is stamped with that packet's
   counter (its latest transmission), so a loss report for an older copy is
   ignored.
2. A packet holding nothing but a repeated path challenge is never sent: each
   would buy an answer, and the answers more packets (path.py).
3. Only ack-eliciting packets enter loss recovery; an ACK-only packet is never
   retransmitted and does not count in flight.
4. To an unvalidated client address the server sends full packets only, within
   the anti-amplification allowance (:meth:`resip.core.roles.ServerRole.send_limit`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from resip.core import events as ev
from resip.core.ack_state import AckState
from resip.core.channel import OutRecord
from resip.core.channel_table import ChannelTable
from resip.core.config import SessionConfig
from resip.core.crypto import OVERHEAD, PacketProtector
from resip.core.lifecycle import ChannelLifecycle
from resip.core.loss_recovery import LossRecovery, State
from resip.core.roles import RolePolicy
from resip.core.wire import (
    INNER_PREFIX,
    Close,
    Command,
    Credit,
    KeepAlive,
    PathChallenge,
    PathResponse,
    Record,
    encode_command,
    encode_inner,
    encode_record,
)

__all__ = ["MIN_ROOM", "Outbox", "Packet", "PacketBuilder"]

#: Smallest room worth starting another record in.
MIN_ROOM = 24
#: Smallest ack-eliciting datagram: header, tag, inner prefix and one minimal record.
_MIN_PACKET = OVERHEAD + INNER_PREFIX + MIN_ROOM
#: Above this loss estimate, unacknowledged commands ride along in every packet.
_REPEAT_LOSS = 0.3
_REPEAT_COMMANDS = 4


@dataclass(slots=True)
class Outbox:
    """Unordered control messages waiting for the next packet."""

    keepalive_request: bool = False
    keepalive_response: bool = False
    path_response: bytes | None = None
    #: Announce every channel's credit (a keep-alive asked for it).
    credit_all: bool = False


class Packet:
    """One packet being filled: its counter (known before any record is added, so each
    ordered record is stamped as it goes in), its encoded records and the room left."""

    __slots__ = ("carried", "counter", "eliciting", "records", "room")

    def __init__(self, counter: int, room: int) -> None:
        self.counter = counter
        self.room = room
        self.records: list[bytes] = []
        #: Ordered records it carries, as (channel, pnum).
        self.carried: list[tuple[int, int]] = []
        self.eliciting = False

    def add(self, encoded: bytes) -> None:
        """Append an encoded record that fits."""
        assert len(encoded) <= self.room
        self.records.append(encoded)
        self.room -= len(encoded)

    def add_ordered(self, channel_id: int, record: OutRecord, encoded: bytes) -> None:
        """Append an ordered record that fits; this packet becomes its latest transmission."""
        self.add(encoded)
        self.carried.append((channel_id, record.pnum))
        record.counter = self.counter


class PacketBuilder:
    """Builds and seals the session's packets; see the module docstring."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        role: RolePolicy,
        protector: PacketProtector,
        outbox: Outbox,
        acks: AckState,
        recovery: LossRecovery,
        channels: ChannelTable,
        lifecycle: ChannelLifecycle,
        events: deque[ev.Event],
    ) -> None:
        self._config = config
        self._role = role
        self._from_server = role.is_server
        self._protector = protector
        self._outbox = outbox
        self._acks = acks
        self._recovery = recovery
        self._channels = channels
        self._lifecycle = lifecycle
        self._cmd = lifecycle.cmd
        self._events = events
        self._keepalive = self._control(KeepAlive())
        #: The encoded repeat of a challenge in the packet being built, if any.
        self._repeated_challenge: bytes | None = None
        self._send_epoch = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.retransmissions = 0

    # -- when ---------------------------------------------------------------------

    def send_limit(self) -> int | None:
        """Largest datagram we may send now; None while the anti-amplification limit blocks."""
        return self._role.send_limit(self._config.packet_size, min_packet=_MIN_PACKET)

    def _has_work(self) -> bool:
        return bool(self._cmd.has_new() or self._cmd.lost or self._channels.has_work())

    def anything_due(self, *, now: float) -> bool:
        """Cheap check run before building packets (the simulator asks after every event)."""
        outbox = self._outbox
        if (
            outbox.keepalive_request
            or outbox.keepalive_response
            or outbox.path_response is not None
            or self._recovery.probes_due
            or self._acks.retired
            or outbox.credit_all
            or self._channels.credit_dirty
            or self._acks.due(now=now)
        ):
            return True
        if self._role.challenge_pending:
            return True
        return self._recovery.could_stream(has_work=self._has_work(), now=now)

    # -- building -----------------------------------------------------------------

    def build(self, *, now: float) -> bytes | None:
        """The next packet, sealed; None when nothing (more) may go now."""
        size_limit = self.send_limit()
        if size_limit is None:
            return None
        recovery = self._recovery
        packet = Packet(self._protector.next_counter, size_limit - OVERHEAD - INNER_PREFIX)
        self._control_records(packet, now=now)
        if self._outbox.keepalive_request and packet.room >= MIN_ROOM:
            packet.add(self._keepalive)
            self._outbox.keepalive_request = False
            recovery.keepalive_sent_at = now
            packet.eliciting = True
        may_stream = recovery.may_stream(has_work=self._has_work(), now=now, smallest=_MIN_PACKET)
        if may_stream or recovery.probes_due > 0:
            self._fill_data(packet, now=now)
            if packet.carried:
                packet.eliciting = True
        if recovery.probes_due > 0 and not packet.eliciting and packet.room >= MIN_ROOM:
            # Nothing left to retransmit: a keep-alive request makes the probe answerable.
            packet.add(self._keepalive)
            packet.eliciting = True
        if not packet.records or packet.records == [self._repeated_challenge]:
            return None  # a repeated challenge rides along; alone it would spin (see path.py)
        if packet.eliciting and recovery.probes_due > 0:
            recovery.probes_due -= 1
        return self._finish(packet, size_limit, now=now)

    def _finish(self, packet: Packet, size_limit: int, *, now: float) -> bytes:
        datagram = self.seal(packet.records, now=now, size=size_limit)
        assert self._protector.next_counter == packet.counter + 1
        size = len(datagram)
        if packet.eliciting:
            self._recovery.on_packet_sent(packet.counter, packet.carried, size=size, now=now)
        self._role.on_sent(size)
        return datagram

    def _control(self, cmd: Command) -> bytes:
        return encode_record(Record(0, 0, encode_command(cmd), from_server=self._from_server))

    def _control_records(self, packet: Packet, *, now: float) -> None:
        """Unordered control records due now, in priority order, while they fit."""
        cmds: list[Command] = []
        repeat: PathChallenge | None = None
        challenge = self._role.challenge_to_send()
        if challenge is not None:
            challenge_cmd = PathChallenge(challenge[0])
            cmds.append(challenge_cmd)
            if not challenge[2]:
                repeat = challenge_cmd
        outbox = self._outbox
        if outbox.path_response is not None:
            cmds.append(PathResponse(outbox.path_response))
            outbox.path_response = None
        if outbox.keepalive_response:
            cmds.append(KeepAlive(response=True))
            outbox.keepalive_response = False
        acks = self._acks
        if acks.due(now=now) or acks.retired:
            targets = acks.targets(now=now, smoothed_rtt=self._recovery.rtt.smoothed)
            cmds.append(acks.build(targets, self._channels, now=now))
            cmds.extend(self._credits(targets))
        elif self._channels.credit_dirty or outbox.credit_all:
            cmds.extend(self._credits(None))
        self._repeated_challenge = None
        for cmd in cmds:
            encoded = self._control(cmd)
            if len(encoded) > packet.room:
                break
            packet.add(encoded)
            if cmd is repeat:
                self._repeated_challenge = encoded

    def _credits(self, targets: list[int] | None) -> list[Credit]:
        """CREDIT messages: for ``targets`` (riding with an ACK, repeated for redundancy
        on a lossy link), or for every channel whose window grew enough to matter."""
        channels = self._channels
        credits: list[Credit] = []
        if targets is not None:
            ids: list[int] = targets
        elif self._outbox.credit_all:
            ids = list(channels.ids())
        else:
            ids = list(channels.credit_dirty)
        announce_all = self._outbox.credit_all
        self._outbox.credit_all = False
        for channel_id in ids:
            if channel_id == 0:
                continue
            channel = channels.get(channel_id)
            if channel is None:
                continue
            credit = channel.recv.credit()
            grown = credit - channel.recv.advertised
            if targets is None and not announce_all and grown < channel.recv.window // 4:
                continue  # small increases ride along with the next ACK
            channel.recv.advertised = credit
            credits.append(Credit(channel_id, credit))
        if targets is None:
            channels.credit_dirty.clear()
        return credits

    def _fill_data(self, packet: Packet, *, now: float) -> None:
        """Add ordered records (commands first, retransmissions before new data)."""
        if not self._fill_commands(packet, now=now):
            return
        if self._channels.has_work():
            # Only alongside data: a packet of nothing but repeated commands is waste.
            self._repeat_commands(packet)
        self._fill_channels(packet, now=now)
        self._lifecycle.on_records_cut(now=now)

    def _fill_commands(self, packet: Packet, *, now: float) -> bool:
        """Commands: retransmissions, then new ones. False when one did not fit."""
        cmd = self._cmd
        while packet.room >= MIN_ROOM:
            record = cmd.next_retransmission(0, packet.room)
            if record is not None:
                self.retransmissions += 1
            elif cmd.lost_record() is not None:
                return False  # the next retransmission does not fit: the packet is full
            else:
                record = cmd.next_new_record(0, packet.room, now=now)
                if record is None:
                    break
            packet.add_ordered(0, record, self._encode_out(0, record))
        return True

    def _fill_channels(self, packet: Packet, *, now: float) -> None:
        """Channel data: lost records first, then new data round-robin."""
        channels = self._channels
        while packet.room >= MIN_ROOM:
            item = channels.next_record(packet.room, now=now)
            if item is None:
                break
            channel_id, out, is_retx = item
            if is_retx:
                self.retransmissions += 1
                channel = channels.get(channel_id)
                if channel is not None:
                    channel.retransmissions += 1
            packet.add_ordered(channel_id, out, self._encode_out(channel_id, out))

    def _repeat_commands(self, packet: Packet) -> None:
        """On a very lossy link (or before the peer was ever heard), repeat unacknowledged
        commands in every packet: a lost START or STOP would otherwise cost a whole
        loss-detection round, and at 90 % loss that is most of them. Copies carry the
        same pnum, so the receiver drops the extras."""
        recovery = self._recovery
        if recovery.state is not State.CONNECTING and recovery.cc.loss_estimate < _REPEAT_LOSS:
            return
        already = {pnum for channel_id, pnum in packet.carried if channel_id == 0}
        for pnum, record in list(self._cmd.unacked.items())[:_REPEAT_COMMANDS]:
            if pnum in already or record.counter < 0:
                continue
            encoded = self._encode_out(0, record)
            if len(encoded) > packet.room:
                break
            packet.add_ordered(0, record, encoded)

    def _encode_out(self, channel_id: int, record: OutRecord) -> bytes:
        return encode_record(
            Record(
                channel_id,
                record.pnum,
                record.data,
                from_server=self._from_server,
                compressed=record.compressed,
                fragment=record.fragment,
            )
        )

    # -- sealing ------------------------------------------------------------------

    def seal(self, records: list[bytes], *, now: float, size: int | None = None) -> bytes:
        """Encrypt ``records`` as our next datagram (padded if configured)."""
        size = self._config.packet_size if size is None else size
        pad_to = size - OVERHEAD if self._config.pad_packets else 0
        inner = encode_inner(records, pad_to=pad_to)
        datagram = self._protector.seal(inner, now=now)
        self.packets_sent += 1
        self.bytes_sent += len(datagram)
        epoch = self._protector.send_epoch
        if epoch != self._send_epoch:
            self._send_epoch = epoch
            self._events.append(ev.KeyUpdated(epoch))
        return datagram

    def close_datagram(self, close: Close, *, now: float) -> bytes:
        """The last datagram of a session: its CLOSE."""
        return self.seal([self._control(close)], now=now)

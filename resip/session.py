"""The sans-IO ResIP session: one client or server end of an encrypted, multiplexed link.

Inputs: :meth:`Session.receive_datagram`, :meth:`Session.handle_timer` and the
channel API (``open_channel``, ``send``, ``shutdown``, ...). Outputs:
:meth:`Session.datagrams_to_send`, :meth:`Session.next_timer`,
:meth:`Session.next_event` and :meth:`Session.stats`. After any input, call
``datagrams_to_send`` and re-arm the timer from ``next_timer``. The session
never reads a clock, never touches a socket and takes its randomness from the
``random_bytes`` it is given, so a simulator can drive it deterministically.

Rules the code below keeps:

1. Nothing from the network changes state before it authenticates (the
   protector opens it first); malformed or forged datagrams are counted and
   dropped, never raised. An *authenticated* peer that breaks the protocol
   gets the session closed with ``PROTOCOL_ERROR``.
2. Loss is not congestion: losses trigger retransmission, never a rate cut;
   the rate comes from :class:`~resip.congestion.RateController`.
3. Outages are survived, not timed out: after ``outage_after_probes`` silent
   probe timeouts the sender stops streaming and sends one probe per (capped)
   backoff interval, keeping every channel and byte; the first packet from the
   peer ends the outage and sending resumes at the previous rate.
4. Only the client opens channels and only the client sends keep-alives; the
   server follows the newest authenticated source address (:mod:`resip.path`).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv6Address

from resip import events as ev
from resip.channel import OutRecord, SendSide
from resip.channel_table import Channel, ChannelStats, ChannelTable
from resip.codes import CloseCode, TerminateCode
from resip.config import SessionConfig
from resip.congestion import Pacer, RateController
from resip.crypto import OVERHEAD, HeaderProtection, PacketProtector, Suite
from resip.errors import DecryptError, LocalProtocolError, ProtocolViolation, WireError
from resip.inflight import InFlight, SentPacket
from resip.path import PathManager
from resip.rangeset import RangeSet
from resip.recovery import RttEstimator, backoff
from resip.wire import (
    INNER_PREFIX,
    Ack,
    Close,
    Command,
    Credit,
    KeepAlive,
    PathChallenge,
    PathResponse,
    Proto,
    Record,
    Start,
    Started,
    Stop,
    Terminate,
    ack_from_ranges,
    encode_command,
    encode_inner,
    encode_record,
    parse_command_untrusted,
    parse_inner_untrusted,
)

log = logging.getLogger(__name__)

Path = Hashable

#: Channel-0 credit: commands are not flow controlled.
_UNLIMITED = 1 << 62
#: Smallest room worth starting another record in.
_MIN_ROOM = 24
#: Session-wide send room that wakes the channels waiting for it.
_ROOM_WAKE_BYTES = 64 * 1024
#: Smallest ack-eliciting datagram: header, tag, inner prefix and one minimal record.
_MIN_PACKET = OVERHEAD + INNER_PREFIX + _MIN_ROOM
#: Counters looked at by receive_loss, and how many it needs to say anything.
_RECEIVE_LOSS_SPAN = 1024
_RECEIVE_LOSS_MIN_SPAN = 16
#: Shortest wait for a new client address to answer its challenge (RFC 9000 §8.2.4:
#: six times the initial RTT of 333 ms).
_MIN_VALIDATION_TIMEOUT = 2.0
#: Probe packets per probe timeout on a clean link, and at most on a very lossy one.
_PROBE_PACKETS = 1
_MAX_PROBE_BURST = 16
#: ACK ranges per ACK. At 90 % loss the received set above the cumulative point is a
#: comb with one range per arrival; reporting only a few dozen would make the sender
#: resend records that already arrived. 150 items stay under ~900 bytes.
_ACK_RANGES = 64
#: Channels whose record ranges one ACK lists (the most recently active).
_ACK_CHANNELS = 16
#: Packet-counter ranges per ACK (PROTOCOL.md §5.4): at 90 % loss one per arrival.
_PACKET_RANGES = 128
#: How far below the newest counter ACKs still report gaps.
_COUNTER_REPORT_SPAN = 2048
#: How far below the newest counter we still remember which packets arrived.
_COUNTER_MEMORY = 1 << 16
#: Records held for channels whose START has not arrived yet (bounded memory).
_EARLY_RECORDS = 1024
#: Above this loss estimate, unacknowledged commands ride along in every packet.
_REPEAT_LOSS = 0.3
_REPEAT_COMMANDS = 4


class Role(Enum):
    """Which end of the session this is."""

    CLIENT = "client"
    SERVER = "server"


class State(Enum):
    """Session state, as shown to users."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    OUTAGE = "outage"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of the session for status views and logs."""

    role: str
    state: str
    session_id: str
    peer: str
    path_changes: int
    rtt_smoothed: float
    rtt_min: float
    loss_estimate: float
    #: Share of the peer's last packets (up to 1024) that did not arrive.
    receive_loss: float
    pacing_rate: float
    cwnd: int
    bytes_in_flight: int
    packets_sent: int
    packets_received: int
    bytes_sent: int
    bytes_received: int
    retransmissions: int
    duplicates: int
    invalid_dropped: int
    key_epoch: int
    last_received_at: float | None
    outages: int
    channels: tuple[ChannelStats, ...]


class Session:
    """One end of a ResIP session (see the module docstring for the contract)."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        role: Role,
        session_id: bytes,
        session_secret: bytes,
        hp: HeaderProtection,
        suite: Suite = Suite.AES_256_GCM,
        now: float,
        peer: Path | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config
        self.role = role
        self.is_server = role is Role.SERVER
        self.session_id = session_id
        self._protector = PacketProtector(
            suite=suite,
            session_id=session_id,
            session_secret=session_secret,
            is_server=self.is_server,
            hp=hp,
            limits=config.key_limits,
            now=now,
        )
        self._random_bytes = random_bytes
        self._events: deque[ev.Event] = deque()
        self._rtt = RttEstimator()
        self._cc = RateController(config.congestion)
        self._pacer = Pacer(packet_size=config.packet_size)
        self._inflight = InFlight()
        self._paths = PathManager(random_bytes)
        self._peer: Path | None = peer
        self.channels = ChannelTable(config, is_server=self.is_server)
        self._cmd = SendSide(
            Proto.UDP,
            buffer_limit=_UNLIMITED,
            message_size=config.message_size,
            compress=False,
            datagram_max_age=float("inf"),
            datagram_queue=1 << 30,
            atomic=True,
        )
        self._cmd.peer_credit = _UNLIMITED
        self._cmd_recv = self.channels.command_recv
        #: Channels refused by the session-wide send budget, oldest first: each is woken
        #: when room returns, whichever channel's data freed it (see _wake_room_waiters).
        self._room_waiters: dict[int, None] = {}
        self.state = State.CONNECTING if not self.is_server else State.CONNECTED
        self._created_at = now
        self._last_received_at: float | None = None
        self._largest_received = -1
        self._largest_received_at = now
        # ACK state: how many ack-eliciting packets are unacknowledged, and by when.
        self._ack_pending = 0
        self._ack_at: float | None = None
        self._ack_channels: dict[int, float] = {}
        #: Counters of packets whose records were all accepted (what ACKs report).
        self._received_counters = RangeSet()
        self._refused = False
        #: Server: records for channels whose START has not arrived yet (reordering).
        self._early: dict[int, list[Record]] = {}
        self._early_count = 0
        self._retired_acks: dict[int, RangeSet] = {}
        # Unordered control messages waiting for the next packet.
        self._keepalive_request = not self.is_server
        self._keepalive_response = False
        self._path_response: bytes | None = None
        #: The encoded repeat of a challenge in the packet being built, if any.
        self._repeated_challenge: bytes | None = None
        #: The challenge we last answered and when: see _on_challenge.
        self._answered: tuple[bytes, float] | None = None
        self._credit_all = False
        self._close: Close | None = None
        self._close_sent = False
        # Probing and outages.
        self._pto_count = 0
        self._probes_due = 0
        self._outage_since: float | None = None
        self._keepalive_sent_at = now
        self._pacing_at: float | None = None
        self._send_epoch = 0
        self._terminated = False
        # Counters for stats().
        self.packets_sent = 0
        self.packets_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.invalid_dropped = 0
        self.retransmissions = 0
        self.duplicates = 0
        self.outages = 0

    # ------------------------------------------------------------------ API

    @property
    def terminated(self) -> bool:
        """True once the session is over (a :class:`SessionTerminated` was queued)."""
        return self._terminated

    @property
    def peer(self) -> Path | None:
        """Where our packets go: the server address (client) or the newest client address."""
        if self.is_server:
            current = self._paths.current
            return current.address if current is not None else None
        return self._peer

    def set_peer(self, path: Path) -> None:
        """Client: send to ``path`` from now on (address change, or UDP/TCP fallback switch)."""
        if self.is_server:
            raise LocalProtocolError("only the client chooses the path")
        self._peer = path
        # Tell the server at once, so it learns the new address.
        self._keepalive_request = True

    def open_channel(
        self,
        host: IPv4Address | IPv6Address | str,
        port: int,
        *,
        proto: Proto = Proto.TCP,
        compress: bool | None = None,
        now: float,
    ) -> int:
        """Client: open a channel to ``host:port``; returns its id. Data may be sent at once."""
        if self.is_server:
            raise LocalProtocolError("only the client opens channels")
        self._check_open()
        use_compression = self.config.compress if compress is None else compress
        channel = self.channels.create_local(proto, host, port, use_compression, now=now)
        start = Start(channel.channel_id, proto, host, port, compress=use_compression)
        self._queue_command(start, now=now)
        return channel.channel_id

    def accept_channel(self, channel_id: int, *, now: float) -> None:
        """Server: the target is connected; tell the client (STARTED)."""
        channel = self._channel(channel_id)
        if not channel.started:
            channel.started = True
            self._queue_command(Started(channel_id), now=now)

    def send(self, channel_id: int, data: bytes, *, now: float) -> int:
        """Queue stream bytes; returns how many were accepted.

        When fewer than ``len(data)`` are accepted, a :class:`ChannelWritable`
        event follows once there is room again.
        """
        channel = self._channel(channel_id)
        if channel.send.fin_requested:
            raise LocalProtocolError(f"channel {channel_id} was shut down for sending")
        room = self._session_room()
        accepted = channel.send.write(data[: max(0, room)])
        if accepted < len(data):
            channel.want_writable = True
            if accepted >= room:
                self._room_waiters[channel_id] = None
        if accepted:
            self.channels.mark_ready(channel_id)
            channel.bytes_sent += accepted
            channel.last_activity = now
        return accepted

    def send_datagram(self, channel_id: int, data: bytes, *, now: float) -> bool:
        """Queue one datagram on a UDP channel; False if dropped (queue full)."""
        channel = self._channel(channel_id)
        if channel.proto is not Proto.UDP:
            raise LocalProtocolError(f"channel {channel_id} is not a datagram channel")
        ok = channel.send.write_datagram(data, now=now)
        if ok:
            self.channels.mark_ready(channel_id)
            channel.bytes_sent += len(data)
            channel.last_activity = now
        return ok

    def send_capacity(self, channel_id: int) -> int:
        """Stream bytes ``send`` would accept now."""
        channel = self._channel(channel_id)
        return max(0, min(channel.send.capacity(), self._session_room()))

    def _session_room(self) -> int:
        return self.config.session_send_buffer - self.channels.buffered_total()

    def shutdown(self, channel_id: int, *, now: float) -> None:
        """Half-close: no more data from us on this channel (STOP once everything is sent)."""
        channel = self._channel(channel_id)
        channel.send.finish()
        self._maybe_stop(channel, now=now)
        self._check_channel_done(channel, now=now)

    def reset_channel(
        self, channel_id: int, code: int = 0, reason: str = "", *, now: float
    ) -> None:
        """Abort a channel in both directions (TERMINATE); buffered data is discarded."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return
        self._queue_command(Terminate(channel_id, code, reason), now=now)
        self.channels.retire(channel_id)
        self._wake_room_waiters()

    def consume(self, channel_id: int, n: int) -> None:
        """The application passed ``n`` bytes of :class:`ChannelData` on (frees window)."""
        channel = self.channels.get(channel_id)
        if channel is not None:
            channel.recv.consume(n)
            self.channels.mark_credit(channel_id)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "", *, now: float) -> None:
        """End the session: a CLOSE goes out with the next datagrams, then nothing."""
        if self._terminated:
            return
        self._close = Close(code, reason)
        self._terminate(code, reason, by_peer=False)

    def next_event(self) -> ev.Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def _check_open(self) -> None:
        if self._terminated:
            raise LocalProtocolError("the session is closed")

    def _channel(self, channel_id: int) -> Channel:
        self._check_open()
        channel = self.channels.get(channel_id)
        if channel is None:
            raise LocalProtocolError(f"no open channel {channel_id}")
        return channel

    def _queue_command(self, cmd: Command, *, now: float) -> None:
        self._cmd.write_datagram(encode_command(cmd), now=now)

    def _maybe_stop(self, channel: Channel, *, now: float) -> None:
        if channel.send.fin_pnum is not None and not channel.stop_sent:
            channel.stop_sent = True
            self._queue_command(Stop(channel.channel_id, channel.send.fin_pnum), now=now)

    def _terminate(self, code: int, reason: str, *, by_peer: bool) -> None:
        if self._terminated:
            return
        self._terminated = True
        self.state = State.CLOSED
        log.info(
            "session %s closed (code %d%s): %s",
            self.session_id.hex(),
            code,
            ", by peer" if by_peer else "",
            reason,
        )
        self._events.append(ev.SessionTerminated(code, reason, by_peer))

    # -------------------------------------------------------------- receiving

    def receive_datagram(self, data: bytes, path: Path, *, now: float) -> None:
        """Take one datagram from ``path``. Invalid ones are counted and dropped."""
        if self._terminated:
            return
        try:
            opened = self._protector.open_untrusted(data, now=now)
        except (WireError, DecryptError):
            self.invalid_dropped += 1
            return
        counter = opened.header.counter
        newest = counter > self._largest_received
        if newest:
            self._largest_received = counter
            self._largest_received_at = now
        self.packets_received += 1
        self.bytes_received += len(data)
        self._on_peer_alive(now)
        if self.is_server:
            moved = self._paths.on_packet(
                path, len(data), newest=newest, now=now, timeout=self._validation_timeout()
            )
            if moved is not None:
                self._events.append(ev.PathChanged(moved[0], moved[1]))
        try:
            records = parse_inner_untrusted(opened.plaintext, from_server=not self.is_server)
            eliciting = False
            self._refused = False
            for record in records:
                eliciting |= self._on_record(record, now=now)
            if not self._refused:
                # Only a packet whose every record was taken may be acknowledged as a
                # whole; otherwise the sender must learn the refused ones are missing.
                self._received_counters.add(counter)
                if counter & 0xFFF == 0:
                    self._received_counters.remove_below(counter - _COUNTER_MEMORY)
        except (WireError, ProtocolViolation) as exc:
            code = exc.code if isinstance(exc, ProtocolViolation) else CloseCode.PROTOCOL_ERROR
            self.close(code, f"protocol error: {exc}", now=now)
            return
        if eliciting:
            self._ack_pending += 1
            if self._ack_pending >= self.config.ack_every:
                self._ack_at = now
            elif self._ack_at is None:
                self._ack_at = now + self.config.max_ack_delay

    def _on_peer_alive(self, now: float) -> None:
        self._last_received_at = now
        if self.state is State.CONNECTING:
            self.state = State.CONNECTED
            self._events.append(ev.SessionConnected())
        if self._outage_since is not None:
            self._events.append(ev.OutageEnded(now - self._outage_since))
            self._outage_since = None
            self.state = State.CONNECTED
            self._cc.on_outage_end(now=now)
        self._pto_count = 0

    def _on_record(self, record: Record, *, now: float) -> bool:
        """Handle one record; returns whether it was ack-eliciting."""
        if record.channel == 0:
            if record.pnum == 0:
                return self._on_command(
                    parse_command_untrusted(record.data, from_server=not self.is_server), now=now
                )
            self._ack_channels.pop(0, None)
            self._ack_channels[0] = now
            commands = self._cmd_recv.on_record(
                record.pnum, record.data, record.compressed, record.fragment
            )
            for data in commands:
                self._cmd_recv.consume(len(data))
                self._on_command(
                    parse_command_untrusted(data, from_server=not self.is_server), now=now
                )
            return True
        channel = self.channels.get(record.channel)
        if channel is None:
            if self.channels.is_retired(record.channel):
                # Finished or aborted: acknowledge so the peer stops retransmitting.
                self._retired_acks.setdefault(record.channel, RangeSet()).add(record.pnum)
                return True
            return self._hold_early(record)
        # Re-insert so the dict stays ordered by last arrival (see _ack_targets).
        self._ack_channels.pop(record.channel, None)
        self._ack_channels[record.channel] = now
        before = channel.recv.duplicates
        top = channel.recv.received.last
        messages = channel.recv.on_record(
            record.pnum, record.data, record.compressed, record.fragment
        )
        if channel.recv.duplicates != before:
            self.duplicates += 1
        elif top is not None and record.pnum > top + 1:
            # A gap: acknowledge at once so the sender learns about the loss quickly.
            self._ack_at = now
        for message in messages:
            channel.bytes_received += len(message)
            channel.last_activity = now
            self._events.append(ev.ChannelData(channel.channel_id, message))
        if messages:
            self.channels.mark_credit(channel.channel_id)
        self._check_channel_done(channel, now=now)
        return True

    def _hold_early(self, record: Record) -> bool:
        """A record for a channel whose START is still on its way (reordered or lost)."""
        if not self.is_server or self._early_count >= _EARLY_RECORDS:
            self._refused = True
            return False
        self._early.setdefault(record.channel, []).append(record)
        self._early_count += 1
        return True

    def _on_command(self, cmd: Command, *, now: float) -> bool:
        """Apply one command-channel message; returns whether it is ack-eliciting."""
        match cmd:
            case Ack():
                self._on_ack(cmd, now=now)
                return False
            case KeepAlive(response=False):
                self._keepalive_response = True
                self._credit_all = True
                return True
            case KeepAlive(response=True):
                return False
            case Credit(channel_id, max_pnum):
                channel = self.channels.get(channel_id)
                if channel is not None and max_pnum > channel.send.peer_credit:
                    channel.send.peer_credit = max_pnum
                    self.channels.mark_ready(channel_id)
                return False
            case Start():
                self._on_start(cmd, now=now)
            case Started(channel_id):
                channel = self.channels.get(channel_id)
                if channel is not None and not channel.started:
                    channel.started = True
                    self._events.append(ev.ChannelStarted(channel_id))
            case Stop(channel_id, last):
                channel = self.channels.get(channel_id)
                if channel is not None:
                    channel.recv.on_stop(last)
                    self._check_channel_done(channel, now=now)
            case Terminate(channel_id, code, reason):
                if self.channels.get(channel_id) is not None:
                    self.channels.retire(channel_id)
                    self._events.append(ev.ChannelTerminated(channel_id, code, reason))
            case Close(code, reason):
                self._terminate(code, reason, by_peer=True)
            case PathChallenge(data):
                self._on_challenge(data, now=now)
            case PathResponse(data):
                self._paths.on_response(data)
            case _:
                raise ProtocolViolation(
                    CloseCode.PROTOCOL_ERROR, f"unexpected {type(cmd).__name__}"
                )
        return True

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
        self._path_response = data

    def _on_start(self, cmd: Start, *, now: float) -> None:
        if not self.is_server:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "server tried to open a channel")
        outcome = self.channels.create_remote(cmd, now=now)
        if outcome is None:
            return  # a repeated START for a channel we know: ignore
        if outcome == "limit":
            self._queue_command(
                Terminate(cmd.channel, TerminateCode.CHANNEL_LIMIT, "too many channels"), now=now
            )
            return
        self._events.append(ev.ChannelRequested(cmd.channel, cmd.proto, cmd.host, cmd.port))
        for early in self._early.pop(cmd.channel, ()):
            self._early_count -= 1
            self._on_record(early, now=now)

    def _check_channel_done(self, channel: Channel, *, now: float) -> None:
        if channel.recv.finished and not channel.ended_reported:
            channel.ended_reported = True
            self._events.append(ev.ChannelEnded(channel.channel_id))
        if channel.ended_reported and channel.stop_sent and channel.send.done:
            self.channels.retire(channel.channel_id)
            self._events.append(ev.ChannelClosed(channel.channel_id))

    # ------------------------------------------------------------- ACKs, loss

    def _on_ack(self, ack: Ack, *, now: float) -> None:
        if ack.largest >= self._protector.next_counter:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "ACK of a packet never sent")
        self._protector.on_peer_acked(ack.largest)
        inflight = self._inflight
        largest_packet = inflight.packets.get(ack.largest)
        if largest_packet is not None:
            sample = now - largest_packet.sent_at
            delay = min(ack.delay_us / 1e6, self.config.max_ack_delay)
            self._rtt.update(sample, ack_delay=delay, now=now)
        inflight.on_largest_acked(ack.largest)
        packets = inflight.packets
        for start, end in ack.packets:
            if not packets:
                break
            if end - start < len(packets):
                counters: list[int] | range = range(start, end + 1)
            else:
                counters = [c for c in packets if start <= c <= end]
            for counter in counters:
                if counter in packets:
                    self._ack_packet(counter, now=now)
        for group in ack.groups:
            self._ack_records(group.channel, group.ranges, now=now)
        for packet in inflight.detect_lost(now=now, loss_delay=self._rtt.loss_delay()):
            self._on_packet_lost(packet, now=now)
        self._wake_room_waiters()

    def _ack_records(
        self, channel_id: int, ranges: tuple[tuple[int, int], ...], *, now: float
    ) -> None:
        if channel_id == 0:
            send = self._cmd
            channel = None
        else:
            channel = self.channels.get(channel_id)
            if channel is None:
                return
            send = channel.send
        unacked = send.unacked
        if not unacked:
            return
        for start, end in ranges:
            if not unacked:
                break
            # unacked is ordered by pnum (new records are appended), so its first key is
            # the lowest outstanding one: skip the part of a redundant range below it.
            start = max(start, next(iter(unacked)))
            if end < start:
                continue
            if end - start + 1 <= len(unacked):
                pnums: list[int] | range = range(start, end + 1)
            else:
                pnums = [p for p in unacked if start <= p <= end]
            for pnum in pnums:
                # Only the record: the copy that arrived may have travelled in another
                # packet than its latest transmission, so no packet is acknowledged here
                # (packet-counter ranges do that, exactly).
                send.on_acked(pnum)
        if channel is not None:
            self._after_channel_acked(channel, now=now)

    def _after_channel_acked(self, channel: Channel, *, now: float) -> None:
        self._wake_writer(channel)
        self._check_channel_done(channel, now=now)

    def _ack_packet(self, counter: int, *, now: float) -> None:
        packet = self._inflight.pop(counter)
        if packet is None:
            return
        self._cc.on_packet_acked(now=now, size=packet.size, state=packet.state, rtt=self._rtt)
        # The peer took every record of an acknowledged packet (PROTOCOL.md §5.4).
        for channel_id, pnum in packet.records:
            if channel_id == 0:
                self._cmd.on_acked(pnum)
                continue
            channel = self.channels.get(channel_id)
            if channel is not None and channel.send.on_acked(pnum) is not None:
                self._after_channel_acked(channel, now=now)

    def _on_packet_lost(self, packet: SentPacket, *, now: float) -> None:
        self._cc.on_packet_lost(now=now, size=packet.size, state=packet.state, rtt=self._rtt)
        self._requeue(packet)

    def _requeue(self, packet: SentPacket) -> None:
        """Queue the packet's still-unacknowledged records for retransmission."""
        for channel_id, pnum in packet.records:
            if channel_id == 0:
                self._cmd.on_lost(pnum, packet.counter)
                continue
            channel = self.channels.get(channel_id)
            if channel is not None:
                channel.send.on_lost(pnum, packet.counter)
                self.channels.mark_retransmit(channel_id)

    # ------------------------------------------------------------------ timers

    def _pto_interval(self) -> float:
        base = self._rtt.pto(max_ack_delay=self.config.max_ack_delay)
        return backoff(base, self._pto_count, cap=self.config.probe_backoff_cap)

    def _validation_timeout(self) -> float:
        # RFC 9000 §8.2.4's floor: a busy path or a loaded peer must not look dead, or
        # the server flips back and forth between the old and the new address.
        pto = self._rtt.pto(max_ack_delay=self.config.max_ack_delay)
        return max(self.config.path_validation_ptos * pto, _MIN_VALIDATION_TIMEOUT)

    def _pto_at(self) -> float | None:
        inflight = self._inflight
        if inflight.packets and inflight.last_sent_at is not None:
            return inflight.last_sent_at + self._pto_interval()
        if self.channels.any_credit_blocked():
            # Data waits on credit the peer may have sent in a lost packet: ask again.
            base = self._last_received_at if self._last_received_at is not None else 0.0
            return max(base, self._keepalive_sent_at) + self._pto_interval()
        return None

    def _keepalive_at(self) -> float | None:
        if self.is_server or self._inflight.packets:
            return None
        last = self._last_received_at if self._last_received_at is not None else 0.0
        return max(last, self._keepalive_sent_at) + self.config.keepalive_interval

    def _idle_at(self) -> float:
        base = self._last_received_at if self._last_received_at is not None else self._created_at
        return base + self.config.idle_timeout

    def next_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work to do, or None."""
        if self._terminated:
            return None
        # A server that may not send to an unvalidated address yet has nothing to do until
        # that address sends more (or validates): waking up for ACKs would spin.
        blocked = self._send_limit() is None
        candidates = [
            None if blocked else self._ack_at,
            self._inflight.loss_at,
            self._pto_at(),
            self._keepalive_at(),
            self._idle_at(),
            None if blocked else self._pacing_at,
            self._paths.next_timer() if self.is_server else None,
        ]
        return min(t for t in candidates if t is not None)

    def handle_timer(self, *, now: float) -> None:
        """Do whatever is due at ``now``; calling it early is harmless."""
        if self._terminated:
            return
        if now >= self._idle_at():
            self.close(CloseCode.IDLE, "idle timeout", now=now)
            return
        if self._inflight.loss_at is not None and now >= self._inflight.loss_at:
            for packet in self._inflight.detect_lost(now=now, loss_delay=self._rtt.loss_delay()):
                self._on_packet_lost(packet, now=now)
        pto_at = self._pto_at()
        if pto_at is not None and now >= pto_at:
            self._on_probe_timeout(now=now)
        keepalive_at = self._keepalive_at()
        if keepalive_at is not None and now >= keepalive_at:
            self._keepalive_request = True
        if self.is_server:
            moved = self._paths.handle_timer(now=now, timeout=self._validation_timeout())
            if moved is not None:
                self._events.append(ev.PathChanged(moved[0], moved[1]))
        if self._pacing_at is not None and now >= self._pacing_at:
            self._pacing_at = None
        self._wake_room_waiters()  # stale datagrams may have been dropped

    def _on_probe_timeout(self, *, now: float) -> None:
        self._pto_count += 1
        last = self._last_received_at
        if (
            self._outage_since is None
            and self._pto_count >= self.config.outage_after_probes
            and last is not None
            and now - last >= self.config.outage_min_silence
        ):
            self._outage_since = last
            self.outages += 1
            self.state = State.OUTAGE
            self._events.append(ev.OutageStarted(self._outage_since))
        # Everything in flight is presumed lost: its records go back in the queue, and
        # the probe below carries the oldest of them (useful data, not just a ping).
        heard = self._last_received_at if self._last_received_at is not None else -1.0
        for packet in self._inflight.pop_all():
            if packet.sent_at < heard:
                # The peer was heard from after this left, yet never acknowledged it: a
                # real loss (a lossy link), and the loss estimate must learn from it.
                self._on_packet_lost(packet, now=now)
            else:
                # Nothing heard since: no verdict (maybe an outage), not a loss sample.
                self._cc.on_packet_forgotten(size=packet.size)
                self._requeue(packet)
        self._probes_due = self._probe_burst()
        # The probe timer's base moves even if nothing ack-eliciting could be sent.
        self._keepalive_sent_at = now
        if self._inflight.last_sent_at is not None:
            self._inflight.last_sent_at = now

    def _probe_burst(self) -> int:
        """Probe packets per probe timeout: enough that one likely gets through.

        On a clean link one probe is enough; at 90 % loss a single probe per 30 s
        would take minutes to get an answer through, so send as many as give a
        90 % chance that one arrives (bounded, so a dead link costs little).
        """
        loss = min(self._cc.loss_estimate, 0.99)
        if loss <= 0.1:
            return _PROBE_PACKETS
        return max(_PROBE_PACKETS, min(_MAX_PROBE_BURST, math.ceil(math.log(0.1) / math.log(loss))))

    # ---------------------------------------------------------------- sending

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        """Every datagram that may be sent at ``now`` (pacing and windows allowing)."""
        out: list[tuple[bytes, Path]] = []
        if self._terminated:
            if self._close is not None and not self._close_sent:
                self._close_sent = True
                path = self.peer
                if path is not None:
                    record = encode_record(self._unordered(encode_command(self._close)))
                    out.append((self._seal([record], now=now), path))
            return out
        path = self.peer
        if path is None or not self._anything_due(now):
            return out
        while True:
            datagram = self._build_packet(now=now)
            if datagram is None:
                break
            out.append((datagram, path))
        return out

    def _anything_due(self, now: float) -> bool:
        """Cheap check run before building packets (the simulator asks after every event)."""
        if (
            self._keepalive_request
            or self._keepalive_response
            or self._path_response is not None
            or self._probes_due
            or self._retired_acks
            or self._credit_all
            or self.channels.credit_dirty
            or (self._ack_pending and (self._ack_at is None or now >= self._ack_at))
        ):
            return True
        if self.is_server and self._paths.challenge_pending:
            return True
        if self._outage_since is not None:
            return False
        if not (self._cmd.has_new() or self._cmd.lost or self.channels.has_work()):
            return False
        if self._pacing_at is not None and now < self._pacing_at:
            return False
        return self._inflight.bytes + self.config.packet_size <= self._cc.cwnd

    def _unordered(self, data: bytes) -> Record:
        return Record(0, 0, data, from_server=self.is_server)

    def _control_records(self, *, now: float, room: int) -> list[bytes]:
        """Unordered control records due now, in priority order, within ``room``."""
        records: list[bytes] = []
        cmds: list[Command] = []
        repeat: PathChallenge | None = None
        if self.is_server:
            challenge = self._paths.challenge_to_send()
            if challenge is not None:
                challenge_cmd = PathChallenge(challenge[0])
                cmds.append(challenge_cmd)
                if not challenge[2]:
                    repeat = challenge_cmd
        if self._path_response is not None:
            cmds.append(PathResponse(self._path_response))
            self._path_response = None
        if self._keepalive_response:
            cmds.append(KeepAlive(response=True))
            self._keepalive_response = False
        ack_due = self._ack_pending > 0 and (self._ack_at is None or now >= self._ack_at)
        if ack_due or self._retired_acks:
            targets = self._ack_targets(now)
            cmds.append(self._build_ack(targets, now=now))
            cmds.extend(self._credits(targets))
        elif self.channels.credit_dirty or self._credit_all:
            cmds.extend(self._credits(None))
        self._repeated_challenge = None
        for cmd in cmds:
            encoded = encode_record(self._unordered(encode_command(cmd)))
            if len(encoded) > room:
                break
            records.append(encoded)
            room -= len(encoded)
            if cmd is repeat:
                self._repeated_challenge = encoded
        return records

    def _ack_targets(self, now: float) -> list[int]:
        """Channels whose records the next ACK lists: the most recently active ones.

        ``_ack_channels`` is ordered by last arrival (oldest first), so stale entries
        are trimmed from the front and the newest are taken from the back. Packet
        counter ranges carry the loss information; record ranges add redundancy for
        the channels in use, so a bounded few are enough even with 10,000 channels.
        """
        linger = max(1.0, 4 * self._rtt.smoothed)
        acks = self._ack_channels
        while acks:
            oldest = next(iter(acks))
            if now - acks[oldest] <= linger:
                break
            del acks[oldest]
        return list(acks)[-_ACK_CHANNELS:]

    def _build_ack(self, targets: list[int], *, now: float) -> Ack:
        self._ack_pending = 0
        self._ack_at = None
        ranges: dict[int, list[tuple[int, int]]] = {}
        for channel_id in targets:
            if channel_id == 0:
                ranges[0] = self._cmd_recv.received.newest(_ACK_RANGES)
                continue
            channel = self.channels.get(channel_id)
            if channel is None:
                self._ack_channels.pop(channel_id, None)
                continue
            ranges[channel_id] = channel.recv.received.newest(_ACK_RANGES)
        for channel_id, rangeset in self._retired_acks.items():
            ranges[channel_id] = rangeset.newest(_ACK_RANGES)
        self._retired_acks.clear()
        delay_us = max(0, int((now - self._largest_received_at) * 1e6))
        return ack_from_ranges(
            max(self._largest_received, 0),
            delay_us,
            ranges,
            max_items=_ACK_RANGES,
            packets=self._recent_counter_ranges(),
        )

    def _recent_counter_ranges(self) -> list[tuple[int, int]]:
        """Newest received-counter ranges, only within the recent past: older gaps were
        reported many times already, and the sender has long decided about them."""
        floor = self._largest_received - _COUNTER_REPORT_SPAN
        recent = self._received_counters.newest(_PACKET_RANGES)
        i = 0
        while i < len(recent) and recent[i][1] < floor:
            i += 1
        return recent[i:]

    def _credits(self, targets: list[int] | None) -> list[Credit]:
        """CREDIT messages: for ``targets`` (riding with an ACK, repeated for redundancy
        on a lossy link), or for every channel whose window grew enough to matter."""
        credits: list[Credit] = []
        if targets is not None:
            ids: list[int] = targets
        elif self._credit_all:
            ids = list(self.channels.ids())
        else:
            ids = list(self.channels.credit_dirty)
        announce_all = self._credit_all
        self._credit_all = False
        for channel_id in ids:
            if channel_id == 0:
                continue
            channel = self.channels.get(channel_id)
            if channel is None:
                continue
            credit = channel.recv.credit()
            grown = credit - channel.recv.advertised
            if targets is None and not announce_all and grown < channel.recv.window // 4:
                continue  # small increases ride along with the next ACK
            channel.recv.advertised = credit
            credits.append(Credit(channel_id, credit))
        if targets is None:
            self.channels.credit_dirty.clear()
        return credits

    def _send_limit(self) -> int | None:
        """Largest datagram we may send now; None while the anti-amplification limit blocks.

        To an unvalidated client address the server sends only full packets, except for
        the first copy of a challenge. Tiny packets that each buy an ACK, which buys three
        times its size in more tiny packets, would snowball into a storm of ACKs and
        fragments within one round trip.
        """
        size = self.config.packet_size
        if not self.is_server:
            return size
        allowance = self._paths.allowance()
        if allowance >= size:
            return size
        if self._paths.challenge_pending and allowance >= OVERHEAD + INNER_PREFIX + _MIN_ROOM:
            return allowance
        return None

    def _build_packet(self, *, now: float) -> bytes | None:
        size_limit = self._send_limit()
        if size_limit is None:
            return None
        room = size_limit - OVERHEAD - INNER_PREFIX
        records = self._control_records(now=now, room=room)
        room -= sum(len(r) for r in records)
        eliciting_records: list[tuple[int, int]] = []
        eliciting = False
        if self._keepalive_request and room >= _MIN_ROOM:
            records.append(encode_record(self._unordered(encode_command(KeepAlive()))))
            room -= len(records[-1])
            self._keepalive_request = False
            self._keepalive_sent_at = now
            eliciting = True
        may_stream = self._may_send_data(now=now)
        if may_stream or self._probes_due > 0:
            room = self._fill_data(records, eliciting_records, room, now=now)
            if eliciting_records:
                eliciting = True
        if self._probes_due > 0 and not eliciting and room >= _MIN_ROOM:
            # Nothing left to retransmit: a keep-alive request makes the probe answerable.
            records.append(encode_record(self._unordered(encode_command(KeepAlive()))))
            eliciting = True
        if not records or records == [self._repeated_challenge]:
            return None  # a repeated challenge rides along; alone it would spin (see path.py)
        if eliciting and self._probes_due > 0:
            self._probes_due -= 1
        datagram = self._seal(records, now=now, size=size_limit)
        size = len(datagram)
        counter = self._protector.next_counter - 1
        if eliciting:
            state = self._cc.on_packet_sent(
                now=now, size=size, bytes_in_flight=self._inflight.bytes
            )
            self._inflight.on_sent(SentPacket(counter, now, size, eliciting_records, state))
            self._pacer.on_sent(now=now, rate=self._cc.pacing_rate, size=size)
        for channel_id, pnum in eliciting_records:
            send = self._cmd if channel_id == 0 else self.channels.send_side(channel_id)
            if send is not None:
                record = send.unacked.get(pnum)
                if record is not None:
                    record.counter = counter
        if self.is_server:
            self._paths.on_sent(size)
        return datagram

    def _may_send_data(self, *, now: float) -> bool:
        if self._outage_since is not None:
            return False
        if not (self._cmd.has_new() or self._cmd.lost or self.channels.has_work()):
            self._pacing_at = None
            self._cc.on_app_limited()
            return False
        if self._inflight.bytes + self.config.packet_size > self._cc.cwnd:
            self._pacing_at = None
            return False
        # Asked about the smallest packet that could go: the one built may be small (an
        # interactive exchange), and pacing must never hold back a packet that fits.
        at = self._pacer.next_send_time(now=now, rate=self._cc.pacing_rate, size=_MIN_PACKET)
        if at > now:
            self._pacing_at = at
            return False
        self._pacing_at = None
        return True

    def _fill_data(
        self, records: list[bytes], carried: list[tuple[int, int]], room: int, *, now: float
    ) -> int:
        """Add ordered records (commands first, retransmissions before new data)."""
        # Commands: retransmissions, then new ones.
        while room >= _MIN_ROOM:
            record = self._cmd.next_retransmission()
            if record is None:
                record = self._cmd.next_new_record(0, room, now=now)
                if record is None:
                    break
            else:
                self.retransmissions += 1
            encoded = self._encode_out(0, record)
            if len(encoded) > room:
                self._cmd.requeue(record)
                return room
            records.append(encoded)
            carried.append((0, record.pnum))
            room -= len(encoded)
        if self.channels.has_work():
            # Only alongside data: a packet of nothing but repeated commands is waste.
            room = self._repeat_commands(records, carried, room)
        # Channel data: lost records first, then new data round-robin.
        while room >= _MIN_ROOM:
            item = self.channels.next_record(room, now=now)
            if item is None:
                break
            channel_id, out, is_retx = item
            encoded = self._encode_out(channel_id, out)
            if len(encoded) > room:
                self.channels.push_back(channel_id, out, is_retx=is_retx)
                break
            if is_retx:
                self.retransmissions += 1
                channel = self.channels.get(channel_id)
                if channel is not None:
                    channel.retransmissions += 1
            records.append(encoded)
            carried.append((channel_id, out.pnum))
            room -= len(encoded)
        for channel_id in self.channels.take_stoppable():
            channel = self.channels.get(channel_id)
            if channel is not None:
                self._maybe_stop(channel, now=now)
                self._wake_writer(channel)
        return room

    def _repeat_commands(
        self, records: list[bytes], carried: list[tuple[int, int]], room: int
    ) -> int:
        """On a very lossy link (or before the peer was ever heard), repeat unacknowledged
        commands in every packet: a lost START or STOP would otherwise cost a whole
        loss-detection round, and at 90 % loss that is most of them. Copies carry the
        same pnum, so the receiver drops the extras."""
        if self.state is not State.CONNECTING and self._cc.loss_estimate < _REPEAT_LOSS:
            return room
        already = {pnum for channel_id, pnum in carried if channel_id == 0}
        for pnum, record in list(self._cmd.unacked.items())[:_REPEAT_COMMANDS]:
            if pnum in already or record.counter < 0:
                continue
            encoded = self._encode_out(0, record)
            if len(encoded) > room:
                break
            records.append(encoded)
            carried.append((0, pnum))
            room -= len(encoded)
        return room

    def _wake_writer(self, channel: Channel) -> None:
        if not channel.want_writable or channel.send.capacity() <= 0:
            return
        if self._session_room() <= 0:
            self._room_waiters[channel.channel_id] = None
            return
        channel.want_writable = False
        self._room_waiters.pop(channel.channel_id, None)
        self._events.append(ev.ChannelWritable(channel.channel_id))

    def _wake_room_waiters(self) -> None:
        """Wake every channel waiting on the session-wide budget once enough room is back.

        Room freed by one channel's ACKs belongs to all: a channel that was refused
        before it had anything in flight gets no ACK of its own to wake it (issue 16:
        under 100 parallel downloads such channels stalled forever). All waiters are
        woken in the order they were refused; those refused again queue up behind the
        others, which makes the budget round-robin. The threshold keeps the wake-ups
        to one per ``_ROOM_WAKE_BYTES`` freed rather than one per ACK.
        """
        if not self._room_waiters:
            return
        room = self._session_room()
        if room < min(_ROOM_WAKE_BYTES, self.config.session_send_buffer // 4):
            return
        waiters, self._room_waiters = self._room_waiters, {}
        for channel_id in waiters:
            channel = self.channels.get(channel_id)
            if channel is not None and channel.want_writable and channel.send.capacity() > 0:
                channel.want_writable = False
                self._events.append(ev.ChannelWritable(channel_id))

    def _encode_out(self, channel_id: int, record: OutRecord) -> bytes:
        return encode_record(
            Record(
                channel_id,
                record.pnum,
                record.data,
                from_server=self.is_server,
                compressed=record.compressed,
                fragment=record.fragment,
            )
        )

    def _seal(self, records: list[bytes], *, now: float, size: int | None = None) -> bytes:
        size = self.config.packet_size if size is None else size
        pad_to = size - OVERHEAD if self.config.pad_packets else 0
        inner = encode_inner(records, pad_to=pad_to)
        datagram = self._protector.seal(inner, now=now)
        self.packets_sent += 1
        self.bytes_sent += len(datagram)
        epoch = self._protector.send_epoch
        if epoch != self._send_epoch:
            self._send_epoch = epoch
            self._events.append(ev.KeyUpdated(epoch))
        return datagram

    # ------------------------------------------------------------------ stats

    def receive_loss(self) -> float:
        """Share of the peer's last packets (up to 1024 counters) that did not arrive.

        The send-side estimate only learns from our own ack-eliciting packets; a client
        receiving a download sends few, so this is how it tells a very lossy path (some
        packets still arrive) from a blocked one (none do).
        """
        top = self._largest_received
        first = self._received_counters.first
        if top < 0 or first is None:
            return 0.0
        low = max(first, top - _RECEIVE_LOSS_SPAN + 1)
        span = top - low + 1
        if span < _RECEIVE_LOSS_MIN_SPAN:
            return 0.0  # too few packets to judge
        return max(0.0, 1.0 - self._received_counters.count_from(low) / span)

    def stats(self, *, now: float) -> SessionStats:
        """A frozen snapshot of counters and estimates."""
        peer = self.peer
        return SessionStats(
            role=self.role.value,
            state=self.state.value,
            session_id=self.session_id.hex(),
            peer=str(peer) if peer is not None else "",
            path_changes=self._paths.changes,
            rtt_smoothed=self._rtt.smoothed,
            rtt_min=self._rtt.min_rtt if self._rtt.has_sample else 0.0,
            loss_estimate=self._cc.loss_estimate,
            receive_loss=self.receive_loss(),
            pacing_rate=self._cc.pacing_rate,
            cwnd=self._cc.cwnd,
            bytes_in_flight=self._inflight.bytes,
            packets_sent=self.packets_sent,
            packets_received=self.packets_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            retransmissions=self.retransmissions,
            duplicates=self.duplicates,
            invalid_dropped=self.invalid_dropped,
            key_epoch=self._protector.send_epoch,
            last_received_at=self._last_received_at,
            outages=self.outages,
            channels=self.channels.stats(),
        )

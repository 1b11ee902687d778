"""The sans-IO ResIP session: one client or server end of an encrypted, multiplexed link.

Inputs: :meth:`Session.receive_datagram`, :meth:`Session.handle_timer` and the
channel API (``open_channel``, ``send``, ``shutdown``, ...). Outputs:
:meth:`Session.datagrams_to_send`, :meth:`Session.next_timer`,
:meth:`Session.next_event` and :meth:`Session.stats`. After any input, call
``datagrams_to_send`` and re-arm the timer from ``next_timer``. The session
never reads a clock, never touches a socket and takes its randomness from the
``random_bytes`` it is given, so a simulator can drive it deterministically.

:class:`Session` is a façade over rooms of one job each:

- :mod:`resip.core.roles`: what differs between client and server (paths, keep-alives,
  early records), chosen once here;
- :mod:`resip.core.commands`: records and commands of authenticated packets;
- :mod:`resip.core.ack_state`: what arrived, and when the ACK is due;
- :mod:`resip.core.loss_recovery`: packets in flight, ACKs, probe timeouts, outages;
- :mod:`resip.core.lifecycle`: STOP, end-of-channel events, the send budget;
- :mod:`resip.core.packet_builder`: what the next datagram carries, and sealing it;
- :mod:`resip.core.channel_table` and :mod:`resip.core.crypto` (PacketProtector).

Rules the code keeps:

1. Nothing from the network changes state before it authenticates (the
   protector opens it first); malformed or forged datagrams are counted and
   dropped, never raised. An *authenticated* peer that breaks the protocol
   gets the session closed with ``PROTOCOL_ERROR``.
2. Loss is not congestion: losses trigger retransmission, never a rate cut;
   the rate comes from :class:`~resip.core.congestion.RateController`.
3. Outages are survived, not timed out: after ``outage_after_probes`` silent
   probe timeouts the sender stops streaming and sends one probe per (capped)
   backoff interval, keeping every channel and byte; the first packet from the
   peer ends the outage and sending resumes at the previous rate.
4. Only the client opens channels and only the client sends keep-alives; the
   server follows the newest authenticated source address (:mod:`resip.core.path`).
5. Once terminated, the session sends its CLOSE (if it closed itself) and then
   nothing; every input is ignored.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from resip.core import events as ev
from resip.core.ack_state import AckState
from resip.core.channel_table import Channel, ChannelStats, ChannelTable
from resip.core.codes import CloseCode
from resip.core.commands import CommandHandler
from resip.core.config import SessionConfig
from resip.core.crypto import Header, HeaderProtection, PacketProtector, Suite
from resip.core.errors import DecryptError, LocalProtocolError, ProtocolViolation, WireError
from resip.core.lifecycle import ChannelLifecycle
from resip.core.loss_recovery import LossRecovery, State
from resip.core.packet_builder import Outbox, PacketBuilder
from resip.core.roles import Role, make_role
from resip.core.wire import Ack, Close, Proto, Start, Started, Terminate

__all__ = ["Path", "Role", "Session", "SessionStats", "State"]

log = logging.getLogger(__name__)

Path = Hashable


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
        self._role = make_role(role, peer=peer, random_bytes=random_bytes)
        self.is_server = self._role.is_server
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
        self._events: deque[ev.Event] = deque()
        self.channels = ChannelTable(config, is_server=self.is_server)
        self._lifecycle = ChannelLifecycle(config, self.channels, self._events)
        self._acks = AckState(config, now=now)
        self._recovery = LossRecovery(
            config,
            self._lifecycle,
            self._events,
            connected=self._role.starts_connected,
            now=now,
        )
        self._outbox = Outbox(keepalive_request=self._role.sends_keepalives)
        self._commands = self._make_commands()
        self._builder = self._make_builder()
        self._created_at = now
        self._close: Close | None = None
        self._close_sent = False
        self._terminated = False
        # Counters for stats() (the rooms keep the others).
        self.packets_received = 0
        self.bytes_received = 0
        self.invalid_dropped = 0

    def _make_commands(self) -> CommandHandler:
        return CommandHandler(
            role=self._role,
            channels=self.channels,
            lifecycle=self._lifecycle,
            acks=self._acks,
            outbox=self._outbox,
            rtt=self._recovery.rtt,
            events=self._events,
            on_ack=self._on_ack,
            on_close=self._on_peer_close,
        )

    def _make_builder(self) -> PacketBuilder:
        return PacketBuilder(
            self.config,
            role=self._role,
            protector=self._protector,
            outbox=self._outbox,
            acks=self._acks,
            recovery=self._recovery,
            channels=self.channels,
            lifecycle=self._lifecycle,
            events=self._events,
        )

    # ------------------------------------------------------------------ state

    @property
    def terminated(self) -> bool:
        """True once the session is over (a :class:`SessionTerminated` was queued)."""
        return self._terminated

    @property
    def state(self) -> State:
        """Connecting, connected, in an outage, or closed."""
        return State.CLOSED if self._terminated else self._recovery.state

    @property
    def peer(self) -> Path | None:
        """Where our packets go: the server address (client) or the newest client address."""
        return self._role.peer

    @property
    def packets_sent(self) -> int:
        """Datagrams sealed."""
        return self._builder.packets_sent

    @property
    def bytes_sent(self) -> int:
        """Bytes of the datagrams sealed."""
        return self._builder.bytes_sent

    @property
    def retransmissions(self) -> int:
        """Records sent again after a loss."""
        return self._builder.retransmissions

    @property
    def duplicates(self) -> int:
        """Records that arrived more than once."""
        return self._commands.duplicates

    @property
    def outages(self) -> int:
        """Outages so far."""
        return self._recovery.outages

    # ------------------------------------------------------------------ API

    def set_peer(self, path: Path) -> None:
        """Client: send to ``path`` from now on (address change, or UDP/TCP fallback switch)."""
        self._role.set_peer(path)
        # Tell the server at once, so it learns the new address.
        self._outbox.keepalive_request = True

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
        if not self._role.opens_channels:
            raise LocalProtocolError("only the client opens channels")
        self._check_open()
        use_compression = self.config.compress if compress is None else compress
        channel = self.channels.create_local(proto, host, port, use_compression, now=now)
        start = Start(channel.channel_id, proto, host, port, compress=use_compression)
        self._lifecycle.queue_command(start, now=now)
        return channel.channel_id

    def accept_channel(self, channel_id: int, *, now: float) -> None:
        """Server: the target is connected; tell the client (STARTED)."""
        channel = self._channel(channel_id)
        if not channel.started:
            channel.started = True
            self._lifecycle.queue_command(Started(channel_id), now=now)

    def send(self, channel_id: int, data: bytes, *, now: float) -> int:
        """Queue stream bytes; returns how many were accepted.

        When fewer than ``len(data)`` are accepted, a :class:`ChannelWritable`
        event follows once there is room again.
        """
        channel = self._channel(channel_id)
        if channel.send.fin_requested:
            raise LocalProtocolError(f"channel {channel_id} was shut down for sending")
        room = self._lifecycle.session_room()
        accepted = channel.send.write(data[: max(0, room)])
        self.channels.note_buffered(accepted)
        if accepted < len(data):
            self._lifecycle.refused(channel, accepted=accepted, room=room)
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
            self.channels.note_buffered(len(data))
            self.channels.mark_ready(channel_id)
            channel.bytes_sent += len(data)
            channel.last_activity = now
        return ok

    def send_capacity(self, channel_id: int) -> int:
        """Stream bytes ``send`` would accept now."""
        channel = self._channel(channel_id)
        return max(0, min(channel.send.capacity(), self._lifecycle.session_room()))

    def shutdown(self, channel_id: int, *, now: float) -> None:
        """Half-close: no more data from us on this channel (STOP once everything is sent)."""
        channel = self._channel(channel_id)
        channel.send.finish()
        self._lifecycle.maybe_stop(channel, now=now)
        self._lifecycle.check_done(channel, now=now)

    def reset_channel(
        self, channel_id: int, code: int = 0, reason: str = "", *, now: float
    ) -> None:
        """Abort a channel in both directions (TERMINATE); buffered data is discarded."""
        channel = self.channels.get(channel_id)
        if channel is None:
            return
        self._lifecycle.queue_command(Terminate(channel_id, code, reason), now=now)
        self.channels.retire(channel_id)
        self._lifecycle.wake_room_waiters()

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

    def _terminate(self, code: int, reason: str, *, by_peer: bool) -> None:
        if self._terminated:
            return
        self._terminated = True
        log.info(
            "session %s closed (code %d%s): %s",
            self.session_id.hex(),
            code,
            ", by peer" if by_peer else "",
            reason,
        )
        self._events.append(ev.SessionTerminated(code, reason, by_peer))

    # -------------------------------------------------------------- receiving

    def receive_datagram(
        self, data: bytes, path: Path, *, now: float, header: Header | None = None
    ) -> bool:
        """Take one datagram from ``path``; True if it authenticated (opened, no replay).

        Invalid ones are counted and dropped (False). True says the peer is alive on
        ``path``, whatever the packet then held: a protocol violation in it still closes
        the session. After termination every datagram is ignored (False). ``header`` is
        the datagram's header if the caller already unmasked it (the server's endpoint,
        to route it), so it is not unmasked twice.
        """
        if self._terminated:
            return False
        try:
            opened = self._protector.open_untrusted(data, now=now, header=header)
        except (WireError, DecryptError):
            self.invalid_dropped += 1
            return False
        counter = opened.header.counter
        newest = self._acks.on_packet(counter, now=now)
        self.packets_received += 1
        self.bytes_received += len(data)
        self._recovery.on_peer_heard(now=now)
        timeout = self._recovery.validation_timeout()
        moved = self._role.on_packet(path, len(data), newest=newest, now=now, timeout=timeout)
        if moved is not None:
            self._events.append(ev.PathChanged(moved[0], moved[1]))
        try:
            eliciting, accepted = self._commands.on_packet(opened.plaintext, now=now)
        except (WireError, ProtocolViolation) as exc:
            code = exc.code if isinstance(exc, ProtocolViolation) else CloseCode.PROTOCOL_ERROR
            self.close(code, f"protocol error: {exc}", now=now)
            return True
        if accepted:
            # Only a packet whose every record was taken may be acknowledged as a
            # whole; otherwise the sender must learn the refused ones are missing.
            self._acks.on_accepted(counter)
        if eliciting:
            self._acks.on_eliciting(now=now)
        return True

    def _on_ack(self, ack: Ack, now: float) -> None:
        if ack.largest >= self._protector.next_counter:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "ACK of a packet never sent")
        self._protector.on_peer_acked(ack.largest)
        self._recovery.on_ack(ack, now=now)
        self._lifecycle.wake_room_waiters()

    def _on_peer_close(self, code: int, reason: str) -> None:
        self._terminate(code, reason, by_peer=True)

    # ------------------------------------------------------------------ timers

    def _keepalive_at(self) -> float | None:
        recovery = self._recovery
        return self._role.keepalive_at(
            in_flight=bool(recovery.inflight.packets),
            last_heard=recovery.last_received_at,
            sent_at=recovery.keepalive_sent_at,
            interval=self.config.keepalive_interval,
        )

    def _idle_at(self) -> float:
        last = self._recovery.last_received_at
        base = last if last is not None else self._created_at
        return base + self.config.idle_timeout

    def next_timer(self) -> float | None:
        """The earliest time :meth:`handle_timer` has work to do, or None."""
        if self._terminated:
            return None
        recovery = self._recovery
        # A server that may not send to an unvalidated address yet has nothing to do until
        # that address sends more (or validates): waking up for ACKs would spin.
        blocked = self._builder.send_limit() is None
        candidates = [
            None if blocked else self._acks.deadline,
            recovery.inflight.loss_at,
            recovery.pto_at(credit_blocked=self.channels.any_credit_blocked()),
            self._keepalive_at(),
            self._idle_at(),
            None if blocked else recovery.pacing_at,
            self._role.next_timer(),
        ]
        return min(t for t in candidates if t is not None)

    def handle_timer(self, *, now: float) -> None:
        """Do whatever is due at ``now``; calling it early is harmless."""
        if self._terminated:
            return
        if now >= self._idle_at():
            self.close(CloseCode.IDLE, "idle timeout", now=now)
            return
        credit_blocked = self.channels.any_credit_blocked()
        self._recovery.handle_timer(now=now, credit_blocked=credit_blocked)
        keepalive_at = self._keepalive_at()
        if keepalive_at is not None and now >= keepalive_at:
            self._outbox.keepalive_request = True
        timeout = self._recovery.validation_timeout()
        moved = self._role.handle_timer(now=now, timeout=timeout)
        if moved is not None:
            self._events.append(ev.PathChanged(moved[0], moved[1]))
        self._lifecycle.wake_room_waiters()  # stale datagrams may have been dropped

    # ---------------------------------------------------------------- sending

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Path]]:
        """Every datagram that may be sent at ``now`` (pacing and windows allowing)."""
        out: list[tuple[bytes, Path]] = []
        if self._terminated:
            if self._close is not None and not self._close_sent:
                self._close_sent = True
                path = self.peer
                if path is not None:
                    out.append((self._builder.close_datagram(self._close, now=now), path))
            return out
        path = self.peer
        if path is None or not self._builder.anything_due(now=now):
            return out
        while (datagram := self._builder.build(now=now)) is not None:
            out.append((datagram, path))
        return out

    # ------------------------------------------------------------------ stats

    def receive_loss(self) -> float:
        """Share of the peer's last packets (up to 1024 counters) that did not arrive."""
        return self._acks.receive_loss()

    def stats(self, *, now: float) -> SessionStats:
        """A frozen snapshot of counters and estimates."""
        peer = self.peer
        recovery = self._recovery
        rtt = recovery.rtt
        return SessionStats(
            role=self.role.value,
            state=self.state.value,
            session_id=self.session_id.hex(),
            peer=str(peer) if peer is not None else "",
            path_changes=self._role.path_changes,
            rtt_smoothed=rtt.smoothed,
            rtt_min=rtt.min_rtt if rtt.has_sample else 0.0,
            loss_estimate=recovery.cc.loss_estimate,
            receive_loss=self.receive_loss(),
            pacing_rate=recovery.cc.pacing_rate,
            cwnd=recovery.cc.cwnd,
            bytes_in_flight=recovery.inflight.bytes,
            packets_sent=self.packets_sent,
            packets_received=self.packets_received,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            retransmissions=self.retransmissions,
            duplicates=self.duplicates,
            invalid_dropped=self.invalid_dropped,
            key_epoch=self._protector.send_epoch,
            last_received_at=recovery.last_received_at,
            outages=self.outages,
            channels=self.channels.stats(),
        )

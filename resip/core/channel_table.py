"""The session's channels: lookup, lifecycle, and which ones have something to send.

Keeps the scheduling queues so the per-packet path never scans every channel:

- ``_retx``: channels holding records declared lost (served first);
- ``_ready``: channels with new data and credit, served round-robin one record
  at a time so hundreds of channels share the link fairly;
- ``credit_dirty``: channels whose receive window grew (a CREDIT may be due);
- ``_blocked``: channels with data but no credit from the peer.

A channel id is *retired* once it was used and is no longer open; records
that still arrive for it are acknowledged and dropped (the peer must stop
retransmitting them). Ids are never reused within a session.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Literal

from resip.core.channel import OutRecord, RecvSide, SendSide
from resip.core.config import SessionConfig
from resip.core.wire import Proto, Start

#: Window of the command channel: commands are tiny and never flow controlled.
_COMMAND_WINDOW = 1 << 40


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """A snapshot of one channel."""

    channel_id: int
    proto: str
    target: str
    state: str
    bytes_sent: int
    bytes_received: int
    in_flight: int
    buffered: int
    retransmissions: int
    opened_at: float
    last_activity: float


@dataclass(slots=True, eq=False)
class Channel:
    """One channel: its two halves and its lifecycle flags."""

    channel_id: int
    proto: Proto
    host: IPv4Address | IPv6Address | str
    port: int
    send: SendSide
    recv: RecvSide
    opened_at: float
    #: Client: the server answered STARTED. Server: the owner accepted it.
    started: bool = False
    stop_sent: bool = False
    ended_reported: bool = False
    want_writable: bool = False
    last_activity: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    retransmissions: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """``host:port`` as a user would write it."""
        host = f"[{self.host}]" if isinstance(self.host, IPv6Address) else str(self.host)
        return f"{host}:{self.port}"

    @property
    def state(self) -> str:
        """A one-word state for status views."""
        if not self.started:
            return "opening"
        if self.stop_sent and self.ended_reported:
            return "closing"
        if self.stop_sent:
            return "half-closed-local"
        if self.ended_reported:
            return "half-closed-remote"
        return "open"


class ChannelTable:
    """All data channels of one session (channel 0 is the command channel, kept apart)."""

    def __init__(self, config: SessionConfig, *, is_server: bool) -> None:
        self._config = config
        self._is_server = is_server
        self._channels: dict[int, Channel] = {}
        self._highest_id = 0
        self._retx: deque[int] = deque()
        self._retx_set: set[int] = set()
        self._ready: deque[int] = deque()
        self._ready_set: set[int] = set()
        self._blocked: set[int] = set()
        self._stoppable: list[int] = []
        #: Sum of every channel's ``send.buffered``: the session-wide budget is checked
        #: on every send and every writer wake-up, so it must not cost O(channels).
        self._buffered = 0
        self.credit_dirty: set[int] = set()
        #: Receiving half of the command channel.
        self.command_recv = RecvSide(Proto.UDP, window=_COMMAND_WINDOW)
        self.command_recv.advertised = _COMMAND_WINDOW

    def __len__(self) -> int:
        return len(self._channels)

    def get(self, channel_id: int) -> Channel | None:
        """The open channel with this id, or None."""
        return self._channels.get(channel_id)

    def ids(self) -> Iterator[int]:
        """Ids of the open channels."""
        return iter(self._channels)

    def send_side(self, channel_id: int) -> SendSide | None:
        """Sending half of an open channel."""
        channel = self._channels.get(channel_id)
        return channel.send if channel is not None else None

    def is_retired(self, channel_id: int) -> bool:
        """Used before and no longer open."""
        return 0 < channel_id <= self._highest_id and channel_id not in self._channels

    def _new(
        self,
        channel_id: int,
        proto: Proto,
        host: IPv4Address | IPv6Address | str,
        port: int,
        compress: bool,
        *,
        now: float,
    ) -> Channel:
        config = self._config
        send = SendSide(
            proto,
            buffer_limit=config.channel_send_buffer,
            message_size=config.message_size,
            compress=compress,
            datagram_max_age=config.datagram_max_age,
            datagram_queue=config.datagram_queue,
        )
        recv = RecvSide(proto, window=config.channel_window)
        channel = Channel(channel_id, proto, host, port, send, recv, now, last_activity=now)
        self._channels[channel_id] = channel
        self._highest_id = max(self._highest_id, channel_id)
        return channel

    def create_local(
        self,
        proto: Proto,
        host: IPv4Address | IPv6Address | str,
        port: int,
        compress: bool,
        *,
        now: float,
    ) -> Channel:
        """Client: a new channel with the next id."""
        return self._new(self._highest_id + 1, proto, host, port, compress, now=now)

    def create_remote(self, cmd: Start, *, now: float) -> Channel | Literal["limit"] | None:
        """Server: a channel the client asked for; None for an id already used."""
        if cmd.channel <= self._highest_id:
            return None
        if len(self._channels) >= self._config.max_channels:
            self._highest_id = cmd.channel
            return "limit"
        return self._new(cmd.channel, cmd.proto, cmd.host, cmd.port, cmd.compress, now=now)

    def retire(self, channel_id: int) -> None:
        """Forget an open channel (finished or aborted)."""
        channel = self._channels.pop(channel_id, None)
        if channel is not None:
            self._buffered -= channel.send.buffered
            self._blocked.discard(channel_id)
            self.credit_dirty.discard(channel_id)

    # -- scheduling ----------------------------------------------------------------

    def mark_ready(self, channel_id: int) -> None:
        """The channel may have new records to cut (data written or credit grew)."""
        self._blocked.discard(channel_id)
        if channel_id not in self._ready_set:
            self._ready_set.add(channel_id)
            self._ready.append(channel_id)

    def mark_retransmit(self, channel_id: int) -> None:
        """The channel has records declared lost."""
        if channel_id not in self._retx_set:
            self._retx_set.add(channel_id)
            self._retx.append(channel_id)

    def mark_credit(self, channel_id: int) -> None:
        """The channel's receive window may have grown."""
        self.credit_dirty.add(channel_id)

    def has_work(self) -> bool:
        """Whether any channel may have records to send."""
        return bool(self._retx or self._ready)

    def any_credit_blocked(self) -> bool:
        """Whether some channel has data waiting for the peer's credit."""
        return bool(self._blocked)

    def buffered_total(self) -> int:
        """Bytes buffered for sending over every channel (kept as a running total)."""
        return self._buffered

    def note_buffered(self, n: int) -> None:
        """The application handed ``n`` more bytes to one channel's send side."""
        self._buffered += n

    def next_record(self, room: int, *, now: float) -> tuple[int, OutRecord, bool] | None:
        """The next record whose encoding fits ``room`` bytes: (channel, record, is_retransmission).

        None when nothing waits or the next record does not fit (the packet is full):
        a record is taken only to be sent, never pulled and pushed back.
        """
        retx = self._retx
        while retx:
            channel_id = retx[0]
            channel = self._channels.get(channel_id)
            if channel is not None:
                record = channel.send.next_retransmission(channel_id, room)
                if record is not None:
                    return channel_id, record, True
                if channel.send.lost_record() is not None:
                    return None  # the next retransmission does not fit: the packet is full
            retx.popleft()
            self._retx_set.discard(channel_id)
        ready = self._ready
        while ready:
            channel_id = ready[0]
            channel = self._channels.get(channel_id)
            if channel is None or not channel.send.has_new():
                ready.popleft()
                self._ready_set.discard(channel_id)
                if channel is not None and channel.send.credit_blocked():
                    self._blocked.add(channel_id)
                continue
            before = channel.send.buffered
            new = channel.send.next_new_record(channel_id, room, now=now)
            # Cutting a record (or dropping stale datagrams) is the only other change.
            self._buffered += channel.send.buffered - before
            if new is None:
                return None  # not even one record fits: the packet is full
            ready.rotate(-1)
            if channel.send.fin_pnum is not None and not channel.stop_sent:
                self._stoppable.append(channel_id)
            return channel_id, new, False
        return None

    def take_stoppable(self) -> list[int]:
        """Channels whose last record was just cut (their STOP may go out)."""
        stoppable = self._stoppable
        self._stoppable = []
        return stoppable

    def stats(self) -> tuple[ChannelStats, ...]:
        """Per-channel snapshots for status views."""
        return tuple(
            ChannelStats(
                channel_id=c.channel_id,
                proto=c.proto.name.lower(),
                target=c.target,
                state=c.state,
                bytes_sent=c.bytes_sent,
                bytes_received=c.bytes_received,
                in_flight=c.send.bytes_in_flight,
                buffered=c.send.buffered,
                retransmissions=c.retransmissions,
                opened_at=c.opened_at,
                last_activity=c.last_activity,
            )
            for c in self._channels.values()
        )

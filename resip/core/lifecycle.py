"""Channel lifecycle: STOP, end-of-channel events, writability and the send budget.

The :class:`~resip.core.channel_table.ChannelTable` keeps channels and schedules them;
this room turns what happens to them into commands and events:

- a channel whose last record was cut sends STOP (once);
- ``ChannelEnded`` once every record of the peer's direction was delivered,
  ``ChannelClosed`` (and the id retired) once both directions are done;
- ``ChannelWritable`` once a channel that refused bytes has room again, both in
  its own buffer and in the session-wide budget;
- acknowledged and lost records (as a :class:`~resip.core.loss_recovery.RecordSink`):
  forgotten, or queued for retransmission.

Invariants: a STOP goes out at most once per channel, after its last record was
cut; ``ChannelEnded`` and ``ChannelClosed`` are reported at most once each, in
that order; every channel refused by the session-wide budget is woken once room
returns, whichever channel's data freed it (``_room_waiters`` keeps them in the
order they were refused, which makes the budget round-robin).
"""

from __future__ import annotations

from collections import deque

from resip.core import events as ev
from resip.core.channel import SendSide
from resip.core.channel_table import Channel, ChannelTable
from resip.core.config import SessionConfig
from resip.core.loss_recovery import keys_in_ranges
from resip.core.wire import Command, Proto, Stop, encode_command

__all__ = ["ChannelLifecycle"]

#: Channel-0 credit: commands are not flow controlled.
_UNLIMITED = 1 << 62
#: Session-wide send room that wakes the channels waiting for it.
_ROOM_WAKE_BYTES = 64 * 1024


class ChannelLifecycle:
    """Commands and events that follow from what happens to the session's channels."""

    def __init__(
        self, config: SessionConfig, channels: ChannelTable, events: deque[ev.Event]
    ) -> None:
        self._config = config
        self._channels = channels
        self._events = events
        #: Sending half of the command channel (channel 0).
        self.cmd = SendSide(
            Proto.UDP,
            buffer_limit=_UNLIMITED,
            message_size=config.message_size,
            compress=False,
            datagram_max_age=float("inf"),
            datagram_queue=1 << 30,
            atomic=True,
        )
        self.cmd.peer_credit = _UNLIMITED
        #: Channels refused by the session-wide send budget, oldest first: each is woken
        #: when room returns, whichever channel's data freed it (see wake_room_waiters).
        self._room_waiters: dict[int, None] = {}

    def queue_command(self, cmd: Command, *, now: float) -> None:
        """Send an ordered command on channel 0."""
        self.cmd.write_datagram(encode_command(cmd), now=now)

    # -- ends of channels ----------------------------------------------------------

    def maybe_stop(self, channel: Channel, *, now: float) -> None:
        """Send STOP once the channel's last record was cut."""
        if channel.send.fin_pnum is not None and not channel.stop_sent:
            channel.stop_sent = True
            self.queue_command(Stop(channel.channel_id, channel.send.fin_pnum), now=now)

    def check_done(self, channel: Channel, *, now: float) -> None:
        """Report the peer's direction finished, and retire the channel once both are."""
        if channel.recv.finished and not channel.ended_reported:
            channel.ended_reported = True
            self._events.append(ev.ChannelEnded(channel.channel_id))
        if channel.ended_reported and channel.stop_sent and channel.send.done:
            self._channels.retire(channel.channel_id)
            self._events.append(ev.ChannelClosed(channel.channel_id))

    def on_records_cut(self, *, now: float) -> None:
        """Channels whose last record was just cut may send STOP, and may take more."""
        for channel_id in self._channels.take_stoppable():
            channel = self._channels.get(channel_id)
            if channel is not None:
                self.maybe_stop(channel, now=now)
                self.wake_writer(channel)

    # -- send budget -----------------------------------------------------------------

    def session_room(self) -> int:
        """Bytes the session-wide send buffer still takes."""
        return self._config.session_send_buffer - self._channels.buffered_total()

    def refused(self, channel: Channel, *, accepted: int, room: int) -> None:
        """``send`` took only ``accepted`` bytes: wake the writer once there is room."""
        channel.want_writable = True
        if accepted >= room:
            self._room_waiters[channel.channel_id] = None

    def wake_writer(self, channel: Channel) -> None:
        """``ChannelWritable`` if the channel refused bytes and has room again."""
        if not channel.want_writable or channel.send.capacity() <= 0:
            return
        if self.session_room() <= 0:
            self._room_waiters[channel.channel_id] = None
            return
        channel.want_writable = False
        self._room_waiters.pop(channel.channel_id, None)
        self._events.append(ev.ChannelWritable(channel.channel_id))

    def wake_room_waiters(self) -> None:
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
        room = self.session_room()
        if room < min(_ROOM_WAKE_BYTES, self._config.session_send_buffer // 4):
            return
        waiters, self._room_waiters = self._room_waiters, {}
        for channel_id in waiters:
            channel = self._channels.get(channel_id)
            if channel is not None and channel.want_writable and channel.send.capacity() > 0:
                channel.want_writable = False
                self._events.append(ev.ChannelWritable(channel_id))

    # -- acknowledged and lost records (RecordSink) ------------------------------------

    def records_acked(self, records: list[tuple[int, int]], *, now: float) -> None:
        """Every record of an acknowledged packet arrived."""
        for channel_id, pnum in records:
            if channel_id == 0:
                self.cmd.on_acked(pnum)
                continue
            channel = self._channels.get(channel_id)
            if channel is not None and channel.send.on_acked(pnum) is not None:
                self._after_acked(channel, now=now)

    def ranges_acked(
        self, channel_id: int, ranges: tuple[tuple[int, int], ...], *, now: float
    ) -> None:
        """An ACK's record ranges for one channel."""
        if channel_id == 0:
            send = self.cmd
            channel = None
        else:
            channel = self._channels.get(channel_id)
            if channel is None:
                return
            send = channel.send
        if not send.unacked:
            return
        # unacked is ordered by pnum (new records are appended), as keys_in_ranges needs.
        for pnum in keys_in_ranges(send.unacked, ranges):
            # Only the record: the copy that arrived may have travelled in another
            # packet than its latest transmission, so no packet is acknowledged here
            # (packet-counter ranges do that, exactly).
            send.on_acked(pnum)
        if channel is not None:
            self._after_acked(channel, now=now)

    def records_lost(self, records: list[tuple[int, int]], counter: int) -> None:
        """Queue the still-unacknowledged records of lost packet ``counter`` again."""
        for channel_id, pnum in records:
            if channel_id == 0:
                self.cmd.on_lost(pnum, counter)
                continue
            channel = self._channels.get(channel_id)
            if channel is not None:
                channel.send.on_lost(pnum, counter)
                self._channels.mark_retransmit(channel_id)

    def _after_acked(self, channel: Channel, *, now: float) -> None:
        self.wake_writer(channel)
        self.check_done(channel, now=now)

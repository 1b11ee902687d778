"""Receive-side ACK state: what arrived, what we owe the peer, and building the ACK.

One ACK (PROTOCOL.md §5.4) says two things: which packet counters arrived
(exact, for loss detection at the sender) and which records of the most
recently active channels arrived (redundancy). This module keeps both, and
decides when an ACK is due (ARCHITECTURE §3, "ACK policy").

Invariants:

1. A counter is in :attr:`AckState.counters` only if *every* record of that
   packet was taken: the sender treats an acknowledged packet's records as
   delivered, so a packet with a refused record must look missing.
2. ``pending`` counts ack-eliciting packets since the last ACK. The ``deadline``
   is at most ``max_ack_delay`` after the first of them, and ``now`` after the
   ``ack_every``-th one or a gap; building an ACK clears both.
3. ``largest`` only grows; ``largest_at`` is when it arrived (the ACK's delay).
4. Memory is bounded: counters more than 2^16 below the newest are forgotten,
   channels not heard from for a while leave the active list, and the record
   ranges of retired channels are reported once and dropped.
"""

from __future__ import annotations

from resip.core.channel_table import ChannelTable
from resip.core.config import SessionConfig
from resip.core.rangeset import RangeSet
from resip.core.wire import Ack, ack_from_ranges

__all__ = ["AckState"]

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
#: Counters looked at by receive_loss, and how many it needs to say anything.
_RECEIVE_LOSS_SPAN = 1024
_RECEIVE_LOSS_MIN_SPAN = 16


class AckState:
    """What we received from the peer and when it must be acknowledged."""

    __slots__ = (
        "_ack_every",
        "_active",
        "_max_ack_delay",
        "counters",
        "deadline",
        "largest",
        "largest_at",
        "pending",
        "retired",
    )

    def __init__(self, config: SessionConfig, *, now: float) -> None:
        self._ack_every = config.ack_every
        self._max_ack_delay = config.max_ack_delay
        self.largest = -1
        self.largest_at = now
        #: Ack-eliciting packets not acknowledged yet, and by when the ACK must go.
        self.pending = 0
        self.deadline: float | None = None
        #: Channel -> last arrival, ordered by last arrival (oldest first).
        self._active: dict[int, float] = {}
        #: Counters of packets whose records were all accepted (what ACKs report).
        self.counters = RangeSet()
        #: Records that arrived for retired channels, acknowledged with the next ACK.
        self.retired: dict[int, RangeSet] = {}

    # -- arrivals --------------------------------------------------------------------

    def on_packet(self, counter: int, *, now: float) -> bool:
        """An authenticated packet arrived; returns whether it is the newest so far."""
        newest = counter > self.largest
        if newest:
            self.largest = counter
            self.largest_at = now
        return newest

    def on_accepted(self, counter: int) -> None:
        """Every record of packet ``counter`` was taken: it may be acknowledged whole."""
        self.counters.add(counter)
        if counter & 0xFFF == 0:
            self.counters.remove_below(counter - _COUNTER_MEMORY)

    def on_eliciting(self, *, now: float) -> None:
        """An ack-eliciting packet arrived: arm (or advance) the ACK deadline."""
        self.pending += 1
        if self.pending >= self._ack_every:
            self.deadline = now
        elif self.deadline is None:
            self.deadline = now + self._max_ack_delay

    def on_channel_record(self, channel_id: int, *, now: float) -> None:
        """A record of ``channel_id`` arrived: it becomes the most recently active."""
        # Re-insert so the dict stays ordered by last arrival (see targets).
        self._active.pop(channel_id, None)
        self._active[channel_id] = now

    def on_gap(self, *, now: float) -> None:
        """A record skipped pnums: acknowledge at once so the sender learns of the loss."""
        self.deadline = now

    def on_retired_record(self, channel_id: int, pnum: int) -> None:
        """A record for a finished or aborted channel: acknowledge it so retransmits stop."""
        self.retired.setdefault(channel_id, RangeSet()).add(pnum)

    # -- sending ---------------------------------------------------------------------

    def due(self, *, now: float) -> bool:
        """Whether an ACK for ack-eliciting packets must go out at ``now``."""
        return self.pending > 0 and (self.deadline is None or now >= self.deadline)

    def targets(self, *, now: float, smoothed_rtt: float) -> list[int]:
        """Channels whose records the next ACK lists: the most recently active ones.

        ``_active`` is ordered by last arrival (oldest first), so stale entries
        are trimmed from the front and the newest are taken from the back. Packet
        counter ranges carry the loss information; record ranges add redundancy for
        the channels in use, so a bounded few are enough even with 10,000 channels.
        """
        linger = max(1.0, 4 * smoothed_rtt)
        acks = self._active
        while acks:
            oldest = next(iter(acks))
            if now - acks[oldest] <= linger:
                break
            del acks[oldest]
        return list(acks)[-_ACK_CHANNELS:]

    def build(self, targets: list[int], channels: ChannelTable, *, now: float) -> Ack:
        """The ACK for ``targets``; nothing is owed after it."""
        self.pending = 0
        self.deadline = None
        ranges: dict[int, list[tuple[int, int]]] = {}
        for channel_id in targets:
            if channel_id == 0:
                ranges[0] = channels.command_recv.received.newest(_ACK_RANGES)
                continue
            channel = channels.get(channel_id)
            if channel is None:
                self._active.pop(channel_id, None)
                continue
            ranges[channel_id] = channel.recv.received.newest(_ACK_RANGES)
        for channel_id, rangeset in self.retired.items():
            ranges[channel_id] = rangeset.newest(_ACK_RANGES)
        self.retired.clear()
        delay_us = max(0, int((now - self.largest_at) * 1e6))
        return ack_from_ranges(
            max(self.largest, 0),
            delay_us,
            ranges,
            max_items=_ACK_RANGES,
            packets=self._recent_counter_ranges(),
        )

    def _recent_counter_ranges(self) -> list[tuple[int, int]]:
        """Newest received-counter ranges, only within the recent past: older gaps were
        reported many times already, and the sender has long decided about them."""
        floor = self.largest - _COUNTER_REPORT_SPAN
        recent = self.counters.newest(_PACKET_RANGES)
        i = 0
        while i < len(recent) and recent[i][1] < floor:
            i += 1
        return recent[i:]

    # -- stats -----------------------------------------------------------------------

    def receive_loss(self) -> float:
        """Share of the peer's last packets (up to 1024 counters) that did not arrive.

        The send-side estimate only learns from our own ack-eliciting packets; a client
        receiving a download sends few, so this is how it tells a very lossy path (some
        packets still arrive) from a blocked one (none do).
        """
        top = self.largest
        first = self.counters.first
        if top < 0 or first is None:
            return 0.0
        low = max(first, top - _RECEIVE_LOSS_SPAN + 1)
        span = top - low + 1
        if span < _RECEIVE_LOSS_MIN_SPAN:
            return 0.0  # too few packets to judge
        return max(0.0, 1.0 - self.counters.count_from(low) / span)

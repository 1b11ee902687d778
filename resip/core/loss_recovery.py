"""Loss recovery: packets in flight, ACK processing, probe timeouts and outages.

One object owns everything the sender knows about the path: the packets in flight
(:class:`~resip.core.inflight.InFlight`), the RTT (:class:`~resip.core.recovery.RttEstimator`),
the rate and window (:class:`~resip.core.congestion.RateController`) and the pacer. What
happens to the *records* of an acknowledged or lost packet is the
:class:`RecordSink`'s business (the channels), so this module never sees a channel.

Liveness is a small state machine, kept here because only recovery can tell a
silent peer from a lossy one::

    CONNECTING --first packet heard--> CONNECTED
    CONNECTED  --outage_after_probes silent PTOs and outage_min_silence--> OUTAGE
    OUTAGE     --any authenticated packet--> CONNECTED

(CLOSED is the session's, once it terminated.) Invariants:

1. Loss is not congestion: a loss requeues the packet's records and feeds the
   loss estimate; only :class:`~resip.core.congestion.RateController` sets the rate.
2. A probe timeout presumes everything in flight lost, but a packet counts as a
   loss sample only if the peer was heard from after it left: total silence says
   nothing about random loss (ARCHITECTURE §3).
3. An ACK's packet ranges acknowledge packets (and so every record in them)
   exactly; its record ranges acknowledge records only, never a packet, since the
   copy that arrived may have travelled in another packet.
4. In an outage nothing streams; probes go out once per (capped, doubling)
   probe timeout, in bursts sized so one likely gets through (ARCHITECTURE §6).
5. Nothing here reads a clock: every time is a ``now`` argument.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from typing import Protocol

from resip.core import events as ev
from resip.core.config import SessionConfig
from resip.core.congestion import Pacer, RateController
from resip.core.inflight import InFlight, SentPacket
from resip.core.recovery import RttEstimator, backoff
from resip.core.wire import Ack

__all__ = ["LossRecovery", "RecordSink", "State", "keys_in_ranges"]

#: Shortest wait for a new client address to answer its challenge (RFC 9000 §8.2.4:
#: six times the initial RTT of 333 ms).
_MIN_VALIDATION_TIMEOUT = 2.0
#: Probe packets per probe timeout on a clean link, and at most on a very lossy one.
_PROBE_PACKETS = 1
_MAX_PROBE_BURST = 16


class State(Enum):
    """Session state, as shown to users."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    OUTAGE = "outage"
    CLOSED = "closed"


class RecordSink(Protocol):
    """Where the records of acknowledged and lost packets go (the channels)."""

    def records_acked(self, records: list[tuple[int, int]], *, now: float) -> None:
        """Every (channel, pnum) of an acknowledged packet arrived."""

    def ranges_acked(
        self, channel_id: int, ranges: tuple[tuple[int, int], ...], *, now: float
    ) -> None:
        """An ACK lists these pnum ranges of ``channel_id`` as received."""

    def records_lost(self, records: list[tuple[int, int]], counter: int) -> None:
        """Packet ``counter`` carrying ``records`` is lost: queue them again."""


def keys_in_ranges(keyed: Mapping[int, object], ranges: Iterable[tuple[int, int]]) -> Iterator[int]:
    """Keys of ``keyed`` within the inclusive ``ranges``, ascending within each range.

    ``keyed`` must be ordered by key (keys inserted in increasing order, as counters
    and pnums are), and the caller may remove each key it is given before asking for
    the next. A range is walked when it is shorter than ``keyed``, else ``keyed`` is
    filtered: ACK ranges can span 2^64 pnums, and ``keyed`` can hold thousands.
    """
    for start, end in ranges:
        if not keyed:
            return
        # The first key is the lowest outstanding one: skip the part of a redundant
        # range below it.
        start = max(start, next(iter(keyed)))
        if end < start:
            continue
        if end - start + 1 <= len(keyed):
            candidates: Iterable[int] = range(start, end + 1)
        else:
            candidates = [key for key in keyed if start <= key <= end]
        for key in candidates:
            if key in keyed:
                yield key


class LossRecovery:
    """The sender's view of the path; see the module docstring for the rules."""

    def __init__(
        self,
        config: SessionConfig,
        sink: RecordSink,
        events: deque[ev.Event],
        *,
        connected: bool,
        now: float,
    ) -> None:
        self._config = config
        self._sink = sink
        self._events = events
        self.inflight = InFlight()
        self.rtt = RttEstimator()
        self.cc = RateController(config.congestion)
        self.pacer = Pacer(packet_size=config.packet_size)
        self.state = State.CONNECTED if connected else State.CONNECTING
        self.last_received_at: float | None = None
        #: When we last asked for a sign of life (the credit-probe and keep-alive base).
        self.keepalive_sent_at = now
        #: When pacing lets the next packet go, while it holds one back.
        self.pacing_at: float | None = None
        self.pto_count = 0
        #: Probe packets still to send for the last probe timeout.
        self.probes_due = 0
        self.outage_since: float | None = None
        self.outages = 0

    # -- ACKs --------------------------------------------------------------------------

    def on_ack(self, ack: Ack, *, now: float) -> None:
        """Take an authenticated ACK: an RTT sample, acknowledged packets and records,
        then the losses they reveal."""
        inflight = self.inflight
        largest_packet = inflight.packets.get(ack.largest)
        if largest_packet is not None:
            sample = now - largest_packet.sent_at
            delay = min(ack.delay_us / 1e6, self._config.max_ack_delay)
            self.rtt.update(sample, ack_delay=delay, now=now)
        inflight.on_largest_acked(ack.largest)
        for counter in keys_in_ranges(inflight.packets, ack.packets):
            self._ack_packet(counter, now=now)
        for group in ack.groups:
            self._sink.ranges_acked(group.channel, group.ranges, now=now)
        self._detect_lost(now=now)

    def _ack_packet(self, counter: int, *, now: float) -> None:
        packet = self.inflight.pop(counter)
        if packet is None:
            return
        self.cc.on_packet_acked(now=now, size=packet.size, state=packet.state, rtt=self.rtt)
        # The peer took every record of an acknowledged packet (PROTOCOL.md §5.4).
        self._sink.records_acked(packet.records, now=now)

    def _detect_lost(self, *, now: float) -> None:
        for packet in self.inflight.detect_lost(now=now, loss_delay=self.rtt.loss_delay()):
            self._on_packet_lost(packet, now=now)

    def _on_packet_lost(self, packet: SentPacket, *, now: float) -> None:
        self.cc.on_packet_lost(now=now, size=packet.size, state=packet.state, rtt=self.rtt)
        self._sink.records_lost(packet.records, packet.counter)

    # -- sending -----------------------------------------------------------------------

    def may_stream(self, *, has_work: bool, now: float, smallest: int) -> bool:
        """Whether ordered records may go now (outage, window and pacing allowing).

        ``smallest`` is the smallest packet that could go: the one built may be small
        (an interactive exchange), and pacing must never hold back a packet that fits.
        """
        if self.outage_since is not None:
            return False
        if not has_work:
            self.pacing_at = None
            self.cc.on_app_limited()
            return False
        if self.inflight.bytes + self._config.packet_size > self.cc.cwnd:
            self.pacing_at = None
            return False
        at = self.pacer.next_send_time(now=now, rate=self.cc.pacing_rate, size=smallest)
        if at > now:
            self.pacing_at = at
            return False
        self.pacing_at = None
        return True

    def could_stream(self, *, has_work: bool, now: float) -> bool:
        """A cheap guess at :meth:`may_stream`, without its side effects."""
        if self.outage_since is not None or not has_work:
            return False
        if self.pacing_at is not None and now < self.pacing_at:
            return False
        return self.inflight.bytes + self._config.packet_size <= self.cc.cwnd

    def on_packet_sent(
        self, counter: int, records: list[tuple[int, int]], *, size: int, now: float
    ) -> None:
        """An ack-eliciting packet left."""
        state = self.cc.on_packet_sent(now=now, size=size, bytes_in_flight=self.inflight.bytes)
        self.inflight.on_sent(SentPacket(counter, now, size, records, state))
        self.pacer.on_sent(now=now, rate=self.cc.pacing_rate, size=size)

    # -- liveness ----------------------------------------------------------------------

    def on_peer_heard(self, *, now: float) -> None:
        """An authenticated packet arrived: the peer is alive (ends an outage)."""
        self.last_received_at = now
        if self.state is State.CONNECTING:
            self.state = State.CONNECTED
            self._events.append(ev.SessionConnected())
        if self.outage_since is not None:
            self._events.append(ev.OutageEnded(now - self.outage_since))
            self.outage_since = None
            self.state = State.CONNECTED
            self.cc.on_outage_end(now=now)
        self.pto_count = 0

    # -- timers ------------------------------------------------------------------------

    def pto_interval(self) -> float:
        """The current probe timeout, backed off by the silent ones before it."""
        base = self.rtt.pto(max_ack_delay=self._config.max_ack_delay)
        return backoff(base, self.pto_count, cap=self._config.probe_backoff_cap)

    def validation_timeout(self) -> float:
        """How long a new client address has to answer its challenge."""
        # RFC 9000 §8.2.4's floor: a busy path or a loaded peer must not look dead, or
        # the server flips back and forth between the old and the new address.
        pto = self.rtt.pto(max_ack_delay=self._config.max_ack_delay)
        return max(self._config.path_validation_ptos * pto, _MIN_VALIDATION_TIMEOUT)

    def pto_at(self, *, credit_blocked: bool) -> float | None:
        """When the probe timer fires, or None when nothing needs an answer."""
        inflight = self.inflight
        if inflight.packets and inflight.last_sent_at is not None:
            return inflight.last_sent_at + self.pto_interval()
        if credit_blocked:
            # Data waits on credit the peer may have sent in a lost packet: ask again.
            base = self.last_received_at if self.last_received_at is not None else 0.0
            return max(base, self.keepalive_sent_at) + self.pto_interval()
        return None

    def handle_timer(self, *, now: float, credit_blocked: bool) -> None:
        """Loss, probe and pacing timers due at ``now``."""
        if self.inflight.loss_at is not None and now >= self.inflight.loss_at:
            self._detect_lost(now=now)
        pto_at = self.pto_at(credit_blocked=credit_blocked)
        if pto_at is not None and now >= pto_at:
            self._on_probe_timeout(now=now)
        if self.pacing_at is not None and now >= self.pacing_at:
            self.pacing_at = None

    def _on_probe_timeout(self, *, now: float) -> None:
        self.pto_count += 1
        last = self.last_received_at
        if (
            self.outage_since is None
            and self.pto_count >= self._config.outage_after_probes
            and last is not None
            and now - last >= self._config.outage_min_silence
        ):
            self.outage_since = last
            self.outages += 1
            self.state = State.OUTAGE
            self._events.append(ev.OutageStarted(self.outage_since))
        # Everything in flight is presumed lost: its records go back in the queue, and
        # the probe carries the oldest of them (useful data, not just a ping).
        heard = last if last is not None else -1.0
        for packet in self.inflight.pop_all():
            if packet.sent_at < heard:
                # The peer was heard from after this left, yet never acknowledged it: a
                # real loss (a lossy link), and the loss estimate must learn from it.
                self._on_packet_lost(packet, now=now)
            else:
                # Nothing heard since: no verdict (maybe an outage), not a loss sample.
                self.cc.on_packet_forgotten(size=packet.size)
                self._sink.records_lost(packet.records, packet.counter)
        self.probes_due = self._probe_burst()
        # The probe timer's base moves even if nothing ack-eliciting could be sent.
        self.keepalive_sent_at = now
        if self.inflight.last_sent_at is not None:
            self.inflight.last_sent_at = now

    def _probe_burst(self) -> int:
        """Probe packets per probe timeout: enough that one likely gets through.

        On a clean link one probe is enough; at 90 % loss a single probe per 30 s
        would take minutes to get an answer through, so send as many as give a
        90 % chance that one arrives (bounded, so a dead link costs little).
        """
        loss = min(self.cc.loss_estimate, 0.99)
        if loss <= 0.1:
            return _PROBE_PACKETS
        return max(_PROBE_PACKETS, min(_MAX_PROBE_BURST, math.ceil(math.log(0.1) / math.log(loss))))

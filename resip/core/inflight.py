"""Packets we sent and have not seen acknowledged or lost: the sender's memory.

Loss detection follows RFC 9002 §6.1: once a packet with a higher counter is
acknowledged, an older packet is lost if it is ``PACKET_THRESHOLD`` counters
older, or was sent more than ``loss_delay`` ago. Only ack-eliciting packets are
tracked (ACK-only packets are never retransmitted and do not count in flight).

Invariant: ``bytes`` is the sum of ``size`` over ``packets``; ``packets`` is
ordered by counter (insertion order), so the oldest is first.
"""

from __future__ import annotations

from dataclasses import dataclass

from resip.core.congestion import SendState
from resip.core.recovery import PACKET_THRESHOLD


@dataclass(slots=True)
class SentPacket:
    """One ack-eliciting packet in flight."""

    counter: int
    sent_at: float
    size: int
    #: Ordered records it carried, as (channel, pnum).
    records: list[tuple[int, int]]
    #: Congestion controller's snapshot at send time (delivery-rate sampling).
    state: SendState


class InFlight:
    """The set of ack-eliciting packets neither acknowledged nor declared lost."""

    __slots__ = ("bytes", "largest_acked", "last_sent_at", "loss_at", "packets")

    def __init__(self) -> None:
        self.packets: dict[int, SentPacket] = {}
        self.bytes = 0
        self.largest_acked = -1
        #: When the newest ack-eliciting packet was sent (the probe timer's base).
        self.last_sent_at: float | None = None
        #: Earliest time an in-flight packet becomes lost by the time threshold.
        self.loss_at: float | None = None

    def __len__(self) -> int:
        return len(self.packets)

    def on_sent(self, packet: SentPacket) -> None:
        """Remember an ack-eliciting packet."""
        self.packets[packet.counter] = packet
        self.bytes += packet.size
        self.last_sent_at = packet.sent_at

    def pop(self, counter: int) -> SentPacket | None:
        """Remove and return the packet with ``counter`` if it is still in flight."""
        packet = self.packets.pop(counter, None)
        if packet is not None:
            self.bytes -= packet.size
        return packet

    def on_largest_acked(self, counter: int) -> None:
        """The peer reports having received ``counter``."""
        if counter > self.largest_acked:
            self.largest_acked = counter

    def detect_lost(self, *, now: float, loss_delay: float) -> list[SentPacket]:
        """Remove and return the packets lost by the packet or time threshold."""
        largest = self.largest_acked
        lost: list[SentPacket] = []
        self.loss_at = None
        for counter, packet in self.packets.items():
            if counter >= largest:
                break
            # Compare the same sum the timer was armed with, so float rounding can never
            # leave a packet "not yet lost" at its own deadline (a timer that never advances).
            lost_at = packet.sent_at + loss_delay
            if counter <= largest - PACKET_THRESHOLD or lost_at <= now:
                lost.append(packet)
            else:
                # Counters grow with send time, so this is the earliest pending deadline.
                self.loss_at = lost_at
                break
        for packet in lost:
            self.pop(packet.counter)
        return lost

    def pop_all(self) -> list[SentPacket]:
        """Declare every packet in flight lost (after a probe timeout)."""
        lost = list(self.packets.values())
        self.packets.clear()
        self.bytes = 0
        self.loss_at = None
        return lost

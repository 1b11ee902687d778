"""The ACK command (docs/PROTOCOL.md §5.4): packet-counter ranges plus per-channel record ranges.

Layout: ``03 || S || largest || delay || N || N packet ranges || groups``, where a
group is a channel selector followed by its record-range items. Invariants:

- **Canonical only.** Packet ranges are newest first, each below the previous by a
  gap of at least one counter; record ranges are ascending, neither touching nor
  overlapping, and never include pnum 0. :func:`encode_ack` refuses anything else
  with :class:`ValueError` and :func:`parse_ack_untrusted` with
  :class:`~resip.core.errors.WireError`, so whatever is accepted re-encodes to the same bytes.
- **Bounded.** One ACK carries at most :data:`MAX_PACKET_RANGES` packet ranges (the
  count is one byte); :func:`ack_from_ranges` keeps record ranges within a budget
  shared fairly between channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from resip.core.errors import WireError
from resip.core.wire.enums import Cmd
from resip.core.wire.ints import (
    MAX_U64,
    byte_at,
    chan_bytes,
    int_bits,
    u64_bytes,
    unpack_int_untrusted,
)

MAX_ACK_ITEMS = 64
#: Packet-counter ranges one ACK may carry (the count is one byte).
MAX_PACKET_RANGES = 255


@dataclass(frozen=True, slots=True)
class AckGroup:
    """Acknowledged pnums of one channel as inclusive ``(start, end)`` ranges.

    Canonical form (required by the encoder and parser): pnums >= 1, ranges
    ascending, neither touching nor overlapping; ``start == end`` for a single number.
    """

    channel: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledgement of ordered records plus the RTT sample ``largest``/``delay_us``."""

    largest: int
    delay_us: int
    groups: tuple[AckGroup, ...]
    #: Received *packet counters* as ascending inclusive ``(start, end)`` ranges,
    #: none above ``largest``. They make loss detection exact however many channels
    #: share the link (record ranges alone must be cut when hundreds are active).
    packets: tuple[tuple[int, int], ...] = ()


# --- encoding ---------------------------------------------------------------


def encode_ack(cmd: Ack) -> bytes:
    """The whole ACK message, command byte included; ``ValueError`` if not canonical."""
    parts: list[bytes] = [bytes((Cmd.ACK,))]
    lb, largest = u64_bytes("largest", cmd.largest)
    db, delay = u64_bytes("delay_us", cmd.delay_us)
    parts += (bytes(((db << 3) | lb,)), largest, delay)
    parts.append(_encode_packet_ranges(cmd.largest, cmd.packets))
    _encode_groups(parts, cmd.groups)
    return b"".join(parts)


def _encode_groups(parts: list[bytes], groups: tuple[AckGroup, ...]) -> None:
    for group in groups:
        cb, chan = chan_bytes(group.channel)
        if not group.ranges:
            raise ValueError(f"ACK group for channel {group.channel} has no ranges")
        parts += (bytes((cb,)), chan)
        prev_end = 0
        for start, end in group.ranges:
            if start <= prev_end + (1 if prev_end else 0) or end < start or end > MAX_U64:
                raise ValueError(
                    f"ACK ranges of channel {group.channel} must be ascending, "
                    f"non-touching, >= 1: {group.ranges}"
                )
            prev_end = end
            sb = int_bits(start)
            if start == end:
                parts += (bytes((0x80 | (sb << 3),)), start.to_bytes(sb + 1, "big"))
            else:
                eb = int_bits(end)
                parts += (
                    bytes((0xC0 | (sb << 3) | eb,)),
                    start.to_bytes(sb + 1, "big"),
                    end.to_bytes(eb + 1, "big"),
                )


def _encode_packet_ranges(largest: int, packets: tuple[tuple[int, int], ...]) -> bytes:
    """``N`` then N items ``sizes | gap | len``, newest range first (PROTOCOL.md §5.4)."""
    if len(packets) > MAX_PACKET_RANGES:
        raise ValueError(f"at most {MAX_PACKET_RANGES} packet ranges, not {len(packets)}")
    parts = [bytes((len(packets),))]
    prev_start = -1
    for start, end in reversed(packets):
        if start < 0 or end < start:
            raise ValueError(f"bad packet range {start}..{end}")
        if prev_start < 0:
            if end > largest:
                raise ValueError("packet range above largest")
            gap = largest - end
        else:
            gap = prev_start - end - 2
            if gap < 0:
                raise ValueError("packet ranges must be ascending and non-touching")
        length = end - start
        gb, lb = int_bits(gap), int_bits(length)
        parts += (bytes(((gb << 3) | lb,)), gap.to_bytes(gb + 1, "big"),
                  length.to_bytes(lb + 1, "big"))  # fmt: skip
        prev_start = start
    return b"".join(parts)


def ack_from_ranges(
    largest: int,
    delay_us: int,
    ranges: Mapping[int, Sequence[tuple[int, int]]],
    max_items: int = MAX_ACK_ITEMS,
    packets: Sequence[tuple[int, int]] = (),
) -> Ack:
    """Build an :class:`Ack` from per-channel ascending canonical ranges.

    When there are more than ``max_items`` ranges in total, the newest (highest)
    ranges of each channel are kept and the budget is shared round-robin between
    channels in ascending id order, so one channel with many gaps cannot crowd
    out the others. Groups come out in ascending channel order; channels with
    no ranges are left out.
    """
    if max_items < 0:
        raise ValueError(f"max_items must be >= 0, not {max_items}")
    channels = sorted(ch for ch, rs in ranges.items() if rs)
    take = {ch: len(ranges[ch]) for ch in channels}
    if sum(take.values()) > max_items:
        take = dict.fromkeys(channels, 0)
        budget = max_items
        active = list(channels)
        while budget and active:
            still: list[int] = []
            for ch in active:
                if budget == 0:
                    break
                take[ch] += 1
                budget -= 1
                if take[ch] < len(ranges[ch]):
                    still.append(ch)
            active = still
    groups = tuple(
        AckGroup(ch, tuple((s, e) for s, e in ranges[ch][len(ranges[ch]) - take[ch] :]))
        for ch in channels
        if take[ch]
    )
    return Ack(largest, delay_us, groups, tuple(packets))


# --- parsing ----------------------------------------------------------------


def parse_ack_untrusted(data: bytes) -> tuple[Ack, int]:
    """Parse the ACK message ``data`` (command byte at 0); returns it and its end offset."""
    s = byte_at(data, 1)
    if s & 0xC0:
        raise WireError("reserved bits set in ACK")
    lb = (s & 7) + 1
    largest = unpack_int_untrusted(data, 2, lb)
    db = ((s >> 3) & 7) + 1
    delay = unpack_int_untrusted(data, 2 + lb, db)
    packets, o = _parse_packet_ranges(data, 2 + lb + db, largest)
    groups, o = _parse_groups(data, o)
    return Ack(largest, delay, groups, packets), o


def _parse_packet_ranges(
    data: bytes, o: int, largest: int
) -> tuple[tuple[tuple[int, int], ...], int]:
    count = byte_at(data, o)
    o += 1
    ranges: list[tuple[int, int]] = []
    prev_start = -1
    for _ in range(count):
        sizes = byte_at(data, o)
        if sizes & 0xC0:
            raise WireError("reserved bits set in ACK packet range")
        gb, lb = ((sizes >> 3) & 7) + 1, (sizes & 7) + 1
        gap = unpack_int_untrusted(data, o + 1, gb)
        length = unpack_int_untrusted(data, o + 1 + gb, lb)
        o += 1 + gb + lb
        end = largest - gap if prev_start < 0 else prev_start - gap - 2
        start = end - length
        if start < 0:
            raise WireError("ACK packet range below zero")
        ranges.append((start, end))
        prev_start = start
    ranges.reverse()
    return tuple(ranges), o


def _parse_groups(data: bytes, o: int) -> tuple[tuple[AckGroup, ...], int]:
    # Groups run to the end of the message: there is no count.
    n = len(data)
    groups: list[AckGroup] = []
    channel = -1
    ranges: list[tuple[int, int]] = []
    prev_end = 0
    while o < n:
        b = data[o]
        o += 1
        if not b & 0x80:
            if b & 0x7C:
                raise WireError("reserved bits set in ACK channel selector")
            if channel >= 0:
                _flush_group(groups, channel, ranges)
            size = (b & 3) + 1
            channel = unpack_int_untrusted(data, o, size)
            o += size
            ranges = []
            prev_end = 0
            continue
        if channel < 0:
            raise WireError("ACK item before any channel selector")
        size = ((b >> 3) & 7) + 1
        start = unpack_int_untrusted(data, o, size)
        o += size
        if b & 0x40:
            size = (b & 7) + 1
            end = unpack_int_untrusted(data, o, size)
            o += size
            if end <= start:
                raise WireError("ACK range end not above its start")
        else:
            if b & 7:
                raise WireError("reserved bits set in ACK item")
            end = start
        if start == 0 or (prev_end and start <= prev_end + 1):
            raise WireError("ACK ranges not ascending, touching, or acknowledging pnum 0")
        prev_end = end
        ranges.append((start, end))
    if channel >= 0:
        _flush_group(groups, channel, ranges)
    return tuple(groups), o


def _flush_group(groups: list[AckGroup], channel: int, ranges: list[tuple[int, int]]) -> None:
    if not ranges:
        raise WireError("ACK channel selector without items")
    groups.append(AckGroup(channel, tuple(ranges)))

"""Pure decision logic of the impaired-link lab's packet relay (``scripts/netlab``).

Contract
--------
Nothing here does I/O or reads a clock: the relay passes ``now`` in and gets delivery
times back, and every random choice comes from the ``random.Random`` it was given, so a
run is reproducible from one seed given the same packet arrival times.

- :class:`Impairment` describes one direction of the link; its fields mean exactly what
  the same names mean in :class:`resip.testing.netsim.LinkSpec`, plus ``blackhole``
  (drop everything) and ``block_udp`` (drop IP protocol 17).
  :meth:`Impairment.updated` applies a JSON-style dict of changes and validates it
  (``ValueError`` with a one-line message for unknown keys or bad values).
- :class:`DirectionShaper` decides the fate of each packet: ``decide(size, proto, now)``
  returns the times at which copies are to be delivered (empty list: dropped). The
  bottleneck is a serialiser at ``rate_bps`` behind a tail-drop queue of
  ``queue_bytes``; loss is applied before the queue, as on a lossy radio link.
- :func:`rewrite_ipv4` replaces the source and/or destination address and port of an
  IPv4 packet and fixes the IP, UDP and TCP checksums: the relay uses it to simulate a
  NAT rebinding the client to a new public address and port.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

__all__ = ["PROTO_TCP", "PROTO_UDP", "DirectionShaper", "Impairment", "rewrite_ipv4"]

PROTO_TCP = 6
PROTO_UDP = 17


@dataclass(frozen=True, kw_only=True)
class Impairment:
    """Behaviour of one direction of the lab link. Times in seconds, rates in bit/s."""

    loss: float = 0.0
    delay: float = 0.0
    """One-way delay added to every packet."""
    jitter: float = 0.0
    """Extra delay drawn uniformly from [0, jitter]; large values reorder."""
    duplicate: float = 0.0
    reorder: float = 0.0
    """Probability that a packet is held back ``reorder_delay`` so later ones overtake it."""
    reorder_delay: float = 0.010
    rate_bps: float | None = None
    """Bottleneck rate; None means no limit (the relay's own speed)."""
    queue_bytes: int = 64 * 1024
    blackhole: bool = False
    block_udp: bool = False

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}={p!r} is not a probability in [0, 1]")
        for name in ("delay", "jitter", "reorder_delay"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0 seconds")
        if self.rate_bps is not None and not self.rate_bps > 0.0:
            raise ValueError("rate_bps must be > 0 (or null for no limit)")
        if self.queue_bytes < 0:
            raise ValueError("queue_bytes must be >= 0")

    def updated(self, changes: Mapping[str, object]) -> Impairment:
        """A copy with ``changes`` applied (JSON types); ValueError on a bad key or value."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        values: dict[str, object] = {}
        for key, value in changes.items():
            if key not in fields:
                raise ValueError(f"unknown setting {key!r} (known: {', '.join(sorted(fields))})")
            if key in ("blackhole", "block_udp"):
                if not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false")
            elif key == "rate_bps":
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float)
                ):
                    raise ValueError("rate_bps must be a number or null")
                value = None if value is None else float(value)
            elif key == "queue_bytes":
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError("queue_bytes must be an integer")
            else:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{key} must be a number")
                value = float(value)
            values[key] = value
        return dataclasses.replace(self, **values)  # type: ignore[arg-type]


class DirectionShaper:
    """The fate of each packet in one direction, from an :class:`Impairment` and a seed."""

    def __init__(self, spec: Impairment, rng: random.Random) -> None:
        """``rng`` is the only source of randomness (seed it for reproducible runs)."""
        self.spec = spec
        self._rng = rng
        self._busy_until = 0.0  # when the serialiser finishes the last queued packet
        #: Packets dropped, by reason.
        self.dropped: dict[str, int] = {}
        self.delivered = 0

    def _drop(self, reason: str) -> list[float]:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        return []

    def decide(self, size: int, proto: int, now: float) -> list[float]:
        """Delivery times of the copies of a ``size``-byte IP packet arriving at ``now``."""
        spec = self.spec
        rng = self._rng
        if spec.blackhole:
            return self._drop("blackhole")
        if spec.block_udp and proto == PROTO_UDP:
            return self._drop("udp_blocked")
        if spec.loss and rng.random() < spec.loss:
            return self._drop("loss")
        depart = now
        if spec.rate_bps is not None:
            backlog = max(0.0, self._busy_until - now) * spec.rate_bps / 8
            if backlog + size > spec.queue_bytes + 1e-6 and backlog > 0:
                return self._drop("queue")
            depart = max(now, self._busy_until) + size * 8 / spec.rate_bps
            self._busy_until = depart
        copies = 2 if spec.duplicate and rng.random() < spec.duplicate else 1
        times = []
        for _ in range(copies):
            at = depart + spec.delay
            if spec.jitter:
                at += rng.uniform(0.0, spec.jitter)
            if spec.reorder and rng.random() < spec.reorder:
                at += spec.reorder_delay
            times.append(at)
        self.delivered += copies
        return times


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    # Summing 16-bit words through one big int is far faster than a Python loop.
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def rewrite_ipv4(
    packet: bytes,
    *,
    src: IPv4Address | None = None,
    sport: int | None = None,
    dst: IPv4Address | None = None,
    dport: int | None = None,
) -> bytes:
    """``packet`` with new addresses/ports and correct checksums; other packets unchanged.

    Ports are rewritten only for the first fragment of a TCP or UDP packet (later
    fragments carry no port); a UDP checksum of 0 (none) stays 0.
    """
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or len(packet) < ihl:
        return packet
    buf = bytearray(packet)
    if src is not None:
        buf[12:16] = src.packed
    if dst is not None:
        buf[16:20] = dst.packed
    buf[10:12] = b"\0\0"
    buf[10:12] = struct.pack("!H", _checksum(bytes(buf[:ihl])))
    proto = buf[9]
    first_fragment = struct.unpack("!H", buf[6:8])[0] & 0x1FFF == 0
    more_fragments = bool(buf[6] & 0x20)
    if proto not in (PROTO_TCP, PROTO_UDP) or not first_fragment:
        return bytes(buf)
    total_len = struct.unpack("!H", buf[2:4])[0]
    l4 = buf[ihl:total_len]
    if len(l4) < (20 if proto == PROTO_TCP else 8):
        return bytes(buf)
    if sport is not None:
        l4[0:2] = struct.pack("!H", sport)
    if dport is not None:
        l4[2:4] = struct.pack("!H", dport)
    csum_at = 16 if proto == PROTO_TCP else 6
    if proto == PROTO_UDP and l4[6:8] == b"\0\0":
        pass  # no checksum was used
    elif more_fragments:
        # The checksum covers the whole reassembled datagram; adjust incrementally is not
        # worth it for a lab: the relay never sees fragmented resip traffic (MTU 1400).
        pass
    else:
        l4[csum_at : csum_at + 2] = b"\0\0"
        pseudo = bytes(buf[12:20]) + struct.pack("!BBH", 0, proto, len(l4))
        value = _checksum(pseudo + bytes(l4))
        if proto == PROTO_UDP and value == 0:
            value = 0xFFFF
        l4[csum_at : csum_at + 2] = struct.pack("!H", value)
    buf[ihl:total_len] = l4
    return bytes(buf)

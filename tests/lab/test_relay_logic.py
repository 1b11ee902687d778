"""The lab relay's pure decision logic (``resip.lab.relay``): runs anywhere, no root."""

from __future__ import annotations

import random
import socket
import struct
from ipaddress import IPv4Address

import pytest

from resip.lab.relay import PROTO_UDP, DirectionShaper, Impairment, rewrite_ipv4


def _fates(spec: Impairment, n: int = 2000, seed: int = 1) -> list[list[float]]:
    shaper = DirectionShaper(spec, random.Random(seed))
    return [shaper.decide(1000, PROTO_UDP, now=i * 0.001) for i in range(n)]


def test_loss_is_seeded_and_close_to_the_setting() -> None:
    a, b = _fates(Impairment(loss=0.3)), _fates(Impairment(loss=0.3))
    assert a == b
    dropped = sum(1 for f in a if not f) / len(a)
    assert 0.25 < dropped < 0.35


def test_blackhole_and_udp_block_drop_only_what_they_should() -> None:
    shaper = DirectionShaper(Impairment(block_udp=True), random.Random(1))
    assert shaper.decide(100, PROTO_UDP, 0.0) == []
    assert shaper.decide(100, 6, 0.0) == [0.0]
    shaper.spec = Impairment(blackhole=True)
    assert shaper.decide(100, 6, 0.0) == []
    assert shaper.dropped == {"udp_blocked": 1, "blackhole": 1}


def test_rate_limit_serialises_and_tail_drops() -> None:
    shaper = DirectionShaper(Impairment(rate_bps=8000.0, queue_bytes=3000), random.Random(1))
    times = [shaper.decide(1000, PROTO_UDP, 0.0) for _ in range(5)]
    # 1000 bytes at 8 kbit/s take 1 s each; the queue holds 3000 bytes.
    assert times[:3] == [[1.0], [2.0], [3.0]]
    assert times[3:] == [[], []]


def test_delay_duplicate_reorder() -> None:
    spec = Impairment(delay=0.05, duplicate=1.0, reorder=1.0, reorder_delay=0.01)
    assert DirectionShaper(spec, random.Random(1)).decide(10, 6, 1.0) == [1.06, 1.06]


def test_updated_validates() -> None:
    spec = Impairment().updated({"loss": 0.5, "rate_bps": 1e6, "blackhole": True})
    assert (spec.loss, spec.rate_bps, spec.blackhole) == (0.5, 1e6, True)
    for bad in ({"loss": 2}, {"nope": 1}, {"blackhole": 1}, {"delay": "x"}):
        with pytest.raises(ValueError):
            Impairment().updated(bad)


def _udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    # Let the function compute both checksums from a packet that has a non-zero UDP sum.
    return rewrite_ipv4(ip + udp[:6] + b"\x12\x34" + udp[8:])


def _ones_complement_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_rewrite_fixes_checksums() -> None:
    pkt = _udp_packet("10.200.1.2", "10.200.2.1", 5000, 31266, b"hello")
    out = rewrite_ipv4(pkt, src=IPv4Address("10.200.1.77"), sport=40000)
    assert out[12:16] == socket.inet_aton("10.200.1.77")
    assert struct.unpack("!H", out[20:22])[0] == 40000
    assert _ones_complement_ok(out[:20])
    pseudo = out[12:20] + struct.pack("!BBH", 0, 17, len(out) - 20)
    assert _ones_complement_ok(pseudo + out[20:])
    assert rewrite_ipv4(b"\x60" + bytes(39)) == b"\x60" + bytes(39)  # IPv6: untouched

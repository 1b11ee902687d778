"""Hypothesis strategies for command values, shared by the v2 and legacy v1 codec tests."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from hypothesis import strategies as st

from resip.core.wire import Ack, AckGroup, Host, Proto, Start

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

channels = st.one_of(st.integers(0, 300), st.integers(0, U32))
u64s = st.one_of(st.integers(0, 70000), st.integers(0, U64))
ports = st.integers(1, 65535)
hostnames = st.from_regex(r"[A-Za-z0-9._-]{1,255}", fullmatch=True)
ips = st.one_of(
    st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(0, 2**128 - 1).map(IPv6Address)
)
reasons = st.text(max_size=60)  # at most 240 UTF-8 bytes: never truncated
codes = st.integers(0, 255)
path_data = st.binary(min_size=8, max_size=8)


@st.composite
def canonical_ranges(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    prev_end = 0
    for _ in range(draw(st.integers(1, 8))):
        gap = draw(st.one_of(st.integers(1, 300), st.integers(1, 1 << 40)))
        start = prev_end + gap + (1 if out else 0)
        end = start + draw(st.one_of(st.just(0), st.integers(1, 300), st.integers(1, 1 << 40)))
        if end > U64:
            break
        out.append((start, end))
        prev_end = end
    if not out:
        out.append((U64, U64))
    return tuple(out)


ack_groups = st.builds(AckGroup, channels, canonical_ranges())
acks = st.builds(Ack, u64s, u64s, st.lists(ack_groups, max_size=4).map(tuple))


def starts(hosts: st.SearchStrategy[Host]) -> st.SearchStrategy[Start]:
    """STARTs to any of ``hosts`` (v1 has IP addresses only, v2 host names too)."""
    return st.builds(Start, channels, st.sampled_from(Proto), hosts, ports, st.booleans())

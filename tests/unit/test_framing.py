"""TCP fallback framing: any slicing of the stream gives back the same packets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.errors import WireError
from resip.core.framing import FrameDecoder, encode_frame

packets = st.lists(st.binary(min_size=34, max_size=2000), min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(packets, st.data())
def test_any_split_gives_the_same_packets(items: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in items)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed_untrusted(stream[prev:cut])
        prev = cut
    assert out == items
    assert decoder.buffered == 0


def test_byte_by_byte() -> None:
    packet = bytes(range(100))
    decoder = FrameDecoder()
    frame = encode_frame(packet)
    results = [decoder.feed_untrusted(frame[i : i + 1]) for i in range(len(frame))]
    assert results[:-1] == [[]] * (len(frame) - 1)
    assert results[-1] == [packet]


@pytest.mark.parametrize("length", [0, 1, 33])
def test_impossible_lengths_are_rejected(length: int) -> None:
    with pytest.raises(WireError):
        FrameDecoder().feed_untrusted(length.to_bytes(2, "big") + b"x" * length)


def test_encode_refuses_what_cannot_be_a_packet() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"short")
    with pytest.raises(ValueError):
        encode_frame(b"x" * 65536)

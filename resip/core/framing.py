"""TCP fallback framing (PROTOCOL.md §8): each packet preceded by its length, 2 bytes BE.

Pure and incremental: feed any slicing of the byte stream, get whole packets back.
A length outside 34..65535 means the stream is not ResIP (or is corrupt): the
decoder raises :class:`~resip.core.errors.WireError` and the connection must be closed.
"""

from __future__ import annotations

from resip.core.crypto import MIN_DATAGRAM
from resip.core.errors import WireError

#: Bytes of the length prefix.
PREFIX = 2
#: Largest frame: what the 2-byte prefix can express.
MAX_FRAME = 0xFFFF


def encode_frame(packet: bytes) -> bytes:
    """The framed form of one packet."""
    if not MIN_DATAGRAM <= len(packet) <= MAX_FRAME:
        raise ValueError(f"packet of {len(packet)} bytes cannot be framed")
    return len(packet).to_bytes(PREFIX, "big") + packet


class FrameDecoder:
    """Incremental decoder: ``feed_untrusted(data)`` returns the packets completed by ``data``."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their frame."""
        return len(self._buffer)

    def feed_untrusted(self, data: bytes) -> list[bytes]:
        """Add bytes from the stream; raises WireError on an impossible length."""
        buf = self._buffer
        buf += data
        packets: list[bytes] = []
        offset = 0
        while len(buf) - offset >= PREFIX:
            length = int.from_bytes(buf[offset : offset + PREFIX], "big")
            if length < MIN_DATAGRAM:
                raise WireError(f"TCP frame of {length} bytes is too short to be a packet")
            end = offset + PREFIX + length
            if end > len(buf):
                break
            packets.append(bytes(buf[offset + PREFIX : end]))
            offset = end
        del buf[:offset]
        return packets

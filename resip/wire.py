"""Pure codec for ResIP's inner records and command-channel messages (docs/PROTOCOL.md).

No state, no time, no I/O. Every function that reads bytes from the network ends
in ``_untrusted`` and raises only :class:`~resip.errors.WireError`.
"""

from __future__ import annotations

from resip.errors import WireError

_BITS_LIMITS = tuple(1 << (8 * n) for n in range(1, 8))


def int_bits(value: int) -> int:
    """Size selector of a packed integer: its byte length minus one (0..7)."""
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"packed integers are 0..2^64-1, not {value}")
    for bits, limit in enumerate(_BITS_LIMITS):
        if value < limit:
            return bits
    return 7


def pack_int(value: int) -> bytes:
    """Minimal big-endian bytes of ``value`` (``pack_int(0) == b"\\x00"``)."""
    return value.to_bytes(int_bits(value) + 1, "big")


def unpack_int_untrusted(buf: bytes, offset: int, size: int, *, strict: bool = True) -> int:
    """Read a packed integer of ``size`` bytes at ``offset``.

    ``strict`` (v2) rejects overlong encodings: more than one byte with a leading zero.
    """
    end = offset + size
    if size < 1 or end > len(buf):
        raise WireError("truncated packed integer")
    if strict and size > 1 and buf[offset] == 0:
        raise WireError("overlong packed integer")
    return int.from_bytes(buf[offset:end], "big")

"""Packed integers and field limits of the v2 wire (docs/PROTOCOL.md §1).

A packed integer is the minimal big-endian encoding of a value, 1 to 8 bytes; its
length travels separately as a *size selector* (byte length minus one) in a flags
or sizes byte. Invariants:

- :func:`pack_int` and :func:`int_bits` always give the minimal form, so every
  encoder built on them is canonical.
- :func:`unpack_int_untrusted` refuses overlong forms (more than one byte with a
  leading zero) and truncation with :class:`~resip.core.errors.WireError`, and raises
  nothing else: whatever v2 accepts re-encodes to the same bytes.
- The ``*_bytes`` helpers raise plain :class:`ValueError` for a value the field
  cannot carry: a local bug, never a peer's fault.
"""

from __future__ import annotations

from resip.core.errors import WireError

_BITS_LIMITS = tuple(1 << (8 * n) for n in range(1, 8))

# Field limits: a 2-bit size selector allows 1-4 bytes, a 3-bit one 1-8 bytes.
MAX_CHANNEL = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1
MAX_RECORD_DATA = 0xFFFF
MAX_REASON = 255
PATH_DATA_SIZE = 8


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


def unpack_int_untrusted(buf: bytes, offset: int, size: int) -> int:
    """Read a packed integer of ``size`` bytes at ``offset``; overlong forms are malformed."""
    end = offset + size
    if size < 1 or end > len(buf):
        raise WireError("truncated packed integer")
    if size > 1 and buf[offset] == 0:
        raise WireError("overlong packed integer")
    return int.from_bytes(buf[offset:end], "big")


def check_range(name: str, value: int, hi: int, lo: int = 0) -> None:
    """``ValueError`` unless ``lo <= value <= hi`` (encoders: the caller's mistake)."""
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo}..{hi}, not {value}")


def chan_bytes(channel: int) -> tuple[int, bytes]:
    """Size selector and packed bytes of a channel id (1-4 bytes)."""
    check_range("channel", channel, MAX_CHANNEL)
    cb = int_bits(channel)
    return cb, channel.to_bytes(cb + 1, "big")


def u64_bytes(name: str, value: int) -> tuple[int, bytes]:
    """Size selector and packed bytes of a 64-bit field named ``name``."""
    check_range(name, value, MAX_U64)
    vb = int_bits(value)
    return vb, value.to_bytes(vb + 1, "big")


def byte_at(data: bytes, o: int) -> int:
    """``data[o]``, or :class:`WireError` when a command ends before it."""
    if o >= len(data):
        raise WireError("truncated command")
    return data[o]

"""Records and the v2 inner plaintext (docs/PROTOCOL.md §4).

An inner plaintext is ``records_len (2 bytes) || records || padding``; a record is
``flags || channel || pnum || length (2 bytes) || data``. Invariants:

- :func:`parse_inner_untrusted` raises only :class:`~resip.core.errors.WireError`:
  truncation, overlong channel or pnum, a record overrunning ``records_len``, a
  direction bit other than the packet's, and pnum 0 outside channel 0 or with
  the fragment bit are all malformed. Padding after ``records_len`` is ignored
  whatever its value.
- :func:`encode_record` accepts exactly what the parser accepts and raises plain
  :class:`ValueError` otherwise (a local bug).
- The parser is on the per-packet hot path: it reads the flags through one table
  lookup and checks bounds once per record header (measured by
  ``scripts/bench_codec.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resip.core.errors import WireError
from resip.core.wire.ints import MAX_CHANNEL, MAX_RECORD_DATA, MAX_U64, check_range, int_bits

_F_SERVER = 0x80
_F_COMPRESSED = 0x40
_F_FRAGMENT = 0x20

INNER_PREFIX = 2
"""Bytes before the first record of an inner plaintext (``records_len``)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record of an inner plaintext: a fragment of a message on one channel.

    ``pnum`` 0 marks an unordered record, allowed only on channel 0 and without
    ``fragment``. ``compressed`` on the last record of a message says the
    concatenated message is a compressed frame.
    """

    channel: int
    pnum: int
    data: bytes
    from_server: bool
    compressed: bool = False
    fragment: bool = False


def record_overhead(channel: int, pnum: int) -> int:
    """Encoded size of a record's header: flags, channel, pnum and the 2-byte length."""
    return 5 + int_bits(channel) + int_bits(pnum)


def encode_record(rec: Record) -> bytes:
    """Encode one record; ``ValueError`` if a field does not fit or breaks the pnum-0 rule."""
    channel, pnum, data = rec.channel, rec.pnum, rec.data
    check_range("channel", channel, MAX_CHANNEL)
    check_range("pnum", pnum, MAX_U64)
    if len(data) > MAX_RECORD_DATA:
        raise ValueError(f"record data is at most {MAX_RECORD_DATA} bytes, not {len(data)}")
    if pnum == 0 and (channel != 0 or rec.fragment):
        raise ValueError("pnum 0 (unordered) is only for channel 0 without the fragment bit")
    cb = int_bits(channel)
    pb = int_bits(pnum)
    flags = (cb << 3) | pb
    if rec.from_server:
        flags |= _F_SERVER
    if rec.compressed:
        flags |= _F_COMPRESSED
    if rec.fragment:
        flags |= _F_FRAGMENT
    return b"".join(
        (
            bytes((flags,)),
            channel.to_bytes(cb + 1, "big"),
            pnum.to_bytes(pb + 1, "big"),
            len(data).to_bytes(2, "big"),
            data,
        )
    )


def encode_inner(records: Sequence[bytes], *, pad_to: int = 0) -> bytes:
    """Build an inner plaintext from already encoded records.

    The result is ``records_len || records`` followed by zero bytes up to
    ``pad_to`` total bytes; when the records alone are longer, nothing is added
    (the caller sizes its packets).
    """
    body = b"".join(records)
    if len(body) > 0xFFFF:
        raise ValueError(f"records total at most 65535 bytes, not {len(body)}")
    out = len(body).to_bytes(2, "big") + body
    missing = pad_to - len(out)
    if missing > 0:
        out += bytes(missing)
    return out


# flags byte -> (channel size, pnum size, from_server, compressed, fragment), so the hot
# path does one lookup instead of five bit operations.
_FLAG_INFO = tuple(
    (
        ((f >> 3) & 3) + 1,
        (f & 7) + 1,
        bool(f & _F_SERVER),
        bool(f & _F_COMPRESSED),
        bool(f & _F_FRAGMENT),
    )
    for f in range(256)
)


def _parse_record(buf: bytes, offset: int, end: int) -> tuple[Record, int]:
    # Hot path: one bounds check for the whole header, then direct indexing.
    if offset < 0 or offset >= end:
        raise WireError("truncated record header")
    cb, pb, from_server, compressed, fragment = _FLAG_INFO[buf[offset]]
    o = offset + 1
    if o + cb + pb + 2 > end:
        raise WireError("truncated record header")
    if cb == 1:
        channel = buf[o]
    else:
        if buf[o] == 0:
            raise WireError("overlong channel id")
        channel = int.from_bytes(buf[o : o + cb], "big")
    o += cb
    if pb == 1:
        pnum = buf[o]
    elif pb == 2:
        if buf[o] == 0:
            raise WireError("overlong packet number")
        pnum = (buf[o] << 8) | buf[o + 1]
    else:
        if buf[o] == 0:
            raise WireError("overlong packet number")
        pnum = int.from_bytes(buf[o : o + pb], "big")
    o += pb + 2
    data_end = o + ((buf[o - 2] << 8) | buf[o - 1])
    if data_end > end:
        raise WireError("record data overruns the packet")
    if pnum == 0 and (channel != 0 or fragment):
        raise WireError("unordered record outside channel 0 or with the fragment bit")
    return Record(channel, pnum, buf[o:data_end], from_server, compressed, fragment), data_end


def parse_inner_untrusted(plaintext: bytes, *, from_server: bool) -> list[Record]:
    """Parse an inner plaintext into its records; padding after ``records_len`` is ignored.

    Every record's direction bit must equal ``from_server`` (the packet's
    direction), and the records must fill ``records_len`` exactly.
    """
    n = len(plaintext)
    if n < INNER_PREFIX:
        raise WireError("inner plaintext shorter than its length field")
    end = INNER_PREFIX + ((plaintext[0] << 8) | plaintext[1])
    if end > n:
        raise WireError("records_len exceeds the plaintext")
    expected = _F_SERVER if from_server else 0
    records: list[Record] = []
    o = INNER_PREFIX
    while o < end:
        if (plaintext[o] & _F_SERVER) != expected:
            raise WireError("record direction bit does not match the packet")
        rec, o = _parse_record(plaintext, o, end)
        records.append(rec)
    return records

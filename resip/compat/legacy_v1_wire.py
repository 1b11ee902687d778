"""Legacy v1 records and command messages: the PHP prototype's encodings (PROTOCOL.md §9).

The values are v2's (:class:`~resip.core.wire.Record` and the command dataclasses of
:mod:`resip.core.wire`), so a session layer handles both versions alike; every byte of
the v1 encodings is produced and read here. Contract:

- **As tolerant as the prototype, and no more crashable.** Reserved bits are
  ignored, overlong packed integers and trailing bytes are accepted, but
  truncation and impossible values are :class:`~resip.core.errors.WireError`, and
  ``*_untrusted`` functions raise nothing else whatever the bytes.
- **v1 has fewer fields.** The encoder drops what v1 cannot carry (an ACK's
  ``largest``, ``delay_us`` and packet ranges, a KEEPALIVE's ``response``, a
  TERMINATE's code and reason) and the parser returns their defaults (0, ``()``,
  ``False``, 0 and ``""``). CREDIT, CLOSE, PATH_CHALLENGE, PATH_RESPONSE and START
  host names do not exist in v1: encoding them is a ``ValueError``, receiving them
  a ``WireError``.
- **One canonical shape out.** v1 ACK ranges may come unordered, touching,
  overlapping or under a repeated channel selector (the prototype's split bug);
  the parser returns them sorted and merged, as v2 would have sent them.
- **Frozen.** The layouts duplicate v2's where they agree today on purpose: a later
  change to v2's encodings must not move a v1 byte.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from resip.core.errors import WireError
from resip.core.wire import (
    Ack,
    AckGroup,
    AddrType,
    Cmd,
    Command,
    Host,
    KeepAlive,
    Proto,
    Record,
    Start,
    Started,
    Stop,
    Terminate,
)
from resip.core.wire.ints import MAX_U64, byte_at, chan_bytes, check_range, int_bits, u64_bytes

__all__ = [
    "encode_command_v1",
    "encode_record_v1",
    "parse_command_v1_untrusted",
    "parse_record_v1_untrusted",
    "unpack_int_v1_untrusted",
]

_F_SERVER = 0x80
_F_COMPRESSED = 0x40
_F_FRAGMENT = 0x20
_MAX_CHANNEL = (1 << 32) - 1  # the flags byte has a 2-bit channel size field: 1..4 bytes
_MAX_RECORD_DATA = 0xFFFF
_PROTOS = {6: Proto.TCP, 17: Proto.UDP}


def unpack_int_v1_untrusted(buf: bytes, offset: int, size: int) -> int:
    """Read a ``size``-byte big-endian integer at ``offset``; overlong forms are accepted."""
    end = offset + size
    if size < 1 or end > len(buf):
        raise WireError("truncated packed integer")
    return int.from_bytes(buf[offset:end], "big")


# ---------------------------------------------------------------------------
# Records


def encode_record_v1(rec: Record) -> bytes:
    """Encode one record; ``ValueError`` if a field does not fit or breaks the pnum-0 rule."""
    channel, pnum, data = rec.channel, rec.pnum, rec.data
    check_range("channel", channel, _MAX_CHANNEL)
    check_range("pnum", pnum, MAX_U64)
    if len(data) > _MAX_RECORD_DATA:
        raise ValueError(f"record data is at most {_MAX_RECORD_DATA} bytes, not {len(data)}")
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


def parse_record_v1_untrusted(buf: bytes, offset: int) -> tuple[Record, int]:
    """Parse one record (flags, channel, pnum, length, data) at ``offset``.

    Returns the record and the offset just after its data. Overlong packed
    integers are accepted; truncation and pnum 0 outside channel 0 or with the
    fragment bit are not. The direction bit is returned in ``from_server``, not
    checked: the caller knows which direction it expects.
    """
    end = len(buf)
    if offset < 0 or offset >= end:
        raise WireError("truncated record header")
    flags = buf[offset]
    cb = ((flags >> 3) & 3) + 1
    pb = (flags & 7) + 1
    o = offset + 1
    if o + cb + pb + 2 > end:
        raise WireError("truncated record header")
    channel = int.from_bytes(buf[o : o + cb], "big")
    o += cb
    pnum = int.from_bytes(buf[o : o + pb], "big")
    o += pb + 2
    data_end = o + int.from_bytes(buf[o - 2 : o], "big")
    if data_end > end:
        raise WireError("record data overruns the packet")
    fragment = bool(flags & _F_FRAGMENT)
    if pnum == 0 and (channel != 0 or fragment):
        raise WireError("unordered record outside channel 0 or with the fragment bit")
    from_server = bool(flags & _F_SERVER)
    compressed = bool(flags & _F_COMPRESSED)
    return Record(channel, pnum, buf[o:data_end], from_server, compressed, fragment), data_end


# ---------------------------------------------------------------------------
# Commands: encoding


def _encode_start(cmd: Start) -> bytes:
    cb, chan = chan_bytes(cmd.channel)
    if cmd.proto not in _PROTOS:
        raise ValueError(f"proto must be TCP (6) or UDP (17), not {cmd.proto}")
    check_range("port", cmd.port, 65535, 1)
    host = cmd.host
    if isinstance(host, IPv4Address):
        atype, addr = AddrType.IPV4, host.packed
    elif isinstance(host, IPv6Address):
        atype, addr = AddrType.IPV6, host.packed
    else:
        raise ValueError("v1 START carries only IP addresses, not host names")
    pb = int_bits(cmd.port)
    # Bit 6 ("fragmentation supported") is always 1: v1 servers ignore a START without it.
    flags = 0x40 | (cb << 4) | (atype << 2) | pb
    if cmd.compress:
        flags |= 0x80
    return b"".join(
        (
            bytes((Cmd.START, flags)),
            chan,
            bytes((cmd.proto,)),
            addr,
            cmd.port.to_bytes(pb + 1, "big"),
        )
    )


def _encode_ack(cmd: Ack) -> bytes:
    # v1 has no S byte, largest, delay or packet ranges: only the groups.
    parts: list[bytes] = [bytes((Cmd.ACK,))]
    for group in cmd.groups:
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
    return b"".join(parts)


def encode_command_v1(cmd: Command) -> bytes:
    """Encode a channel-0 message as a v1 peer expects it.

    Raises ``ValueError`` for a field the wire cannot carry, and for commands or
    fields that do not exist in v1 (CREDIT, CLOSE, PATH_*, host names).
    """
    if isinstance(cmd, Ack):
        return _encode_ack(cmd)
    if isinstance(cmd, Start):
        return _encode_start(cmd)
    if isinstance(cmd, Started):
        cb, chan = chan_bytes(cmd.channel)
        return bytes((Cmd.START, cb)) + chan
    if isinstance(cmd, Stop):
        cb, chan = chan_bytes(cmd.channel)
        lb, last = u64_bytes("last", cmd.last)
        return bytes((Cmd.STOP, (cb << 3) | lb)) + chan + last
    if isinstance(cmd, KeepAlive):
        return bytes((Cmd.KEEPALIVE,))
    if isinstance(cmd, Terminate):
        cb, chan = chan_bytes(cmd.channel)
        return bytes((Cmd.TERMINATE, cb)) + chan
    raise ValueError(f"{type(cmd).__name__} does not exist in protocol v1")


# ---------------------------------------------------------------------------
# Commands: parsing


def _parse_host(data: bytes, o: int, atype: int) -> tuple[Host, int]:
    if atype == AddrType.IPV4:
        if o + 4 > len(data):
            raise WireError("truncated IPv4 address")
        return IPv4Address(data[o : o + 4]), o + 4
    if atype == AddrType.IPV6:
        if o + 16 > len(data):
            raise WireError("truncated IPv6 address")
        return IPv6Address(data[o : o + 16]), o + 16
    raise WireError(f"START address type {atype} not supported")


def _parse_start(data: bytes) -> Start:
    # Bit 6 ("fragmentation supported") is not required: the prototype ignored it.
    flags = byte_at(data, 1)
    cb = ((flags >> 4) & 3) + 1
    channel = unpack_int_v1_untrusted(data, 2, cb)
    o = 2 + cb
    proto = _PROTOS.get(byte_at(data, o))
    if proto is None:
        raise WireError("START proto is neither TCP nor UDP")
    host, o = _parse_host(data, o + 1, (flags >> 2) & 3)
    port = unpack_int_v1_untrusted(data, o, (flags & 3) + 1)
    if not 1 <= port <= 65535:
        raise WireError("START port outside 1..65535")
    return Start(channel, proto, host, port, bool(flags & 0x80))


def _parse_ack(data: bytes) -> Ack:
    n = len(data)
    groups: list[AckGroup] = []
    channel = -1
    ranges: list[tuple[int, int]] = []
    o = 1
    while o < n:
        b = data[o]
        o += 1
        if not b & 0x80:
            if channel >= 0:
                _flush_group(groups, channel, ranges)
            size = (b & 3) + 1
            channel = unpack_int_v1_untrusted(data, o, size)
            o += size
            ranges = []
            continue
        if channel < 0:
            raise WireError("ACK item before any channel selector")
        size = ((b >> 3) & 7) + 1
        start = unpack_int_v1_untrusted(data, o, size)
        o += size
        end = start
        if b & 0x40:
            size = (b & 7) + 1
            end = unpack_int_v1_untrusted(data, o, size)
            o += size
            if end < start:
                raise WireError("ACK range end not above its start")
        ranges.append((start, end))
    if channel >= 0:
        _flush_group(groups, channel, ranges)
    return Ack(0, 0, tuple(groups))


def _flush_group(groups: list[AckGroup], channel: int, ranges: list[tuple[int, int]]) -> None:
    # v1 peers may repeat a selector (the prototype's split bug) or send ranges in
    # any order; normalising here gives consumers one canonical shape.
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        lo = max(start, 1)
        if end < lo:
            continue
        if merged and lo <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((lo, end))
    if merged:
        groups.append(AckGroup(channel, tuple(merged)))


def _sized_channel(data: bytes, chan_shift: int) -> tuple[int, int, int]:
    # Layout shared by STARTED, STOP and TERMINATE: a size byte, then the channel.
    s = byte_at(data, 1)
    cb = ((s >> chan_shift) & 3) + 1
    return s, unpack_int_v1_untrusted(data, 2, cb), 2 + cb


def parse_command_v1_untrusted(data: bytes, *, from_server: bool) -> Command:
    """Parse one v1 channel-0 message sent by the server (``from_server``) or the client.

    Command 1 is START from the client and STARTED from the server. Tolerates what
    the prototype tolerated and returns ACK ranges sorted and merged. Raises only
    :class:`WireError` on bad bytes.
    """
    if not data:
        raise WireError("empty command")
    cmd = data[0] & 0x1F  # the high 3 bits are reserved and ignored, as in the prototype
    if cmd == Cmd.ACK:
        return _parse_ack(data)
    if cmd == Cmd.START:
        if not from_server:
            return _parse_start(data)
        return Started(_sized_channel(data, 0)[1])
    if cmd == Cmd.STOP:
        s, channel, o = _sized_channel(data, 3)
        return Stop(channel, unpack_int_v1_untrusted(data, o, (s & 7) + 1))
    if cmd == Cmd.KEEPALIVE:
        return KeepAlive()
    if cmd == Cmd.TERMINATE:
        if len(data) < 2:
            # The prototype's client sends a bare 05 (seed bug 14).
            raise WireError("malformed terminate")
        return Terminate(_sized_channel(data, 0)[1])
    raise WireError(f"unknown v1 command {cmd}")

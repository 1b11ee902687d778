"""Pure codec for ResIP's inner records and command-channel messages (docs/PROTOCOL.md).

No state, no time, no I/O. Every function that reads bytes from the network ends
in ``_untrusted`` and raises only :class:`~resip.errors.WireError`, whatever the
input. Encoders raise plain :class:`ValueError` when the *caller* hands them a
value the wire cannot carry (a local bug, never a peer's fault).

Contents, by PROTOCOL.md section:

- §1 packed integers: :func:`int_bits`, :func:`pack_int`, :func:`unpack_int_untrusted`.
- §4 inner plaintext: :class:`Record`, :func:`encode_record`, :func:`encode_inner`,
  :func:`parse_inner_untrusted`, and :func:`parse_record_v1_fields_untrusted`, the
  single-record parser shared with the legacy v1 codec.
- §5 and §9 command messages: one frozen dataclass per command,
  :func:`encode_command` and :func:`parse_command_untrusted`, both taking
  ``version`` (2 = this protocol, 1 = the prototype's encodings).

Version 2 parsing is strict: reserved bits, overlong packed integers, trailing
bytes and non-canonical ACK ranges are all malformed. Version 1 parsing is as
tolerant as the prototype was (reserved bits ignored, overlong integers and
trailing bytes accepted) but still never crashes: truncation is a ``WireError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

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


# Field limits: a 2-bit size selector allows 1-4 bytes, a 3-bit one 1-8 bytes.
MAX_CHANNEL = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1
MAX_RECORD_DATA = 0xFFFF
MAX_REASON = 255
MAX_ACK_ITEMS = 64
#: Packet-counter ranges one ACK may carry (the count is one byte).
MAX_PACKET_RANGES = 255
PATH_DATA_SIZE = 8


def _check_range(name: str, value: int, hi: int, lo: int = 0) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo}..{hi}, not {value}")


# ---------------------------------------------------------------------------
# Records (PROTOCOL.md §4)

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
    _check_range("channel", channel, MAX_CHANNEL)
    _check_range("pnum", pnum, MAX_U64)
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


def _parse_record(buf: bytes, offset: int, end: int, strict: bool) -> tuple[Record, int]:
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
        if strict and buf[o] == 0:
            raise WireError("overlong channel id")
        channel = int.from_bytes(buf[o : o + cb], "big")
    o += cb
    if pb == 1:
        pnum = buf[o]
    elif pb == 2:
        if strict and buf[o] == 0:
            raise WireError("overlong packet number")
        pnum = (buf[o] << 8) | buf[o + 1]
    else:
        if strict and buf[o] == 0:
            raise WireError("overlong packet number")
        pnum = int.from_bytes(buf[o : o + pb], "big")
    o += pb + 2
    data_end = o + ((buf[o - 2] << 8) | buf[o - 1])
    if data_end > end:
        raise WireError("record data overruns the packet")
    if pnum == 0 and (channel != 0 or fragment):
        raise WireError("unordered record outside channel 0 or with the fragment bit")
    return Record(channel, pnum, buf[o:data_end], from_server, compressed, fragment), data_end


def parse_record_v1_fields_untrusted(
    buf: bytes, offset: int, *, strict: bool
) -> tuple[Record, int]:
    """Parse one record (flags, channel, pnum, length, data) at ``offset``.

    Returns the record and the offset just after its data. ``strict`` (v2)
    rejects overlong packed integers; without it (v1) they are accepted. Both
    modes reject truncation and pnum 0 outside channel 0 or with the fragment
    bit. The direction bit is returned in ``from_server``, not checked: the
    caller knows which direction it expects.
    """
    return _parse_record(buf, offset, len(buf), strict)


def parse_inner_untrusted(plaintext: bytes, *, from_server: bool) -> list[Record]:
    """Parse a v2 inner plaintext into its records; padding after ``records_len`` is ignored.

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
        rec, o = _parse_record(plaintext, o, end, True)
        records.append(rec)
    return records


# ---------------------------------------------------------------------------
# Command-channel messages (PROTOCOL.md §5, v1 encodings §9)


class Cmd(IntEnum):
    """Command numbers: the low 5 bits of a channel-0 message's first byte."""

    START = 1  # START from the client, STARTED from the server
    STOP = 2
    ACK = 3
    KEEPALIVE = 4
    TERMINATE = 5
    CREDIT = 6
    CLOSE = 7
    PATH_CHALLENGE = 8
    PATH_RESPONSE = 9


class Proto(IntEnum):
    """Transport of a channel's target (IP protocol numbers)."""

    TCP = 6
    UDP = 17


class AddrType(IntEnum):
    """Address type field of START."""

    IPV4 = 0
    IPV6 = 1
    HOSTNAME = 2


Host: TypeAlias = IPv4Address | IPv6Address | str
"""A START target: an IP address, or a host name the server resolves."""

_HOSTNAME_RE = re.compile(rb"[A-Za-z0-9._-]{1,255}")
_PROTOS = {6: Proto.TCP, 17: Proto.UDP}


@dataclass(frozen=True, slots=True)
class Start:
    """Client to server: open ``channel`` to ``host``:``port`` over ``proto``.

    A ``str`` host is sent as a host name (type 2) even if it looks like an IP
    literal: converting is the caller's decision.
    """

    channel: int
    proto: Proto
    host: Host
    port: int
    compress: bool = False

    @property
    def addr_type(self) -> AddrType:
        """The address type this START is encoded with."""
        if isinstance(self.host, IPv4Address):
            return AddrType.IPV4
        if isinstance(self.host, IPv6Address):
            return AddrType.IPV6
        return AddrType.HOSTNAME


@dataclass(frozen=True, slots=True)
class Started:
    """Server to client: the target connection of ``channel`` is up."""

    channel: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Half-close: the sender sends no more data on ``channel``; ``last`` is its highest pnum."""

    channel: int
    last: int


@dataclass(frozen=True, slots=True)
class AckGroup:
    """Acknowledged pnums of one channel as inclusive ``(start, end)`` ranges.

    Canonical form (required by the v2 encoder and parser): pnums >= 1, ranges
    ascending, neither touching nor overlapping; ``start == end`` for a single number.
    """

    channel: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledgement of ordered records plus the RTT sample ``largest``/``delay_us``.

    v1 has no ``largest``/``delay_us``: the v1 encoder ignores them and the v1
    parser returns 0 for both.
    """

    largest: int
    delay_us: int
    groups: tuple[AckGroup, ...]
    #: v2: received *packet counters* as ascending inclusive ``(start, end)`` ranges,
    #: none above ``largest``. They make loss detection exact however many channels
    #: share the link (record ranges alone must be cut when hundreds are active).
    packets: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Liveness probe (``response=False``, ack-eliciting) or its answer.

    v1 has no kind byte: the v1 parser always returns ``response=False``.
    """

    response: bool = False


@dataclass(frozen=True, slots=True)
class Terminate:
    """Abort ``channel`` in both directions; ``code`` follows SOCKS5 reply codes.

    The encoder truncates ``reason`` to 255 UTF-8 bytes at a character boundary.
    v1 carries neither code nor reason (parsed as 0 and "").
    """

    channel: int
    code: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Credit:
    """The sender accepts records up to ``max_pnum`` on ``channel`` (v2 only)."""

    channel: int
    max_pnum: int


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over (v2 only); ``reason`` truncated like :class:`Terminate`'s."""

    code: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PathChallenge:
    """Server to client: 8 random bytes to echo from a new address (v2 only)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PathResponse:
    """Client to server: the echoed challenge bytes (v2 only)."""

    data: bytes


Command: TypeAlias = (
    Start
    | Started
    | Stop
    | Ack
    | KeepAlive
    | Terminate
    | Credit
    | Close
    | PathChallenge
    | PathResponse
)


# --- encoding ---------------------------------------------------------------


def _check_version(version: int) -> None:
    if version not in (1, 2):
        raise ValueError(f"protocol version must be 1 or 2, not {version}")


def _chan_bytes(channel: int) -> tuple[int, bytes]:
    _check_range("channel", channel, MAX_CHANNEL)
    cb = int_bits(channel)
    return cb, channel.to_bytes(cb + 1, "big")


def _u64_bytes(name: str, value: int) -> tuple[int, bytes]:
    _check_range(name, value, MAX_U64)
    vb = int_bits(value)
    return vb, value.to_bytes(vb + 1, "big")


def _encode_reason(reason: str) -> bytes:
    raw = reason.encode("utf-8")
    if len(raw) > MAX_REASON:
        # Dropping the incomplete tail sequence cuts at a character boundary.
        raw = raw[:MAX_REASON].decode("utf-8", "ignore").encode("utf-8")
    return bytes((len(raw),)) + raw


def _encode_hostname(name: str) -> bytes:
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"host name must be ASCII (IDNA-encode it): {name!r}") from None
    if _HOSTNAME_RE.fullmatch(raw) is None:
        raise ValueError(f"host name must be 1..255 of [A-Za-z0-9._-]: {name!r}")
    return bytes((len(raw),)) + raw


def _encode_start(cmd: Start, v1: bool) -> bytes:
    cb, chan = _chan_bytes(cmd.channel)
    if cmd.proto not in _PROTOS:
        raise ValueError(f"proto must be TCP (6) or UDP (17), not {cmd.proto}")
    _check_range("port", cmd.port, 65535, 1)
    host = cmd.host
    if isinstance(host, IPv4Address):
        atype, addr = AddrType.IPV4, host.packed
    elif isinstance(host, IPv6Address):
        atype, addr = AddrType.IPV6, host.packed
    else:
        if v1:
            raise ValueError("v1 START carries only IP addresses, not host names")
        atype, addr = AddrType.HOSTNAME, _encode_hostname(host)
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


def _encode_ack(cmd: Ack, v1: bool) -> bytes:
    parts: list[bytes] = [bytes((Cmd.ACK,))]
    if not v1:
        lb, largest = _u64_bytes("largest", cmd.largest)
        db, delay = _u64_bytes("delay_us", cmd.delay_us)
        parts += (bytes(((db << 3) | lb,)), largest, delay)
        parts.append(_encode_packet_ranges(cmd.largest, cmd.packets))
    for group in cmd.groups:
        cb, chan = _chan_bytes(group.channel)
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


def _parse_packet_ranges(
    data: bytes, o: int, largest: int
) -> tuple[tuple[tuple[int, int], ...], int]:
    count = _byte(data, o)
    o += 1
    ranges: list[tuple[int, int]] = []
    prev_start = -1
    for _ in range(count):
        sizes = _byte(data, o)
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


def _encode_path(cmd_byte: int, data: bytes) -> bytes:
    if len(data) != PATH_DATA_SIZE:
        raise ValueError(f"path challenge data is {PATH_DATA_SIZE} bytes, not {len(data)}")
    return bytes((cmd_byte,)) + data


def encode_command(cmd: Command, *, version: int = 2) -> bytes:
    """Encode a channel-0 message for protocol ``version`` (2, or 1 for legacy peers).

    Raises ``ValueError`` for a field the wire cannot carry, and for commands or
    fields that do not exist in v1 (CREDIT, CLOSE, PATH_*, host names).
    """
    _check_version(version)
    v1 = version == 1
    if isinstance(cmd, Ack):
        return _encode_ack(cmd, v1)
    if isinstance(cmd, Start):
        return _encode_start(cmd, v1)
    if isinstance(cmd, Started):
        cb, chan = _chan_bytes(cmd.channel)
        return bytes((Cmd.START, cb)) + chan
    if isinstance(cmd, Stop):
        cb, chan = _chan_bytes(cmd.channel)
        lb, last = _u64_bytes("last", cmd.last)
        return bytes((Cmd.STOP, (cb << 3) | lb)) + chan + last
    if isinstance(cmd, KeepAlive):
        if v1:
            return bytes((Cmd.KEEPALIVE,))
        return bytes((Cmd.KEEPALIVE, 1 if cmd.response else 0))
    if isinstance(cmd, Terminate):
        cb, chan = _chan_bytes(cmd.channel)
        head = bytes((Cmd.TERMINATE, cb)) + chan
        if v1:
            return head
        _check_range("code", cmd.code, 255)
        return head + bytes((cmd.code,)) + _encode_reason(cmd.reason)
    if v1:
        raise ValueError(f"{type(cmd).__name__} does not exist in protocol v1")
    if isinstance(cmd, Credit):
        cb, chan = _chan_bytes(cmd.channel)
        mb, max_pnum = _u64_bytes("max_pnum", cmd.max_pnum)
        return bytes((Cmd.CREDIT, (cb << 3) | mb)) + chan + max_pnum
    if isinstance(cmd, Close):
        _check_range("code", cmd.code, 255)
        return bytes((Cmd.CLOSE, cmd.code)) + _encode_reason(cmd.reason)
    if isinstance(cmd, PathChallenge):
        return _encode_path(Cmd.PATH_CHALLENGE, cmd.data)
    return _encode_path(Cmd.PATH_RESPONSE, cmd.data)


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


def _byte(data: bytes, o: int) -> int:
    if o >= len(data):
        raise WireError("truncated command")
    return data[o]


def _parse_reason(data: bytes, o: int) -> tuple[str, int]:
    n = _byte(data, o)
    end = o + 1 + n
    if end > len(data):
        raise WireError("truncated reason")
    try:
        return data[o + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise WireError("reason is not UTF-8") from None


def _parse_start(data: bytes, strict: bool) -> tuple[Start, int]:
    flags = _byte(data, 1)
    if strict and not flags & 0x40:
        raise WireError("START without the required bit 6")
    cb = ((flags >> 4) & 3) + 1
    channel = unpack_int_untrusted(data, 2, cb, strict=strict)
    o = 2 + cb
    proto = _PROTOS.get(_byte(data, o))
    if proto is None:
        raise WireError("START proto is neither TCP nor UDP")
    o += 1
    atype = (flags >> 2) & 3
    host: Host
    if atype == AddrType.IPV4:
        if o + 4 > len(data):
            raise WireError("truncated IPv4 address")
        host = IPv4Address(data[o : o + 4])
        o += 4
    elif atype == AddrType.IPV6:
        if o + 16 > len(data):
            raise WireError("truncated IPv6 address")
        host = IPv6Address(data[o : o + 16])
        o += 16
    elif atype == AddrType.HOSTNAME and strict:
        n = _byte(data, o)
        raw = data[o + 1 : o + 1 + n]
        if len(raw) != n:
            raise WireError("truncated host name")
        if _HOSTNAME_RE.fullmatch(raw) is None:
            raise WireError("malformed host name")
        host = raw.decode("ascii")
        o += 1 + n
    else:
        raise WireError(f"START address type {atype} not supported")
    pb = (flags & 3) + 1
    port = unpack_int_untrusted(data, o, pb, strict=strict)
    if not 1 <= port <= 65535:
        raise WireError("START port outside 1..65535")
    return Start(channel, proto, host, port, bool(flags & 0x80)), o + pb


def _parse_ack(data: bytes, strict: bool) -> tuple[Ack, int]:
    n = len(data)
    if strict:
        s = _byte(data, 1)
        if s & 0xC0:
            raise WireError("reserved bits set in ACK")
        lb = (s & 7) + 1
        largest = unpack_int_untrusted(data, 2, lb)
        db = ((s >> 3) & 7) + 1
        delay = unpack_int_untrusted(data, 2 + lb, db)
        packets, o = _parse_packet_ranges(data, 2 + lb + db, largest)
    else:
        largest = delay = 0
        packets = ()
        o = 1
    groups: list[AckGroup] = []
    channel = -1
    ranges: list[tuple[int, int]] = []
    prev_end = 0
    while o < n:
        b = data[o]
        o += 1
        if not b & 0x80:
            if strict and b & 0x7C:
                raise WireError("reserved bits set in ACK channel selector")
            if channel >= 0:
                _flush_group(groups, channel, ranges, strict)
            size = (b & 3) + 1
            channel = unpack_int_untrusted(data, o, size, strict=strict)
            o += size
            ranges = []
            prev_end = 0
            continue
        if channel < 0:
            raise WireError("ACK item before any channel selector")
        size = ((b >> 3) & 7) + 1
        start = unpack_int_untrusted(data, o, size, strict=strict)
        o += size
        if b & 0x40:
            size = (b & 7) + 1
            end = unpack_int_untrusted(data, o, size, strict=strict)
            o += size
            if end < start or (strict and end == start):
                raise WireError("ACK range end not above its start")
        else:
            if strict and b & 7:
                raise WireError("reserved bits set in ACK item")
            end = start
        if strict and (start == 0 or (prev_end and start <= prev_end + 1)):
            raise WireError("ACK ranges not ascending, touching, or acknowledging pnum 0")
        prev_end = end
        ranges.append((start, end))
    if channel >= 0:
        _flush_group(groups, channel, ranges, strict)
    return Ack(largest, delay, tuple(groups), packets), o


def _flush_group(
    groups: list[AckGroup], channel: int, ranges: list[tuple[int, int]], strict: bool
) -> None:
    if strict:
        if not ranges:
            raise WireError("ACK channel selector without items")
        groups.append(AckGroup(channel, tuple(ranges)))
        return
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


def _parse_sized_channel(
    data: bytes, strict: bool, chan_shift: int, reserved: int
) -> tuple[int, int, int]:
    # Layout shared by STARTED, STOP, TERMINATE and CREDIT: a size byte, then the channel.
    s = _byte(data, 1)
    if strict and s & reserved:
        raise WireError("reserved bits set")
    cb = ((s >> chan_shift) & 3) + 1
    channel = unpack_int_untrusted(data, 2, cb, strict=strict)
    return s, channel, 2 + cb


def _parse_one(data: bytes, cmd: int, strict: bool, from_server: bool) -> tuple[Command, int]:
    if cmd == Cmd.ACK:
        return _parse_ack(data, strict)
    if cmd == Cmd.START:
        if not from_server:
            return _parse_start(data, strict)
        _, channel, o = _parse_sized_channel(data, strict, 0, 0xFC)
        return Started(channel), o
    if cmd == Cmd.STOP:
        s, channel, o = _parse_sized_channel(data, strict, 3, 0xE0)
        lb = (s & 7) + 1
        return Stop(channel, unpack_int_untrusted(data, o, lb, strict=strict)), o + lb
    if cmd == Cmd.KEEPALIVE:
        if not strict:
            return KeepAlive(), 1
        kind = _byte(data, 1)
        if kind > 1:
            raise WireError("KEEPALIVE kind is neither request nor response")
        return KeepAlive(kind == 1), 2
    if cmd == Cmd.TERMINATE:
        if len(data) < 2:
            # The prototype's client sends a bare 05 (seed bug 14).
            raise WireError("malformed terminate")
        _, channel, o = _parse_sized_channel(data, strict, 0, 0xFC)
        if not strict:
            return Terminate(channel), o
        code = _byte(data, o)
        reason, o = _parse_reason(data, o + 1)
        return Terminate(channel, code, reason), o
    if not strict:
        raise WireError(f"unknown v1 command {cmd}")
    if cmd == Cmd.CREDIT:
        s, channel, o = _parse_sized_channel(data, strict, 3, 0xE0)
        mb = (s & 7) + 1
        return Credit(channel, unpack_int_untrusted(data, o, mb)), o + mb
    if cmd == Cmd.CLOSE:
        code = _byte(data, 1)
        reason, o = _parse_reason(data, 2)
        return Close(code, reason), o
    if cmd in (Cmd.PATH_CHALLENGE, Cmd.PATH_RESPONSE):
        # Only the server challenges and only the client responds (§5.9).
        if from_server != (cmd == Cmd.PATH_CHALLENGE):
            raise WireError("path validation message in the wrong direction")
        payload = data[1 : 1 + PATH_DATA_SIZE]
        if len(payload) != PATH_DATA_SIZE:
            raise WireError("truncated path validation data")
        if cmd == Cmd.PATH_CHALLENGE:
            return PathChallenge(payload), 1 + PATH_DATA_SIZE
        return PathResponse(payload), 1 + PATH_DATA_SIZE
    raise WireError(f"unknown command {cmd}")


def parse_command_untrusted(data: bytes, *, from_server: bool, version: int = 2) -> Command:
    """Parse one channel-0 message sent by the server (``from_server``) or the client.

    Command 1 is START from the client and STARTED from the server. Version 2
    rejects reserved bits, overlong integers, trailing bytes and non-canonical
    ACKs; version 1 tolerates what the prototype tolerated and returns v1 ACK
    ranges sorted and merged. Raises only :class:`WireError` on bad bytes.
    """
    _check_version(version)
    strict = version == 2
    if not data:
        raise WireError("empty command")
    first = data[0]
    if strict and first & 0xE0:
        raise WireError("reserved bits set in command byte")
    cmd, end = _parse_one(data, first & 0x1F, strict, from_server)
    if strict and end != len(data):
        raise WireError("trailing bytes after command")
    return cmd

"""Command-channel messages of protocol v2 (docs/PROTOCOL.md §5): one frozen dataclass each.

A command is the data of one channel-0 message; its first byte's low 5 bits are
the :class:`~resip.core.wire.enums.Cmd` number, and command 1 is START from the client
and STARTED from the server. Invariants:

- :func:`parse_command_untrusted` raises only :class:`~resip.core.errors.WireError`,
  whatever the bytes. It is strict: reserved bits, overlong packed integers,
  trailing bytes, non-canonical ACKs and path-validation messages in the wrong
  direction are all malformed, so whatever it accepts re-encodes to the same bytes.
- :func:`encode_command` raises plain :class:`ValueError` for a field the wire
  cannot carry (a local bug, never a peer's fault).
- This module knows only v2. The prototype's v1 encodings have their own codec in
  :mod:`resip.compat.legacy_v1_wire`, which reuses these dataclasses as values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from resip.core.errors import WireError
from resip.core.wire.ack import Ack, encode_ack, parse_ack_untrusted
from resip.core.wire.enums import AddrType, Cmd, Proto
from resip.core.wire.ints import (
    MAX_REASON,
    PATH_DATA_SIZE,
    byte_at,
    chan_bytes,
    check_range,
    int_bits,
    u64_bytes,
    unpack_int_untrusted,
)

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
class KeepAlive:
    """Liveness probe (``response=False``, ack-eliciting) or its answer."""

    response: bool = False


@dataclass(frozen=True, slots=True)
class Terminate:
    """Abort ``channel`` in both directions; ``code`` follows SOCKS5 reply codes.

    The encoder truncates ``reason`` to 255 UTF-8 bytes at a character boundary.
    """

    channel: int
    code: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Credit:
    """The sender accepts records up to ``max_pnum`` on ``channel``."""

    channel: int
    max_pnum: int


@dataclass(frozen=True, slots=True)
class Close:
    """The session is over; ``reason`` truncated like :class:`Terminate`'s."""

    code: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PathChallenge:
    """Server to client: 8 random bytes to echo from a new address."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PathResponse:
    """Client to server: the echoed challenge bytes."""

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


def _encode_path(cmd_byte: int, data: bytes) -> bytes:
    if len(data) != PATH_DATA_SIZE:
        raise ValueError(f"path challenge data is {PATH_DATA_SIZE} bytes, not {len(data)}")
    return bytes((cmd_byte,)) + data


def encode_command(cmd: Command) -> bytes:
    """Encode a channel-0 message; ``ValueError`` for a field the wire cannot carry."""
    if isinstance(cmd, Ack):
        return encode_ack(cmd)
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
        return bytes((Cmd.KEEPALIVE, 1 if cmd.response else 0))
    if isinstance(cmd, Terminate):
        cb, chan = chan_bytes(cmd.channel)
        check_range("code", cmd.code, 255)
        return bytes((Cmd.TERMINATE, cb)) + chan + bytes((cmd.code,)) + _encode_reason(cmd.reason)
    if isinstance(cmd, Credit):
        cb, chan = chan_bytes(cmd.channel)
        mb, max_pnum = u64_bytes("max_pnum", cmd.max_pnum)
        return bytes((Cmd.CREDIT, (cb << 3) | mb)) + chan + max_pnum
    if isinstance(cmd, Close):
        check_range("code", cmd.code, 255)
        return bytes((Cmd.CLOSE, cmd.code)) + _encode_reason(cmd.reason)
    if isinstance(cmd, PathChallenge):
        return _encode_path(Cmd.PATH_CHALLENGE, cmd.data)
    return _encode_path(Cmd.PATH_RESPONSE, cmd.data)


# --- parsing ----------------------------------------------------------------


def _parse_reason(data: bytes, o: int) -> tuple[str, int]:
    n = byte_at(data, o)
    end = o + 1 + n
    if end > len(data):
        raise WireError("truncated reason")
    try:
        return data[o + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise WireError("reason is not UTF-8") from None


def _parse_host(data: bytes, o: int, atype: int) -> tuple[Host, int]:
    if atype == AddrType.IPV4:
        if o + 4 > len(data):
            raise WireError("truncated IPv4 address")
        return IPv4Address(data[o : o + 4]), o + 4
    if atype == AddrType.IPV6:
        if o + 16 > len(data):
            raise WireError("truncated IPv6 address")
        return IPv6Address(data[o : o + 16]), o + 16
    if atype == AddrType.HOSTNAME:
        n = byte_at(data, o)
        raw = data[o + 1 : o + 1 + n]
        if len(raw) != n:
            raise WireError("truncated host name")
        if _HOSTNAME_RE.fullmatch(raw) is None:
            raise WireError("malformed host name")
        return raw.decode("ascii"), o + 1 + n
    raise WireError(f"START address type {atype} not supported")


def _parse_start(data: bytes) -> tuple[Start, int]:
    flags = byte_at(data, 1)
    if not flags & 0x40:
        raise WireError("START without the required bit 6")
    cb = ((flags >> 4) & 3) + 1
    channel = unpack_int_untrusted(data, 2, cb)
    o = 2 + cb
    proto = _PROTOS.get(byte_at(data, o))
    if proto is None:
        raise WireError("START proto is neither TCP nor UDP")
    host, o = _parse_host(data, o + 1, (flags >> 2) & 3)
    pb = (flags & 3) + 1
    port = unpack_int_untrusted(data, o, pb)
    if not 1 <= port <= 65535:
        raise WireError("START port outside 1..65535")
    return Start(channel, proto, host, port, bool(flags & 0x80)), o + pb


def _parse_sized_channel(data: bytes, chan_shift: int, reserved: int) -> tuple[int, int, int]:
    # Layout shared by STARTED, STOP, TERMINATE and CREDIT: a size byte, then the channel.
    s = byte_at(data, 1)
    if s & reserved:
        raise WireError("reserved bits set")
    cb = ((s >> chan_shift) & 3) + 1
    channel = unpack_int_untrusted(data, 2, cb)
    return s, channel, 2 + cb


def _parse_one(data: bytes, cmd: int, from_server: bool) -> tuple[Command, int]:
    if cmd == Cmd.ACK:
        return parse_ack_untrusted(data)
    if cmd == Cmd.START:
        if not from_server:
            return _parse_start(data)
        _, channel, o = _parse_sized_channel(data, 0, 0xFC)
        return Started(channel), o
    if cmd == Cmd.STOP:
        s, channel, o = _parse_sized_channel(data, 3, 0xE0)
        lb = (s & 7) + 1
        return Stop(channel, unpack_int_untrusted(data, o, lb)), o + lb
    if cmd == Cmd.KEEPALIVE:
        kind = byte_at(data, 1)
        if kind > 1:
            raise WireError("KEEPALIVE kind is neither request nor response")
        return KeepAlive(kind == 1), 2
    if cmd == Cmd.TERMINATE:
        if len(data) < 2:
            # A bare 05 is what the prototype's client sent (seed bug 14): name it.
            raise WireError("malformed terminate")
        _, channel, o = _parse_sized_channel(data, 0, 0xFC)
        code = byte_at(data, o)
        reason, o = _parse_reason(data, o + 1)
        return Terminate(channel, code, reason), o
    if cmd == Cmd.CREDIT:
        s, channel, o = _parse_sized_channel(data, 3, 0xE0)
        mb = (s & 7) + 1
        return Credit(channel, unpack_int_untrusted(data, o, mb)), o + mb
    if cmd == Cmd.CLOSE:
        code = byte_at(data, 1)
        reason, o = _parse_reason(data, 2)
        return Close(code, reason), o
    if cmd in (Cmd.PATH_CHALLENGE, Cmd.PATH_RESPONSE):
        return _parse_path(data, cmd, from_server)
    raise WireError(f"unknown command {cmd}")


def _parse_path(data: bytes, cmd: int, from_server: bool) -> tuple[Command, int]:
    # Only the server challenges and only the client responds (§5.9).
    if from_server != (cmd == Cmd.PATH_CHALLENGE):
        raise WireError("path validation message in the wrong direction")
    payload = data[1 : 1 + PATH_DATA_SIZE]
    if len(payload) != PATH_DATA_SIZE:
        raise WireError("truncated path validation data")
    if cmd == Cmd.PATH_CHALLENGE:
        return PathChallenge(payload), 1 + PATH_DATA_SIZE
    return PathResponse(payload), 1 + PATH_DATA_SIZE


def parse_command_untrusted(data: bytes, *, from_server: bool) -> Command:
    """Parse one channel-0 message sent by the server (``from_server``) or the client.

    Rejects reserved bits, overlong integers, trailing bytes and non-canonical
    ACKs. Raises only :class:`WireError` on bad bytes.
    """
    if not data:
        raise WireError("empty command")
    first = data[0]
    if first & 0xE0:
        raise WireError("reserved bits set in command byte")
    cmd, end = _parse_one(data, first & 0x1F, from_server)
    if end != len(data):
        raise WireError("trailing bytes after command")
    return cmd

"""Pure codec for ResIP v2's inner records and command-channel messages (docs/PROTOCOL.md).

No state, no time, no I/O. Every function that reads bytes from the network ends
in ``_untrusted`` and raises only :class:`~resip.core.errors.WireError`, whatever the
input. Encoders raise plain :class:`ValueError` when the *caller* hands them a
value the wire cannot carry (a local bug, never a peer's fault).

Parsing is strict: reserved bits, overlong packed integers, trailing bytes and
non-canonical ACK ranges are all malformed, so whatever a parser accepts re-encodes
to the same bytes. This package knows only protocol v2; the prototype's v1 format
lives apart in :mod:`resip.compat`.

Rooms, by PROTOCOL.md section (this module re-exports their public names):

- :mod:`resip.core.wire.ints` (§1): packed integers and field limits.
- :mod:`resip.core.wire.records` (§4): :class:`Record` and the inner plaintext.
- :mod:`resip.core.wire.enums` (§5): the :class:`Cmd`, :class:`Proto` and
  :class:`AddrType` numbers.
- :mod:`resip.core.wire.ack` (§5.4): :class:`Ack`, its encoder and parser, and
  :func:`ack_from_ranges`.
- :mod:`resip.core.wire.commands` (§5): the other commands, :func:`encode_command` and
  :func:`parse_command_untrusted`.
"""

from __future__ import annotations

from resip.core.wire.ack import MAX_ACK_ITEMS, MAX_PACKET_RANGES, Ack, AckGroup, ack_from_ranges
from resip.core.wire.commands import (
    Close,
    Command,
    Credit,
    Host,
    KeepAlive,
    PathChallenge,
    PathResponse,
    Start,
    Started,
    Stop,
    Terminate,
    encode_command,
    parse_command_untrusted,
)
from resip.core.wire.enums import AddrType, Cmd, Proto
from resip.core.wire.ints import (
    MAX_CHANNEL,
    MAX_REASON,
    MAX_RECORD_DATA,
    MAX_U64,
    PATH_DATA_SIZE,
    int_bits,
    pack_int,
    unpack_int_untrusted,
)
from resip.core.wire.records import (
    INNER_PREFIX,
    Record,
    encode_inner,
    encode_record,
    parse_inner_untrusted,
    record_overhead,
)

__all__ = [
    "INNER_PREFIX",
    "MAX_ACK_ITEMS",
    "MAX_CHANNEL",
    "MAX_PACKET_RANGES",
    "MAX_REASON",
    "MAX_RECORD_DATA",
    "MAX_U64",
    "PATH_DATA_SIZE",
    "Ack",
    "AckGroup",
    "AddrType",
    "Close",
    "Cmd",
    "Command",
    "Credit",
    "Host",
    "KeepAlive",
    "PathChallenge",
    "PathResponse",
    "Proto",
    "Record",
    "Start",
    "Started",
    "Stop",
    "Terminate",
    "ack_from_ranges",
    "encode_command",
    "encode_inner",
    "encode_record",
    "int_bits",
    "pack_int",
    "parse_command_untrusted",
    "parse_inner_untrusted",
    "record_overhead",
    "unpack_int_untrusted",
]

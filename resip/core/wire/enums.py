"""Enumerations of the values the command channel puts on the wire (docs/PROTOCOL.md §5).

Only enumerations live here, so that every codec module (commands, ACKs, and the
legacy v1 codec in :mod:`resip.compat`) can share them without importing each other.
Their values are protocol constants: changing one breaks every deployed peer. The
CLOSE and TERMINATE reason codes are in :mod:`resip.core.codes`.
"""

from __future__ import annotations

from enum import IntEnum


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

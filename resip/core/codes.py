"""The codes CLOSE and TERMINATE carry (docs/PROTOCOL.md §5.8 and §5.6), in one place.

Both are one byte on the wire. They are :class:`~enum.IntEnum` so a code read from
the network (a plain ``int``, possibly one this version does not know) compares
equal to its member, and a member encodes and formats like the number it is.
Their values are protocol constants: changing one breaks every deployed peer.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "TerminateCode"]


class CloseCode(IntEnum):
    """Why a session ended (CLOSE, PROTOCOL.md §5.8)."""

    NORMAL = 0
    IDLE = 1
    PROTOCOL_ERROR = 2
    SHUTDOWN = 3
    #: Keys or packet counters used up.
    EXHAUSTED = 4
    #: The client created a new session in place of this one.
    REPLACED = 5


class TerminateCode(IntEnum):
    """Why a channel was aborted (TERMINATE, PROTOCOL.md §5.6).

    Codes 0-8 follow SOCKS5 reply codes so the proxy can pass them on unchanged.
    """

    #: Closed normally, or cancelled by the application.
    NORMAL = 0
    GENERAL_FAILURE = 1
    #: Refused by the server's rules (ACL).
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    #: Includes a name that does not resolve.
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TIMED_OUT = 6
    ADDRESS_TYPE_NOT_SUPPORTED = 8
    CHANNEL_LIMIT = 9
    PROTOCOL_ERROR = 10

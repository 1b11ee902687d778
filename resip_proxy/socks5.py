"""Server side of SOCKS5 (RFC 1928) with username/password auth (RFC 1929), as a pure codec.

No sockets, no asyncio, no time: the caller feeds bytes and acts on events, in the
shape of h11 (``receive_data`` / ``next_event`` / ``data_to_send``).

Theory of operation
-------------------
One :class:`Socks5Server` serves one client connection through the states of
:class:`Socks5State`::

    GREETING -> [AUTH ->] REQUEST -> REPLY -> DONE
        \\_________\\__________\\_______\\---> FAILED

- ``receive_data(data)`` buffers bytes and parses eagerly as far as they go; ``b""``
  means the client closed its side.
- ``data_to_send()`` returns what the codec itself must answer while parsing: the
  method selection (``05 00``, ``05 02`` or ``05 FF``), the RFC 1929 status
  (``01 00`` / ``01 01``) and, on a malformed request, the error reply. The caller
  writes it out after every ``receive_data``.
- ``next_event()`` returns :data:`NEED_DATA` until something happened, then the
  :class:`Socks5Request` (once) or a :class:`Socks5Error`. After an error the
  caller flushes ``data_to_send()`` and closes the connection: RFC 1928 §6 and RFC
  1929 §2 require the close, and nothing after an error is parsed.
- The caller acts on the request and answers with ``reply(code, bind)``. After
  ``Reply.SUCCEEDED`` the codec is ``DONE``: the connection becomes a byte pipe
  and ``trailing_data()`` holds any bytes the client pipelined after the request
  (optimistic clients send a TLS ClientHello without waiting); they must be
  forwarded, not dropped. Any other reply code moves to ``FAILED``.

Invariants
----------
- Feeding the same bytes in any split gives the same events and the same output.
  Checks run in wire order, so a verdict never depends on bytes that come later.
- Parsing is eager and every handshake message is length-prefixed and at most 513
  bytes (RFC 1929 request), so before the request completes the buffer never holds
  more than one incomplete message. :data:`MAX_HANDSHAKE_BUFFER` is the hard cap
  checked on top of that.
- Nothing from the peer raises: malformed input is a :class:`Socks5Error`. The
  codec raises only :class:`~resip.core.errors.LocalProtocolError`, for API misuse.
- Credentials never appear in any event, error message or repr.

Decisions
---------
- ``credentials=None`` accepts only method 0x00 (no auth); otherwise only method
  0x02 is accepted, so a client cannot skip auth by offering 0x00.
- Domain names (ATYP 3) must be 1..255 bytes of ``[A-Za-z0-9._-]`` (IDNA
  A-labels are ASCII, so they pass) or an IPv6 literal. They stay ``str`` even when
  they spell an IP address: the caller decides (ACL checks resolve them anyway).
- CONNECT to port 0 is answered with ``GENERAL_FAILURE``: it is a malformed request
  rather than an outcome of trying the target, and RFC 1928 has no "bad request"
  code. ``HOST_UNREACHABLE``/``CONNECTION_REFUSED`` would claim we tried. UDP
  ASSOCIATE may carry ``0.0.0.0:0`` (RFC 1928 §7: the client may not know yet), and
  BIND is parsed as is: the frontend answers ``COMMAND_NOT_SUPPORTED``.
- Malformed fixed fields (VER, RSV), a bad domain and port 0 give
  ``GENERAL_FAILURE``; an unknown CMD ``COMMAND_NOT_SUPPORTED``; an unknown ATYP
  ``ADDRESS_TYPE_NOT_SUPPORTED``. A greeting with a version other than 5 gets no
  reply at all: it is not SOCKS5 (the frontend sniffs the first byte anyway).

The UDP ASSOCIATE datagram header (RFC 1928 §7) is handled by the pure functions
:func:`parse_udp_datagram_untrusted` and :func:`encode_udp_datagram`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Final, TypeAlias

from resip.core.errors import LocalProtocolError, WireError

Host: TypeAlias = IPv4Address | IPv6Address | str

SOCKS_VERSION: Final = 5
AUTH_VERSION: Final = 1
METHOD_NO_AUTH: Final = 0x00
METHOD_USERNAME_PASSWORD: Final = 0x02
METHOD_NO_ACCEPTABLE: Final = 0xFF

#: Upper bound on bytes buffered before the request is complete. The largest
#: handshake message is an RFC 1929 request (3 + 255 + 255 = 513 bytes).
MAX_HANDSHAKE_BUFFER: Final = 1024

_HOST_NAME_RE: Final = re.compile(rb"[A-Za-z0-9._-]{1,255}")
# Characters an IPv6 literal may use; the literal is then checked by ipaddress.
_IPV6_LITERAL_RE: Final = re.compile(rb"[0-9A-Fa-f:.]{2,45}")


class ProxyProtocolError(WireError):
    """Malformed bytes from a proxy client; the only exception ``*_untrusted`` parsers raise."""


class AddressType(IntEnum):
    """ATYP values of RFC 1928 §4-§5."""

    IPV4 = 1
    DOMAIN = 3
    IPV6 = 4


class Socks5Command(IntEnum):
    """CMD values of RFC 1928 §4."""

    CONNECT = 1
    BIND = 2
    UDP_ASSOCIATE = 3


class Reply(IntEnum):
    """REP values of RFC 1928 §6."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


class Socks5State(Enum):
    """Where a :class:`Socks5Server` is in the handshake."""

    #: Waiting for the method-selection message (VER NMETHODS METHODS).
    GREETING = "greeting"
    #: Method 0x02 chosen; waiting for the RFC 1929 username/password request.
    AUTH = "auth"
    #: Waiting for the request (VER CMD RSV ATYP DST.ADDR DST.PORT).
    REQUEST = "request"
    #: Request parsed; waiting for the caller's :meth:`Socks5Server.reply`.
    REPLY = "reply"
    #: Replied SUCCEEDED: the connection is a byte pipe now.
    DONE = "done"
    #: Handshake failed or refused; the caller must close the connection.
    FAILED = "failed"


_COMMANDS: Final = frozenset(int(c) for c in Socks5Command)
_ADDRESS_TYPES: Final = frozenset(int(a) for a in AddressType)
_PARSING: Final = frozenset({Socks5State.GREETING, Socks5State.AUTH, Socks5State.REQUEST})


@dataclass(frozen=True, slots=True)
class NeedData:
    """No event yet: feed more bytes with ``receive_data``. Use the :data:`NEED_DATA` instance."""


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class Socks5Request:
    """A complete, well-formed SOCKS5 request; answer it with :meth:`Socks5Server.reply`."""

    command: Socks5Command
    #: IPv4/IPv6 for ATYP 1/4; ``str`` for ATYP 3, even when it spells an IP literal.
    host: Host
    port: int


@dataclass(frozen=True, slots=True)
class Socks5Error:
    """The handshake failed. Flush ``data_to_send()`` (it holds the reply, if any) and close."""

    #: The reply code already queued in ``data_to_send()``, or ``None`` when no
    #: request reply applies (not SOCKS5, auth stage, client closed).
    reply: Reply | None
    #: Why, for logs. Never contains credentials.
    message: str
    #: Always true: RFC 1928 §6 and RFC 1929 §2 require closing after a failure.
    close: bool = True


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    """One UDP ASSOCIATE datagram (RFC 1928 §7). Drop it unless ``frag == 0``."""

    host: Host
    port: int
    data: bytes
    frag: int


def encode_reply(code: Reply, bind: tuple[IPv4Address | IPv6Address, int] | None = None) -> bytes:
    """Encode a request reply ``VER REP RSV ATYP BND.ADDR BND.PORT`` (RFC 1928 §6).

    ``bind`` defaults to ``0.0.0.0:0``, which is what clients expect on failures and
    on CONNECT (they ignore it). Raises ``ValueError`` for a port outside 0..65535.
    """
    addr, port = bind if bind is not None else (IPv4Address(0), 0)
    return bytes((SOCKS_VERSION, Reply(code), 0)) + _encode_address(addr, port)


def parse_host_name_untrusted(raw: bytes) -> str:
    """Validate a host name from the wire: ``[A-Za-z0-9._-]{1,255}`` or an IPv6 literal.

    The tunnel carries only such names (``resip.core.wire``), and rejecting everything
    else here keeps NUL, control bytes, spaces and non-ASCII out of logs and
    resolvers. IDNA names arrive as ASCII A-labels and pass. Raises
    :class:`ProxyProtocolError` and nothing else.
    """
    if _HOST_NAME_RE.fullmatch(raw) is not None:
        return raw.decode("ascii")
    if _IPV6_LITERAL_RE.fullmatch(raw) is not None:
        text = raw.decode("ascii")
        try:
            IPv6Address(text)
        except ValueError:
            pass
        else:
            return text
    raise ProxyProtocolError("malformed host name")


def _encode_address(host: Host, port: int) -> bytes:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be 0..65535, not {port}")
    if isinstance(host, IPv4Address):
        head = bytes((AddressType.IPV4,)) + host.packed
    elif isinstance(host, IPv6Address):
        head = bytes((AddressType.IPV6,)) + host.packed
    else:
        try:
            raw = host.encode("ascii")
            parse_host_name_untrusted(raw)
        except (UnicodeEncodeError, ProxyProtocolError):
            raise ValueError(
                f"host name must be 1..255 of [A-Za-z0-9._-] or an IPv6 literal: {host!r}"
            ) from None
        head = bytes((AddressType.DOMAIN, len(raw))) + raw
    return head + port.to_bytes(2, "big")


def _address_length(data: bytes | bytearray, offset: int) -> int | None:
    """Bytes of ``ATYP ADDR PORT`` starting at ``offset``; ``None`` if not yet known.

    Raises ProxyProtocolError for an unknown ATYP or a zero-length domain.
    """
    if len(data) <= offset:
        return None
    atype = data[offset]
    if atype == AddressType.IPV4:
        return 1 + 4 + 2
    if atype == AddressType.IPV6:
        return 1 + 16 + 2
    if atype != AddressType.DOMAIN:
        raise ProxyProtocolError(f"address type {atype} not supported")
    if len(data) <= offset + 1:
        return None
    n = data[offset + 1]
    if n == 0:
        raise ProxyProtocolError("zero-length domain name")
    return 1 + 1 + n + 2


def _parse_address(data: bytes, offset: int) -> tuple[Host, int]:
    """Decode a complete ``ATYP ADDR PORT`` whose length was checked by ``_address_length``."""
    atype = data[offset]
    host: Host
    if atype == AddressType.IPV4:
        host, end = IPv4Address(data[offset + 1 : offset + 5]), offset + 5
    elif atype == AddressType.IPV6:
        host, end = IPv6Address(data[offset + 1 : offset + 17]), offset + 17
    else:
        n = data[offset + 1]
        host, end = parse_host_name_untrusted(data[offset + 2 : offset + 2 + n]), offset + 2 + n
    return host, int.from_bytes(data[end : end + 2], "big")


def parse_udp_datagram_untrusted(data: bytes) -> UdpDatagram:
    """Parse ``RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`` (RFC 1928 §7).

    Raises :class:`ProxyProtocolError` (and nothing else) when RSV is not zero, ATYP
    is unknown, the domain is empty or malformed, or the header is truncated.
    ``frag`` is returned as is: the caller drops ``frag != 0`` (we do not reassemble).
    """
    if len(data) < 4:
        raise ProxyProtocolError("truncated UDP header")
    if data[0] != 0 or data[1] != 0:
        raise ProxyProtocolError("UDP header RSV is not zero")
    size = _address_length(data, 3)
    if size is None or len(data) < 3 + size:
        raise ProxyProtocolError("truncated UDP header")
    host, port = _parse_address(data, 3)
    return UdpDatagram(host=host, port=port, data=data[3 + size :], frag=data[2])


def encode_udp_datagram(host: Host, port: int, data: bytes) -> bytes:
    """Encode an unfragmented UDP ASSOCIATE datagram for the client.

    Raises ``ValueError`` for a port outside 0..65535 or an unencodable host name.
    """
    return b"\x00\x00\x00" + _encode_address(host, port) + data


class Socks5Server:
    """Incremental server side of one SOCKS5 client connection (see the module docstring)."""

    def __init__(self, *, credentials: Callable[[str, str], bool] | None = None) -> None:
        """``credentials(username, password)`` decides RFC 1929 auth; ``None`` disables auth.

        The callable should compare in constant time (``hmac.compare_digest``).
        """
        self._credentials = credentials
        self._state = Socks5State.GREETING
        self._buf = bytearray()
        self._out = bytearray()
        self._request: Socks5Request | None = None
        self._error: Socks5Error | None = None

    @property
    def state(self) -> Socks5State:
        """The current :class:`Socks5State`."""
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client; ``b""`` means the client closed its side."""
        state = self._state
        if state is Socks5State.FAILED:
            return  # the connection is being closed; nothing more matters
        if state is Socks5State.DONE:
            raise LocalProtocolError("SOCKS5 handshake is done: splice the stream directly")
        if state is Socks5State.REPLY:
            # Pipelined bytes after the request belong to the stream; EOF is seen
            # by the caller on its own socket.
            self._buf += data
            return
        if not data:
            self._fail(None, "client closed the connection during the SOCKS5 handshake")
            return
        self._buf += data
        self._advance()
        if self._state in _PARSING and len(self._buf) > MAX_HANDSHAKE_BUFFER:
            self._fail(None, "SOCKS5 handshake exceeds the buffer limit")

    def next_event(self) -> Socks5Request | NeedData | Socks5Error:
        """The request (returned once), an error (returned on every call), or ``NEED_DATA``."""
        if self._error is not None:
            return self._error
        if self._request is not None:
            request, self._request = self._request, None
            return request
        if self._state in _PARSING:
            return NEED_DATA
        raise LocalProtocolError(f"no more events in state {self._state.name}")

    def data_to_send(self) -> bytes:
        """Bytes the codec produced while parsing (method choice, auth status, error reply)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def reply(
        self, code: Reply, bind: tuple[IPv4Address | IPv6Address, int] | None = None
    ) -> bytes:
        """Answer the request; returns the bytes to send.

        ``bind`` is BND.ADDR/BND.PORT (the UDP relay address for UDP ASSOCIATE),
        ``0.0.0.0:0`` by default. ``SUCCEEDED`` moves to ``DONE``, anything else
        to ``FAILED`` (close after sending).
        """
        if self._state is not Socks5State.REPLY:
            raise LocalProtocolError(f"cannot reply in state {self._state.name}")
        encoded = encode_reply(code, bind)
        self._request = None
        if code == Reply.SUCCEEDED:
            self._state = Socks5State.DONE
        else:
            self._state = Socks5State.FAILED
            self._error = Socks5Error(Reply(code), f"request refused with {Reply(code).name}")
            self._buf.clear()
        return encoded

    def trailing_data(self) -> bytes:
        """Bytes the client sent after its request (empty before the request or after a failure)."""
        if self._state in (Socks5State.REPLY, Socks5State.DONE):
            return bytes(self._buf)
        return b""

    # -- parsing ---------------------------------------------------------------

    def _fail(self, reply: Reply | None, message: str) -> None:
        if reply is not None:
            self._out += encode_reply(reply)
        self._state = Socks5State.FAILED
        self._error = Socks5Error(reply, message)
        self._buf.clear()

    def _advance(self) -> None:
        while True:
            state = self._state
            if state is Socks5State.GREETING:
                progressed = self._parse_greeting()
            elif state is Socks5State.AUTH:
                progressed = self._parse_auth()
            elif state is Socks5State.REQUEST:
                progressed = self._parse_request()
            else:
                return
            if not progressed:
                return

    def _parse_greeting(self) -> bool:
        buf = self._buf
        if not buf:
            return False
        if buf[0] != SOCKS_VERSION:
            self._fail(None, f"not a SOCKS5 greeting (version byte 0x{buf[0]:02x})")
            return True
        if len(buf) < 2 or len(buf) < 2 + buf[1]:
            return False
        n = buf[1]
        methods = bytes(buf[2 : 2 + n])
        del buf[: 2 + n]
        wanted = METHOD_NO_AUTH if self._credentials is None else METHOD_USERNAME_PASSWORD
        if wanted not in methods:
            self._out += bytes((SOCKS_VERSION, METHOD_NO_ACCEPTABLE))
            self._fail(None, "client offers no acceptable authentication method")
            return True
        self._out += bytes((SOCKS_VERSION, wanted))
        self._state = (
            Socks5State.AUTH if wanted == METHOD_USERNAME_PASSWORD else Socks5State.REQUEST
        )
        return True

    def _parse_auth(self) -> bool:
        buf = self._buf
        if not buf:
            return False
        if buf[0] != AUTH_VERSION:
            self._auth_failed("malformed username/password request (version)")
            return True
        if len(buf) < 2:
            return False
        ulen = buf[1]
        if ulen == 0:
            self._auth_failed("malformed username/password request (empty username)")
            return True
        if len(buf) < 3 + ulen:
            return False
        plen = buf[2 + ulen]
        if plen == 0:
            self._auth_failed("malformed username/password request (empty password)")
            return True
        if len(buf) < 3 + ulen + plen:
            return False
        raw_user = bytes(buf[2 : 2 + ulen])
        raw_pass = bytes(buf[3 + ulen : 3 + ulen + plen])
        del buf[: 3 + ulen + plen]
        try:
            user, password = raw_user.decode("utf-8"), raw_pass.decode("utf-8")
        except UnicodeDecodeError:
            # Deliberately vague and free of the bytes themselves: they are credentials.
            self._auth_failed("username/password rejected")
            return True
        check = self._credentials
        if check is None or not check(user, password):
            self._auth_failed("username/password rejected")
            return True
        self._out += bytes((AUTH_VERSION, 0))
        self._state = Socks5State.REQUEST
        return True

    def _auth_failed(self, message: str) -> None:
        self._out += bytes((AUTH_VERSION, 1))
        self._fail(None, message)

    def _parse_request(self) -> bool:
        buf = self._buf
        n = len(buf)
        # Wire order, one byte at a time, so any split reaches the same verdict.
        if n >= 1 and buf[0] != SOCKS_VERSION:
            self._fail(Reply.GENERAL_FAILURE, f"request version byte 0x{buf[0]:02x}, not 5")
            return True
        if n >= 2 and buf[1] not in _COMMANDS:
            self._fail(Reply.COMMAND_NOT_SUPPORTED, f"unknown command 0x{buf[1]:02x}")
            return True
        if n >= 3 and buf[2] != 0:
            self._fail(Reply.GENERAL_FAILURE, "request RSV byte is not zero")
            return True
        try:
            size = _address_length(buf, 3)
        except ProxyProtocolError as exc:
            reply = (
                Reply.ADDRESS_TYPE_NOT_SUPPORTED
                if buf[3] not in _ADDRESS_TYPES
                else Reply.GENERAL_FAILURE
            )
            self._fail(reply, str(exc))
            return True
        if size is None or n < 3 + size:
            return False
        raw = bytes(buf[: 3 + size])
        try:
            host, port = _parse_address(raw, 3)
        except ProxyProtocolError as exc:
            self._fail(Reply.GENERAL_FAILURE, str(exc))
            return True
        command = Socks5Command(raw[1])
        if command is Socks5Command.CONNECT and port == 0:
            self._fail(Reply.GENERAL_FAILURE, "CONNECT to port 0")
            return True
        del buf[: 3 + size]
        self._request = Socks5Request(command=command, host=host, port=port)
        self._state = Socks5State.REPLY
        return True

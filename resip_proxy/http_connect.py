"""Server side of an HTTP/1.x forward proxy's request head, as a pure incremental codec.

No sockets, no asyncio, no time. The shape follows h11: ``receive_data(bytes)``
(``b""`` = EOF), ``next_event()`` returning :data:`NEED_DATA`, one
:class:`ProxyRequest`, or an :class:`HttpError`, and ``trailing_data()``.

What is accepted
----------------
- ``CONNECT host:port HTTP/1.x`` (authority form, IPv6 in brackets, port 1..65535):
  the caller answers ``response(200, "Connection established")`` and splices.
- Any other method with an absolute URI ``http://host[:port]/path?query``, as
  browsers send it to a plain-HTTP proxy. The request is rewritten into
  :attr:`ProxyRequest.forward_head`: origin form, ``Host`` from the URI (RFC 9112
  §3.2.2), hop-by-hop and ``Proxy-*`` fields removed, and ``Connection: close`` only
  when the client asked for it (in ``Connection`` or ``Proxy-Connection``). The body
  is not parsed here: framing fields (``Content-Length``, ``Transfer-Encoding``) are
  checked for conflicts and kept, and :mod:`resip_proxy.http_forward` frames the
  body, the response and the next request on the same connection (keep-alive).

Everything else is an :class:`HttpError` whose :meth:`HttpError.response` is ready
to send before closing: 400 malformed (including origin-form "this is a proxy" and
``https://`` absolute URIs, which must use CONNECT), 407 missing or wrong
``Proxy-Authorization: Basic`` when ``credentials`` is set, 414 request line longer
than ``max_head``, 431 head longer than ``max_head``, 501 unsupported transfer
coding, 505 HTTP version other than 1.0/1.1.

Invariants
----------
- Feeding the same bytes in any split gives the same result: a verdict is reached
  from complete lines only, and the size limits are judged on the first
  ``max_head + 1`` bytes, whatever the split.
- Parsing is eager, so at most ``max_head`` bytes of an incomplete head are ever
  buffered; bytes after the head (a request body, pipelined data, tunnel data) are
  kept whole for ``trailing_data()``.
- Nothing from the peer raises; only API misuse raises
  :class:`~resip.core.errors.LocalProtocolError`.
- Proxy credentials never appear in an event, error or repr: ``Proxy-Authorization``
  is dropped from :attr:`ProxyRequest.headers`, and ``headers``/``forward_head``
  (which may carry origin ``Authorization`` or cookies) are left out of the repr.
- Bare LF line ends are accepted (RFC 9112 §2.2); a CR anywhere else, other control
  bytes in values, obs-fold and whitespace before the colon are 400, which closes
  header-injection and request-smuggling tricks.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus
from ipaddress import IPv4Address, IPv6Address
from typing import Final

from resip.core.errors import LocalProtocolError

from .socks5 import NEED_DATA, Host, NeedData, ProxyProtocolError, parse_host_name_untrusted

__all__ = [
    "NEED_DATA",
    "HttpError",
    "HttpProxyServer",
    "HttpState",
    "NeedData",
    "ProxyRequest",
    "response",
]

DEFAULT_MAX_HEAD: Final = 16384
AUTH_REALM: Final = "resip"

_TOKEN_RE: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET_RE: Final = re.compile(rb"[\x21-\x7e]+")
_VERSION_RE: Final = re.compile(rb"HTTP/([0-9])\.([0-9])")
# Control bytes other than HTAB: CR and LF here mean an injection attempt.
_CTL_RE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEAD_END_RE: Final = re.compile(rb"\n\r?\n")
_PORT_RE: Final = re.compile(r"[0-9]{1,5}")

# Hop-by-hop fields (RFC 9110 §7.6.1), never sent to the origin; Proxy-* ones go
# too, and Host is rebuilt from the URI. Transfer-Encoding stays: the body is
# spliced untouched, so its framing must stay as well.
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "upgrade", "host"}
)
# Never removed even if listed in Connection: dropping them would change how the
# origin delimits the spliced body (a smuggling vector).
_FRAMING: Final = frozenset({"content-length", "transfer-encoding"})
_KNOWN_CODINGS: Final = frozenset({"chunked", "gzip", "x-gzip", "deflate", "compress"})


class HttpState(Enum):
    """Where an :class:`HttpProxyServer` is."""

    #: Reading the request head.
    HEAD = "head"
    #: The request was parsed; the connection belongs to the caller now.
    DONE = "done"
    #: The request was rejected; send the error response and close.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """A complete proxy request head, validated and (for absolute URIs) rewritten."""

    #: Request method as sent (case-sensitive, a token).
    method: str
    #: Target host: IPv4/IPv6 for IP literals, else a validated host name.
    host: Host
    #: Target port: explicit, or 80 for ``http://`` without one.
    port: int
    #: The original request-target.
    target: str
    #: Received header fields in order, names as sent, without Proxy-Authorization.
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    #: True for CONNECT (splice after a 200), False for absolute-URI requests.
    is_connect: bool
    #: For absolute-URI requests: the head to send to the origin. Empty for CONNECT.
    forward_head: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HttpError:
    """The request cannot be served; send :meth:`response` and close the connection."""

    status: int
    #: Why, for logs and the response body. Never contains credentials.
    reason: str

    def response(self) -> bytes:
        """The complete error response: text/plain body, Content-Length, Connection: close.

        407 adds ``Proxy-Authenticate: Basic realm="resip"``.
        """
        headers: list[tuple[str, str]] = [("Content-Type", "text/plain; charset=utf-8")]
        if self.status == HTTPStatus.PROXY_AUTHENTICATION_REQUIRED:
            headers.append(("Proxy-Authenticate", f'Basic realm="{AUTH_REALM}"'))
        headers.append(("Connection", "close"))
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return response(self.status, phrase, headers=headers, body=f"{self.reason}\n".encode())


def response(
    status: int, reason: str, *, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """Encode an HTTP/1.1 response head (and body).

    ``Content-Length`` is added when ``body`` is not empty; a 2xx answer to CONNECT
    must carry none (RFC 9110 §9.3.6), so ``response(200, "Connection established")``
    is exactly ``b"HTTP/1.1 200 Connection established\\r\\n\\r\\n"``. Raises
    ``ValueError`` for a status outside 100..999 or CR/LF/NUL in any text, so a
    caller can never inject fields.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"status must be 100..999, not {status}")
    lines = [f"HTTP/1.1 {status} {_check_text(reason)}"]
    for name, value in headers:
        if _TOKEN_RE.fullmatch(name.encode("latin-1", "replace")) is None:
            raise ValueError(f"invalid header name {name!r}")
        lines.append(f"{name}: {_check_text(value)}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _check_text(text: str) -> str:
    if any(ch in text for ch in "\r\n\x00"):
        raise ValueError("CR, LF and NUL are not allowed in response text")
    return text


class _RejectError(Exception):
    """Internal control flow: becomes an HttpError, never escapes the module."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpProxyServer:
    """Incremental parser for one client connection's proxy request head."""

    def __init__(
        self,
        *,
        credentials: Callable[[str, str], bool] | None = None,
        max_head: int = DEFAULT_MAX_HEAD,
    ) -> None:
        """``credentials(user, password)`` checks Proxy-Authorization; ``None`` disables auth.

        The callable should compare in constant time (``hmac.compare_digest``).
        ``max_head`` bounds the request head in bytes (request line and fields).
        """
        if max_head < 16:
            raise ValueError(f"max_head must be at least 16, not {max_head}")
        self._credentials = credentials
        self._max_head = max_head
        self._state = HttpState.HEAD
        self._buf = bytearray()
        self._scan = 0
        self._request: ProxyRequest | None = None
        self._error: HttpError | None = None

    @property
    def state(self) -> HttpState:
        """The current :class:`HttpState`."""
        return self._state

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the client; ``b""`` means the client closed its side."""
        if self._state is HttpState.FAILED:
            return  # the connection is being closed; nothing more matters
        if self._state is HttpState.DONE:
            raise LocalProtocolError("request already parsed: splice the stream directly")
        if not data:
            self._fail(400, "client closed the connection before the request head was complete")
            return
        self._buf += data
        self._advance()

    def next_event(self) -> ProxyRequest | NeedData | HttpError:
        """The request (returned once), an error (returned on every call), or ``NEED_DATA``."""
        if self._error is not None:
            return self._error
        if self._request is not None:
            request, self._request = self._request, None
            return request
        if self._state is HttpState.HEAD:
            return NEED_DATA
        raise LocalProtocolError("no more events: the request was already returned")

    def trailing_data(self) -> bytes:
        """Bytes after the request head (body, pipelined or tunnel data); empty before it."""
        return bytes(self._buf) if self._state is HttpState.DONE else b""

    # -- parsing ---------------------------------------------------------------

    def _fail(self, status: int, reason: str) -> None:
        self._state = HttpState.FAILED
        self._error = HttpError(status, reason)
        self._buf.clear()

    def _advance(self) -> None:
        buf = self._buf
        # RFC 9112 §2.2: ignore empty lines before the request line. Only whole
        # line ends are dropped, so a lone CR waits for its LF.
        while buf[:1] == b"\n" or buf[:2] == b"\r\n":
            del buf[: 1 if buf[0] == 0x0A else 2]
            self._scan = 0
        match = _HEAD_END_RE.search(buf, max(0, self._scan - 2))
        limit = self._max_head
        if match is None:
            self._scan = len(buf)
            if len(buf) > limit:
                self._too_big()
            return
        end = match.end()
        if end > limit:
            self._too_big()
            return
        head = bytes(buf[: match.start() + 1])
        try:
            request = self._parse_head(head)
        except _RejectError as exc:
            self._fail(exc.status, exc.reason)
            return
        del buf[:end]
        self._request = request
        self._state = HttpState.DONE

    def _too_big(self) -> None:
        # Judged on the first max_head bytes only, so every split agrees.
        if b"\n" not in self._buf[: self._max_head]:
            self._fail(414, "request line too long")
        else:
            self._fail(431, "request header fields too large")

    def _parse_head(self, head: bytes) -> ProxyRequest:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")[:-1]]
        method, target, version = _parse_request_line(lines[0])
        headers = _parse_fields(lines[1:])
        lowered = [(name.lower(), value) for name, value in headers]
        _check_framing(lowered, is_connect=method == "CONNECT")
        self._check_auth(lowered)
        kept = tuple((n, v) for n, v in headers if n.lower() != "proxy-authorization")
        if method == "CONNECT":
            host, port = _parse_authority(target, default_port=None)
            return ProxyRequest(method, host, port, target, kept, True, b"")
        host, port, authority, origin_target = _parse_absolute_uri(target)
        forward = _forward_head(method, origin_target, version, authority, kept)
        return ProxyRequest(method, host, port, target, kept, False, forward)

    def _check_auth(self, lowered: list[tuple[str, str]]) -> None:
        check = self._credentials
        if check is None:
            return
        values = [v for n, v in lowered if n == "proxy-authorization"]
        if len(values) != 1:
            raise _RejectError(407, "proxy authentication required")
        scheme, _, token = values[0].partition(" ")
        if scheme.lower() != "basic":
            raise _RejectError(407, "proxy authentication required (Basic)")
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise _RejectError(407, "malformed proxy credentials") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # Pre-RFC 7617 clients send ISO-8859-1.
            text = raw.decode("latin-1")
        user, sep, password = text.partition(":")
        if not sep or not check(user, password):
            raise _RejectError(407, "proxy credentials rejected")


def _parse_request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3:
        raise _RejectError(400, "malformed request line")
    method, target, version = parts
    if _TOKEN_RE.fullmatch(method) is None:
        raise _RejectError(400, "malformed request method")
    if _TARGET_RE.fullmatch(target) is None:
        raise _RejectError(400, "malformed request target")
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise _RejectError(400, "malformed HTTP version")
    if match.group(1) != b"1" or match.group(2) not in (b"0", b"1"):
        raise _RejectError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    return method.decode("ascii"), target.decode("ascii"), version.decode("ascii")


def _parse_fields(lines: list[bytes]) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise _RejectError(400, "obsolete line folding in header fields")
        name, sep, value = line.partition(b":")
        if not sep or _TOKEN_RE.fullmatch(name) is None:
            raise _RejectError(400, "malformed header field name")
        value = value.strip(b" \t")
        if _CTL_RE.search(value) is not None:
            raise _RejectError(400, "control character in header field value")
        fields.append((name.decode("ascii"), value.decode("latin-1")))
    return fields


def _check_framing(lowered: list[tuple[str, str]], *, is_connect: bool) -> None:
    lengths = {
        item.strip()
        for name, value in lowered
        if name == "content-length"
        for item in value.split(",")
    }
    if len(lengths) > 1:
        raise _RejectError(400, "conflicting Content-Length values")
    if lengths and not next(iter(lengths)).isdigit():
        raise _RejectError(400, "malformed Content-Length")
    if is_connect:
        return  # CONNECT content has no defined meaning; after the head it is tunnel data
    codings = [
        item.strip().lower()
        for name, value in lowered
        if name == "transfer-encoding"
        for item in value.split(",")
    ]
    if not codings:
        return
    if lengths:
        # RFC 9112 §6.1: both at once is a classic smuggling setup; refuse it.
        raise _RejectError(400, "both Transfer-Encoding and Content-Length")
    if any(c not in _KNOWN_CODINGS for c in codings):
        raise _RejectError(501, "unsupported transfer coding")
    if codings[-1] != "chunked":
        # RFC 9112 §6.3: without final chunked the body length is unknowable.
        raise _RejectError(400, "chunked is not the final transfer coding")


def _parse_host(text: str) -> Host:
    if text.startswith("["):
        inner = text[1:-1] if text.endswith("]") else ""
        # A zone id would name one of *our* interfaces; never meaningful remotely.
        if "%" in inner:
            raise _RejectError(400, "malformed IPv6 literal")
        try:
            return IPv6Address(inner)
        except ValueError:
            raise _RejectError(400, "malformed IPv6 literal") from None
    try:
        return IPv4Address(text)
    except ValueError:
        pass
    try:
        name = parse_host_name_untrusted(text.encode("ascii"))
    except ProxyProtocolError:
        raise _RejectError(400, "malformed host") from None
    if ":" in name:
        raise _RejectError(400, "IPv6 literal must be in brackets")
    return name


def _parse_authority(authority: str, *, default_port: int | None) -> tuple[Host, int]:
    if "@" in authority:
        raise _RejectError(400, "userinfo in the request target")
    if authority.startswith("["):
        close = authority.find("]")
        host_text, rest = authority[: close + 1], authority[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            raise _RejectError(400, "malformed IPv6 literal")
        port_text: str | None = rest[1:] if rest else None
    else:
        host_text, sep, tail = authority.rpartition(":")
        if not sep:
            host_text, port_text = authority, None
        else:
            port_text = tail
    if port_text is None or (port_text == "" and default_port is not None):
        if default_port is None:
            raise _RejectError(400, "CONNECT target must be host:port")
        port = default_port
    else:
        if _PORT_RE.fullmatch(port_text) is None:
            raise _RejectError(400, "malformed port")
        port = int(port_text)
        if not 1 <= port <= 0xFFFF:
            raise _RejectError(400, "port out of range")
    return _parse_host(host_text), port


def _parse_absolute_uri(target: str) -> tuple[Host, int, str, str]:
    """Split ``http://authority/path?query`` into host, port, Host value, origin form."""
    lowered = target[:8].lower()
    if lowered.startswith("https://"):
        raise _RejectError(400, "https:// targets must use CONNECT")
    if not lowered.startswith("http://"):
        if target.startswith("/") or target == "*":
            raise _RejectError(400, "this is a proxy: the request target must be an absolute URI")
        raise _RejectError(400, "request target must be an http:// absolute URI")
    rest = target[7:]
    cut = len(rest)
    for ch in "/?#":
        idx = rest.find(ch)
        if idx >= 0:
            cut = min(cut, idx)
    authority, origin = rest[:cut], rest[cut:]
    if "#" in origin:
        raise _RejectError(400, "fragment in the request target")
    host, port = _parse_authority(authority, default_port=80)
    if not origin.startswith("/"):
        origin = "/" + origin
    # An empty port ("host:") means the default; do not forward the dangling colon.
    host_value = authority[:-1] if authority.endswith(":") else authority
    return host, port, host_value, origin


def _forward_head(
    method: str,
    origin_target: str,
    version: str,
    host_value: str,
    headers: tuple[tuple[str, str], ...],
) -> bytes:
    # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
    dropped = set(_HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == "connection":
            dropped.update(item.strip().lower() for item in value.split(","))
    dropped -= _FRAMING
    # The client's version is kept: whoever frames the answer must know whether the
    # client can read chunked (HTTP/1.0 cannot) and keep the connection open.
    lines = [f"{method} {origin_target} {version}", f"Host: {host_value}"]
    lines.extend(
        f"{name}: {value}"
        for name, value in headers
        if name.lower() not in dropped and not name.lower().startswith("proxy-")
    )
    if _wants_close(headers):
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _wants_close(headers: tuple[tuple[str, str], ...]) -> bool:
    # Proxy-Connection is not standard, but old clients say "close" there instead.
    return any(
        token.strip().lower() == "close"
        for name, value in headers
        if name.lower() in ("connection", "proxy-connection")
        for token in value.split(",")
    )

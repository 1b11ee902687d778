"""Tests for resip_proxy.http_connect: the pure HTTP proxy request-head codec.

Every success case goes through ``tr()`` (h11's test_io.py pattern): the whole
buffer, one byte at a time (``NEED_DATA`` until the last byte), and with trailing
data that must come out intact. Forwarded heads are compared byte for byte.
"""

from __future__ import annotations

import base64
import itertools
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.errors import LocalProtocolError
from resip_proxy.http_connect import (
    NEED_DATA,
    HttpError,
    HttpProxyServer,
    HttpState,
    ProxyRequest,
    response,
)
from resip_proxy.socks5 import Host

FUZZ = settings(max_examples=200, deadline=None)
SPLITS = settings(max_examples=150, deadline=None)

USER = "alice-USERSECRET"
PASSWORD = "hunter2:PASSSECRET"  # a colon in the password: only the first one splits
TRAIL = b"\x16\x03\x01 tunnel bytes \r\n\r\n GET / HTTP/1.1\r\n\r\n"


def check(user: str, password: str) -> bool:
    return (user, password) == (USER, PASSWORD)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


GOOD_AUTH = f"Proxy-Authorization: {basic(USER, PASSWORD)}\r\n".encode()


def new(*, auth: bool = False, max_head: int = 16384) -> HttpProxyServer:
    return HttpProxyServer(credentials=check if auth else None, max_head=max_head)


def connect(
    target: str, host: Host, port: int, headers: tuple[tuple[str, str], ...] = ()
) -> ProxyRequest:
    return ProxyRequest("CONNECT", host, port, target, headers, True, b"")


def tr(data: bytes, expected: ProxyRequest, *, auth: bool = False) -> None:
    """Whole buffer, byte at a time, and with trailing data, all giving ``expected``."""
    server = new(auth=auth)
    server.receive_data(data)
    event = server.next_event()
    assert event == expected
    assert isinstance(event, ProxyRequest)
    assert event.forward_head == expected.forward_head
    assert server.state is HttpState.DONE
    assert server.trailing_data() == b""

    server = new(auth=auth)
    events = []
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        events.append(server.next_event())
    assert events[:-1] == [NEED_DATA] * (len(data) - 1)
    assert events[-1] == expected

    server = new(auth=auth)
    server.receive_data(data + TRAIL)
    assert server.next_event() == expected
    assert server.trailing_data() == TRAIL
    assert server.trailing_data() == TRAIL  # reading it does not consume it


def tr_error(
    data: bytes, status: int, reason: str, *, auth: bool = False, max_head: int = 16384
) -> HttpError:
    """Whole buffer and byte at a time give the same error."""
    expected = HttpError(status, reason)
    server = new(auth=auth, max_head=max_head)
    server.receive_data(data)
    assert server.next_event() == expected
    assert server.state is HttpState.FAILED
    assert server.next_event() == expected  # sticky
    assert server.trailing_data() == b""
    server.receive_data(b"ignored")

    server = new(auth=auth, max_head=max_head)
    events = []
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        events.append(server.next_event())
    assert events[-1] == expected
    first = events.index(expected)
    assert events[:first] == [NEED_DATA] * first
    return expected


# ---------------------------------------------------------------------------
# CONNECT
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("example.com:443", "example.com", 443),
        ("EXAMPLE.com.:1", "EXAMPLE.com.", 1),
        ("xn--bcher-kva.example:65535", "xn--bcher-kva.example", 65535),
        ("93.184.216.34:443", IPv4Address("93.184.216.34"), 443),
        ("[2001:db8::1]:443", IPv6Address("2001:db8::1"), 443),
        ("[::ffff:127.0.0.1]:22", IPv6Address("::ffff:127.0.0.1"), 22),
        # Not a dotted quad for ipaddress: stays a name, the server's ACL resolves it.
        ("2130706433:80", "2130706433", 80),
    ],
)
def test_connect(target: str, host: Host, port: int) -> None:
    data = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode()
    tr(data, connect(target, host, port, (("Host", target),)))


def test_connect_bare_lf_no_headers_and_http10() -> None:
    tr(b"CONNECT a.b:443 HTTP/1.0\n\n", connect("a.b:443", "a.b", 443))
    tr(b"CONNECT a.b:443 HTTP/1.1\r\n\n", connect("a.b:443", "a.b", 443))


def test_leading_empty_lines_are_ignored() -> None:
    tr(b"\r\n\n\r\nCONNECT a.b:443 HTTP/1.1\r\n\r\n", connect("a.b:443", "a.b", 443))


def test_connect_ok_response_bytes() -> None:
    assert response(200, "Connection established") == (
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    )


def test_connect_ignores_body_framing_and_keeps_tunnel_bytes() -> None:
    data = b"CONNECT a.b:443 HTTP/1.1\r\nTransfer-Encoding: bogus\r\n\r\n"
    server = new()
    server.receive_data(data + b"\x16\x03\x01")
    event = server.next_event()
    assert isinstance(event, ProxyRequest)
    assert event.is_connect
    assert server.trailing_data() == b"\x16\x03\x01"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("example.com", "CONNECT target must be host:port"),
        ("example.com:", "malformed port"),
        ("example.com:0", "port out of range"),
        ("example.com:65536", "port out of range"),
        ("example.com:123456", "malformed port"),
        ("example.com:+443", "malformed port"),
        ("example.com:44a", "malformed port"),
        (":443", "malformed host"),
        ("[::1]", "CONNECT target must be host:port"),
        ("[::1]443", "malformed IPv6 literal"),
        ("[::1:443", "malformed IPv6 literal"),
        ("[nothex]:443", "malformed IPv6 literal"),
        ("[fe80::1%25eth0]:443", "malformed IPv6 literal"),
        ("::1:443", "IPv6 literal must be in brackets"),
        ("user:pw@example.com:443", "userinfo in the request target"),
        ("exa%00mple.com:443", "malformed host"),
        ("http://example.com:443", "malformed host"),
    ],
)
def test_connect_bad_targets(target: str, reason: str) -> None:
    tr_error(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode(), 400, reason)


# ---------------------------------------------------------------------------
# Absolute-URI requests, rewritten for the origin
# ---------------------------------------------------------------------------


def _absolute(method: str, target: str, host: Host, port: int, raw: bytes, fwd: bytes) -> None:
    server = new()
    server.receive_data(raw)
    event = server.next_event()
    assert isinstance(event, ProxyRequest)
    tr(raw, ProxyRequest(method, host, port, target, event.headers, False, fwd))


def test_browser_get_is_rewritten_exactly() -> None:
    raw = (
        b"GET http://Example.com/path/a.html?q=1&r=%20 HTTP/1.1\r\n"
        b"Host: example.com\r\n"
        b"User-Agent: test/1.0\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Accept:  text/html,*/*  \r\n"
        b"Cookie: a=b\r\n"
        b"\r\n"
    )
    fwd = (
        b"GET /path/a.html?q=1&r=%20 HTTP/1.1\r\n"
        b"Host: Example.com\r\n"
        b"User-Agent: test/1.0\r\n"
        b"Accept: text/html,*/*\r\n"
        b"Cookie: a=b\r\n"
        b"\r\n"
    )
    _absolute("GET", "http://Example.com/path/a.html?q=1&r=%20", "Example.com", 80, raw, fwd)


@pytest.mark.parametrize(
    ("target", "host", "port", "origin", "host_field"),
    [
        ("http://a.b", "a.b", 80, "/", "a.b"),
        ("http://a.b?x=1", "a.b", 80, "/?x=1", "a.b"),
        ("HTTP://a.b:8080/", "a.b", 8080, "/", "a.b:8080"),
        ("http://a.b:/x", "a.b", 80, "/x", "a.b"),
        ("http://a.b:80/x", "a.b", 80, "/x", "a.b:80"),
        ("http://10.0.0.1:81/x", IPv4Address("10.0.0.1"), 81, "/x", "10.0.0.1:81"),
        ("http://[::1]/", IPv6Address("::1"), 80, "/", "[::1]"),
        (
            "http://[2001:db8::2]:8443/p",
            IPv6Address("2001:db8::2"),
            8443,
            "/p",
            "[2001:db8::2]:8443",
        ),
    ],
)
def test_absolute_uri_forms(
    target: str, host: Host, port: int, origin: str, host_field: str
) -> None:
    raw = f"GET {target} HTTP/1.1\r\n\r\n".encode()
    fwd = f"GET {origin} HTTP/1.1\r\nHost: {host_field}\r\n\r\n".encode()
    _absolute("GET", target, host, port, raw, fwd)


def test_hop_by_hop_and_connection_listed_fields_are_removed() -> None:
    raw = (
        b"POST http://a.b/up HTTP/1.0\n"
        b"Connection: keep-alive, X-Secret-Hop, Content-Length\n"
        b"Keep-Alive: timeout=5\n"
        b"X-Secret-Hop: 1\n"
        b"TE: trailers\n"
        b"Upgrade: websocket\n"
        b"Proxy-Foo: bar\n"
        b"Content-Length: 5\n"
        b"X-Keep: yes\n"
        b"\n"
    )
    # HTTP/1.0 is kept (it decides how the answer is framed and that the client
    # connection closes after it); Content-Length is framing and survives even when
    # Connection lists it.
    fwd = b"POST /up HTTP/1.0\r\nHost: a.b\r\nContent-Length: 5\r\nX-Keep: yes\r\n\r\n"
    _absolute("POST", "http://a.b/up", "a.b", 80, raw, fwd)


@pytest.mark.parametrize(
    ("field", "kept"),
    [
        (b"Connection: close", b"X-Foo: 1\r\n"),
        (b"Connection: X-Foo, Close", b""),  # the listed field is hop-by-hop and goes
        (b"Proxy-Connection: close", b"X-Foo: 1\r\n"),
    ],
)
def test_a_client_asking_to_close_is_forwarded_as_connection_close(
    field: bytes, kept: bytes
) -> None:
    raw = b"GET http://a.b/ HTTP/1.1\r\n" + field + b"\r\nX-Foo: 1\r\n\r\n"
    fwd = b"GET / HTTP/1.1\r\nHost: a.b\r\n" + kept + b"Connection: close\r\n\r\n"
    _absolute("GET", "http://a.b/", "a.b", 80, raw, fwd)


def test_chunked_body_is_forwarded_untouched() -> None:
    raw = b"POST http://a.b/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    fwd = b"POST / HTTP/1.1\r\nHost: a.b\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    _absolute("POST", "http://a.b/", "a.b", 80, raw, fwd)


def test_pipelined_body_and_next_request_stay_in_trailing_data() -> None:
    head = b"POST http://a.b/ HTTP/1.1\r\nContent-Length: 11\r\n\r\n"
    rest = b"hello world" + b"GET http://a.b/2 HTTP/1.1\r\n\r\n"
    server = new()
    server.receive_data(head + rest[:3])
    assert isinstance(server.next_event(), ProxyRequest)
    assert server.trailing_data() == rest[:3]
    with pytest.raises(LocalProtocolError):
        server.receive_data(rest[3:])  # after the head the caller splices itself
    with pytest.raises(LocalProtocolError):
        server.next_event()


def test_other_methods_are_forwarded() -> None:
    raw = b"PROPFIND http://a.b/dav HTTP/1.1\r\nDepth: 1\r\n\r\n"
    fwd = b"PROPFIND /dav HTTP/1.1\r\nHost: a.b\r\nDepth: 1\r\n\r\n"
    _absolute("PROPFIND", "http://a.b/dav", "a.b", 80, raw, fwd)


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/index.html", "this is a proxy: the request target must be an absolute URI"),
        ("*", "this is a proxy: the request target must be an absolute URI"),
        ("https://a.b/", "https:// targets must use CONNECT"),
        ("HTTPS://a.b/", "https:// targets must use CONNECT"),
        ("ftp://a.b/", "request target must be an http:// absolute URI"),
        ("a.b:80", "request target must be an http:// absolute URI"),
        ("http://a.b/#frag", "fragment in the request target"),
        ("http://user:pw@a.b/", "userinfo in the request target"),
        ("http:///x", "malformed host"),
        ("http://a.b:99999/", "port out of range"),
        ("http://a.b:123456/", "malformed port"),
        ("http://a.b:0/", "port out of range"),
        ("http://a_b%2e/", "malformed host"),
    ],
)
def test_absolute_uri_errors(target: str, reason: str) -> None:
    tr_error(f"GET {target} HTTP/1.1\r\nHost: a.b\r\n\r\n".encode(), 400, reason)


# ---------------------------------------------------------------------------
# Malformed heads, injection and smuggling attempts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        (b"GET  http://a.b/ HTTP/1.1", 400, "malformed request line"),
        (b"GET http://a.b/ HTTP/1.1 ", 400, "malformed request line"),
        (b"GET http://a.b/", 400, "malformed request line"),
        (b"GET", 400, "malformed request line"),
        (b"", 400, "malformed request line"),
        (b"GET\thttp://a.b/\tHTTP/1.1", 400, "malformed request line"),
        (b"G(T http://a.b/ HTTP/1.1", 400, "malformed request method"),
        (b"\rGET http://a.b/ HTTP/1.1", 400, "malformed request method"),
        (b"GET http://a.b/\xc3\xa9 HTTP/1.1", 400, "malformed request target"),
        (b"GET http://a.b/\x00 HTTP/1.1", 400, "malformed request target"),
        (b"GET http://a.b/ http/1.1", 400, "malformed HTTP version"),
        (b"GET http://a.b/ HTTP/1.1\r", 400, "malformed HTTP version"),
        (b"GET http://a.b/ HTTP/11", 400, "malformed HTTP version"),
        (b"GET http://a.b/ HTTP/2.0", 505, "only HTTP/1.0 and HTTP/1.1 are supported"),
        (b"GET http://a.b/ HTTP/1.2", 505, "only HTTP/1.0 and HTTP/1.1 are supported"),
        (b"GET http://a.b/ HTTP/0.9", 505, "only HTTP/1.0 and HTTP/1.1 are supported"),
    ],
)
def test_malformed_request_lines(line: bytes, status: int, reason: str) -> None:
    tr_error(line + b"\r\nHost: a.b\r\n\r\n", status, reason)


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        (b"X: a\rInjected: b\r\n", 400, "control character in header field value"),
        (b"X: a\r\rInjected: b\r\n", 400, "control character in header field value"),
        (b"X: a\x00b\r\n", 400, "control character in header field value"),
        (b"X: a\x7fb\r\n", 400, "control character in header field value"),
        (b"X: a\x1bb\r\n", 400, "control character in header field value"),
        (b"X: a\r\n continued\r\n", 400, "obsolete line folding in header fields"),
        (b"X: a\r\n\tcontinued\r\n", 400, "obsolete line folding in header fields"),
        (b"X : a\r\n", 400, "malformed header field name"),
        (b": a\r\n", 400, "malformed header field name"),
        (b"No-Colon\r\n", 400, "malformed header field name"),
        (b"X\x00Y: a\r\n", 400, "malformed header field name"),
        (b"Content-Length: 3\r\nContent-Length: 4\r\n", 400, "conflicting Content-Length values"),
        (b"Content-Length: 3, 4\r\n", 400, "conflicting Content-Length values"),
        (b"Content-Length: -1\r\n", 400, "malformed Content-Length"),
        (b"Content-Length: \r\n", 400, "malformed Content-Length"),
        (b"Content-Length: 0x10\r\n", 400, "malformed Content-Length"),
        (
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (b"Transfer-Encoding: chunked, gzip\r\n", 400, "chunked is not the final transfer coding"),
        (b"Transfer-Encoding: gzip\r\n", 400, "chunked is not the final transfer coding"),
        (b"Transfer-Encoding: foo, chunked\r\n", 501, "unsupported transfer coding"),
    ],
)
def test_bad_header_fields(fields: bytes, status: int, reason: str) -> None:
    tr_error(b"POST http://a.b/ HTTP/1.1\r\n" + fields + b"\r\n", status, reason)


def test_repeated_equal_content_length_is_accepted() -> None:
    raw = b"POST http://a.b/ HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"
    fwd = b"POST / HTTP/1.1\r\nHost: a.b\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"
    _absolute("POST", "http://a.b/", "a.b", 80, raw, fwd)


def test_header_values_keep_obs_text_and_tabs() -> None:
    raw = b"GET http://a.b/ HTTP/1.1\r\nX-Latin: caf\xe9\tok\r\n\r\n"
    fwd = b"GET / HTTP/1.1\r\nHost: a.b\r\nX-Latin: caf\xe9\tok\r\n\r\n"
    _absolute("GET", "http://a.b/", "a.b", 80, raw, fwd)


# ---------------------------------------------------------------------------
# Size limits
# ---------------------------------------------------------------------------


def test_head_of_exactly_max_head_is_accepted_one_more_is_431() -> None:
    line = b"CONNECT a.b:443 HTTP/1.1\r\n"
    pad = 200 - len(line) - len(b"X: \r\n\r\n")
    exact = line + b"X: " + b"v" * pad + b"\r\n\r\n"
    assert len(exact) == 200
    server = new(max_head=200)
    server.receive_data(exact)
    assert isinstance(server.next_event(), ProxyRequest)

    over = line + b"X: " + b"v" * (pad + 1) + b"\r\n\r\n"
    tr_error(over, 431, "request header fields too large", max_head=200)


def test_many_headers_give_431() -> None:
    data = b"GET http://a.b/ HTTP/1.1\r\n" + b"X-Filler: 0123456789\r\n" * 1000 + b"\r\n"
    tr_error(data, 431, "request header fields too large")


def test_endless_head_is_cut_at_max_head() -> None:
    server = new(max_head=1024)
    server.receive_data(b"GET http://a.b/ HTTP/1.1\r\n")
    for _ in range(100):
        server.receive_data(b"X-Filler: 0123456789\r\n")
        if server.state is HttpState.FAILED:
            break
    assert server.next_event() == HttpError(431, "request header fields too large")


def test_long_request_line_gives_414() -> None:
    data = b"GET http://a.b/" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n"
    err = tr_error(data, 414, "request line too long")
    assert err.response().startswith(b"HTTP/1.1 414 ")


def test_max_head_must_be_sane() -> None:
    with pytest.raises(ValueError, match="max_head"):
        HttpProxyServer(max_head=0)


# ---------------------------------------------------------------------------
# Proxy authentication (407)
# ---------------------------------------------------------------------------


def test_auth_success_strips_credentials() -> None:
    raw = b"GET http://a.b/ HTTP/1.1\r\n" + GOOD_AUTH + b"Accept: */*\r\n\r\n"
    fwd = b"GET / HTTP/1.1\r\nHost: a.b\r\nAccept: */*\r\n\r\n"
    expected = ProxyRequest("GET", "a.b", 80, "http://a.b/", (("Accept", "*/*"),), False, fwd)
    tr(raw, expected, auth=True)
    connect_raw = b"CONNECT a.b:443 HTTP/1.1\r\n" + GOOD_AUTH + b"\r\n"
    tr(connect_raw, connect("a.b:443", "a.b", 443), auth=True)


def test_auth_scheme_is_case_insensitive() -> None:
    token = basic(USER, PASSWORD).split(" ", 1)[1]
    raw = f"CONNECT a.b:443 HTTP/1.1\r\nproxy-authorization: bAsIc {token}\r\n\r\n".encode()
    tr(raw, connect("a.b:443", "a.b", 443), auth=True)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        (b"", "proxy authentication required"),
        (GOOD_AUTH + GOOD_AUTH, "proxy authentication required"),
        (f"Proxy-Authorization: {basic(USER, 'wrong')}\r\n".encode(), "proxy credentials rejected"),
        (
            f"Proxy-Authorization: {basic('bob', PASSWORD)}\r\n".encode(),
            "proxy credentials rejected",
        ),
        (
            b"Proxy-Authorization: Basic " + base64.b64encode(b"nocolon") + b"\r\n",
            "proxy credentials rejected",
        ),
        (b"Proxy-Authorization: Basic !!notbase64!!\r\n", "malformed proxy credentials"),
        (b"Proxy-Authorization: Basic\r\n", "proxy credentials rejected"),
        (b"Proxy-Authorization: Bearer abc\r\n", "proxy authentication required (Basic)"),
        (
            b"Authorization: " + basic(USER, PASSWORD).encode() + b"\r\n",
            "proxy authentication required",
        ),
    ],
)
def test_auth_failures_are_407(field: bytes, reason: str) -> None:
    err = tr_error(b"CONNECT a.b:443 HTTP/1.1\r\n" + field + b"\r\n", 407, reason, auth=True)
    assert err.response() == (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b'Proxy-Authenticate: Basic realm="resip"\r\n'
        b"Connection: close\r\n" + f"Content-Length: {len(reason) + 1}\r\n\r\n{reason}\n".encode()
    )


def test_latin1_credentials_are_accepted() -> None:
    server = HttpProxyServer(credentials=lambda u, p: (u, p) == ("jürgen", "pw"))
    token = base64.b64encode("jürgen:pw".encode("latin-1")).decode()
    server.receive_data(
        f"CONNECT a.b:443 HTTP/1.1\r\nProxy-Authorization: Basic {token}\r\n\r\n".encode()
    )
    assert isinstance(server.next_event(), ProxyRequest)


def test_credentials_never_in_any_repr() -> None:
    seen: list[object] = []
    for field in (
        GOOD_AUTH,
        GOOD_AUTH.replace(b"Basic ", b"Basic x"),
        f"Proxy-Authorization: {basic(USER, 'x' + PASSWORD)}\r\n".encode(),
    ):
        for head in (b"CONNECT a.b:443 HTTP/1.1\r\n", b"GET http://a.b/ HTTP/1.1\r\n"):
            server = new(auth=True)
            server.receive_data(head + field + b"Authorization: Basic T1JJR0lOU0VDUkVU\r\n\r\n")
            event = server.next_event()
            seen += [event, server]
            if isinstance(event, HttpError):
                seen.append(event.response())
    assert any(isinstance(e, ProxyRequest) for e in seen)
    assert any(isinstance(e, HttpError) for e in seen)
    text = " ".join(repr(e) + str(e) for e in seen)
    token = basic(USER, PASSWORD).split(" ", 1)[1]
    for secret in ("USERSECRET", "PASSSECRET", "hunter2", token, "T1JJR0lOU0VDUkVU"):
        assert secret not in text
    for item in seen:
        if isinstance(item, ProxyRequest):
            assert all(n.lower() != "proxy-authorization" for n, _ in item.headers)
            assert b"PASSSECRET" not in item.forward_head


# ---------------------------------------------------------------------------
# EOF and API misuse
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "partial", [b"", b"CONN", b"CONNECT a.b:443 HTTP/1.1\r\n", b"CONNECT a.b:443 HTTP/1.1\r\n\r"]
)
def test_eof_mid_head(partial: bytes) -> None:
    server = new()
    if partial:
        server.receive_data(partial)
        assert server.next_event() == NEED_DATA
    server.receive_data(b"")
    assert server.next_event() == HttpError(
        400, "client closed the connection before the request head was complete"
    )


def test_trailing_data_is_empty_until_the_head_is_complete() -> None:
    server = new()
    server.receive_data(b"CONNECT a.b:443 HTTP/1.1\r\n")
    assert server.trailing_data() == b""


# ---------------------------------------------------------------------------
# response()
# ---------------------------------------------------------------------------


def test_response_bytes() -> None:
    assert response(502, "Bad Gateway", headers=[("X-A", "1")], body=b"no\n") == (
        b"HTTP/1.1 502 Bad Gateway\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nno\n"
    )
    assert HttpError(400, "this is a proxy").response() == (
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Connection: close\r\nContent-Length: 16\r\n\r\nthis is a proxy\n"
    )
    assert HttpError(599, "odd").response().startswith(b"HTTP/1.1 599 Error\r\n")


@pytest.mark.parametrize(
    ("status", "reason", "headers"),
    [
        (200, "OK\r\nX-Injected: 1", ()),
        (200, "OK", (("X", "v\r\nInjected: 1"),)),
        (200, "OK", (("X", "v\nInjected: 1"),)),
        (200, "OK", (("X", "a\x00"),)),
        (200, "OK", (("Bad Name", "v"),)),
        (200, "OK", (("Bäd", "v"),)),
        (99, "Low", ()),
        (1000, "High", ()),
    ],
)
def test_response_refuses_injection(
    status: int, reason: str, headers: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(ValueError):
        response(status, reason, headers=headers)


# ---------------------------------------------------------------------------
# Hypothesis
# ---------------------------------------------------------------------------


@FUZZ
@given(
    st.booleans(),
    st.lists(st.binary(max_size=60), max_size=8),
    st.sampled_from([b"", b"CONNECT ", b"GET http://", b"GET http://a.b/ HTTP/1.1\r\n"]),
)
def test_random_bytes_only_produce_events(auth: bool, chunks: list[bytes], prefix: bytes) -> None:
    server = new(auth=auth, max_head=256)
    for chunk in [prefix, *chunks, b""]:
        if server.state is HttpState.DONE:
            break
        if chunk or prefix:  # the very first empty chunk would be EOF
            server.receive_data(chunk)
        event = server.next_event()
        assert isinstance(event, ProxyRequest | HttpError) or event == NEED_DATA
        if isinstance(event, HttpError):
            assert event.response().startswith(b"HTTP/1.1 ")


_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)
_field = st.tuples(
    st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True),
    st.from_regex(r"[ -~]{0,40}", fullmatch=True).map(str.strip),
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    # Empty chunks are left out: receive_data(b"") means EOF.
    return [data[a:b] for a, b in itertools.pairwise([0, *points, len(data)]) if b > a]


@SPLITS
@given(
    st.booleans(),
    st.booleans(),
    _name,
    st.integers(1, 65535),
    st.lists(_field, max_size=5),
    st.lists(st.integers(0, 3000), max_size=12),
    st.binary(max_size=40),
)
def test_random_split_gives_the_same_request(
    is_connect: bool,
    auth: bool,
    host: str,
    port: int,
    fields: list[tuple[str, str]],
    cuts: list[int],
    trail: bytes,
) -> None:
    if is_connect:
        line = f"CONNECT {host}:{port} HTTP/1.1\r\n"
    else:
        line = f"GET http://{host}:{port}/p?q HTTP/1.1\r\n"
    extra = "".join(f"{n}: {v}\r\n" for n, v in fields)
    data = (line + extra).encode() + (GOOD_AUTH if auth else b"") + b"\r\n"
    whole = new(auth=auth)
    whole.receive_data(data + trail)
    expected = whole.next_event()
    assert isinstance(expected, ProxyRequest)
    assert (expected.host, expected.port, expected.is_connect) == (host, port, is_connect)
    assert expected.headers == tuple(fields)

    server = new(auth=auth)
    events = []
    chunks = _split(data + trail, cuts)
    for i, chunk in enumerate(chunks):
        server.receive_data(chunk)
        events.append(server.next_event())
        if server.state is HttpState.DONE:
            # From here the caller splices: later chunks go straight to the target.
            rest = b"".join(chunks[i + 1 :])
            break
    assert events[:-1] == [NEED_DATA] * (len(events) - 1)
    assert events[-1] == expected
    assert isinstance(events[-1], ProxyRequest)
    assert events[-1].forward_head == expected.forward_head
    assert server.trailing_data() + rest == whole.trailing_data() == trail

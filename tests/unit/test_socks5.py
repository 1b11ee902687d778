"""Tests for resip_proxy.socks5: the pure SOCKS5 server codec (RFC 1928/1929).

Every success case goes through ``tr()`` (h11's test_io.py pattern): the whole
buffer at once, one byte at a time (``NEED_DATA`` until the last byte), and with
trailing data that must come out intact. Wire bytes are spelled out in hex on
purpose: a layout change must break this file.
"""

from __future__ import annotations

import itertools
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.errors import LocalProtocolError
from resip_proxy.socks5 import (
    MAX_HANDSHAKE_BUFFER,
    NEED_DATA,
    Host,
    ProxyProtocolError,
    Reply,
    Socks5Command,
    Socks5Error,
    Socks5Request,
    Socks5Server,
    Socks5State,
    UdpDatagram,
    encode_reply,
    encode_udp_datagram,
    parse_udp_datagram_untrusted,
)

h = bytes.fromhex
FUZZ = settings(max_examples=200, deadline=None)
SPLITS = settings(max_examples=150, deadline=None)

USER = "alice-USERSECRET"
PASSWORD = "hunter2-PASSSECRET"
TRAIL = b"\x16\x03\x01 optimistic ClientHello"

NOAUTH_GREETING = h("050100")
AUTH_GREETING = h("05020002")
FAIL_REPLY = h("05010001000000000000")


def check(user: str, password: str) -> bool:
    return (user, password) == (USER, PASSWORD)


def auth_msg(user: bytes, password: bytes) -> bytes:
    return bytes((1, len(user))) + user + bytes((len(password),)) + password


GOOD_AUTH = auth_msg(USER.encode(), PASSWORD.encode())


def req(cmd: int, atyp_addr: bytes, port: int) -> bytes:
    return bytes((5, cmd, 0)) + atyp_addr + port.to_bytes(2, "big")


def domain(name: bytes) -> bytes:
    return bytes((3, len(name))) + name


def new(auth: bool) -> Socks5Server:
    return Socks5Server(credentials=check if auth else None)


def feed_whole(data: bytes, auth: bool) -> tuple[Socks5Server, object, bytes]:
    server = new(auth)
    server.receive_data(data)
    return server, server.next_event(), server.data_to_send()


def feed_bytewise(data: bytes, auth: bool) -> tuple[Socks5Server, list[object], bytes]:
    server = new(auth)
    events: list[object] = []
    out = b""
    for i in range(len(data)):
        server.receive_data(data[i : i + 1])
        out += server.data_to_send()
        events.append(server.next_event())
    return server, events, out


def tr(data: bytes, expected: Socks5Request, out: bytes, *, auth: bool = False) -> None:
    """Whole buffer, byte at a time, and with trailing data, all giving ``expected``."""
    server, event, sent = feed_whole(data, auth)
    assert event == expected
    assert sent == out
    assert server.state is Socks5State.REPLY

    server, events, sent = feed_bytewise(data, auth)
    assert events[:-1] == [NEED_DATA] * (len(data) - 1)
    assert events[-1] == expected
    assert sent == out

    server, event, sent = feed_whole(data + TRAIL, auth)
    assert event == expected
    assert sent == out
    assert server.trailing_data() == TRAIL
    assert server.reply(Reply.SUCCEEDED) == h("05000001000000000000")
    assert server.state is Socks5State.DONE
    assert server.trailing_data() == TRAIL


def tr_error(data: bytes, expected: Socks5Error, out: bytes, *, auth: bool = False) -> None:
    """Errors: whole buffer and byte at a time reach the same error and the same output."""
    server, event, sent = feed_whole(data, auth)
    assert event == expected
    assert sent == out
    assert server.state is Socks5State.FAILED
    assert server.next_event() == expected  # sticky
    assert server.trailing_data() == b""

    server, events, sent = feed_bytewise(data, auth)
    assert events[-1] == expected
    assert sent == out
    first = events.index(expected)
    assert events[:first] == [NEED_DATA] * first


# ---------------------------------------------------------------------------
# Successful handshakes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addr", "port", "host"),
    [
        (h("01 7f000001"), 80, IPv4Address("127.0.0.1")),
        (h("01 08080808"), 65535, IPv4Address("8.8.8.8")),
        (b"\x04" + IPv6Address("2001:db8::1").packed, 443, IPv6Address("2001:db8::1")),
        (b"\x04" + IPv6Address("::ffff:127.0.0.1").packed, 22, IPv6Address("::ffff:127.0.0.1")),
        (domain(b"example.com"), 443, "example.com"),
        (domain(b"xn--bcher-kva.example"), 1, "xn--bcher-kva.example"),
        (domain(b"Under_score-1.Example."), 8080, "Under_score-1.Example."),
        # IP literals sent as names stay str: the caller decides (and its ACL resolves).
        (domain(b"127.0.0.1"), 80, "127.0.0.1"),
        (domain(b"::1"), 80, "::1"),
        (domain(b"a"), 80, "a"),
        (domain(b"a" * 255), 80, "a" * 255),
    ],
)
def test_connect_without_auth(addr: bytes, port: int, host: Host) -> None:
    data = NOAUTH_GREETING + req(1, addr, port)
    tr(data, Socks5Request(Socks5Command.CONNECT, host, port), h("0500"))


def test_connect_known_bytes() -> None:
    data = h("05 02 00 01") + h("05 01 00 03 0b") + b"example.com" + h("01bb")
    tr(data, Socks5Request(Socks5Command.CONNECT, "example.com", 443), h("0500"))


def test_connect_with_auth() -> None:
    data = AUTH_GREETING + GOOD_AUTH + req(1, h("01 01020304"), 443)
    expected = Socks5Request(Socks5Command.CONNECT, IPv4Address("1.2.3.4"), 443)
    tr(data, expected, h("0502 0100"), auth=True)


def test_auth_password_of_255_and_unicode_username() -> None:
    user, password = "ü" * 127, "p" * 255
    server = Socks5Server(credentials=lambda u, p: (u, p) == (user, password))
    server.receive_data(AUTH_GREETING + auth_msg(user.encode(), password.encode()))
    assert server.data_to_send() == h("0502 0100")
    assert server.state is Socks5State.REQUEST
    assert server.next_event() == NEED_DATA


def test_bind_is_parsed_and_answered_command_not_supported() -> None:
    data = NOAUTH_GREETING + req(2, h("01 0a000001"), 5000)
    tr(data, Socks5Request(Socks5Command.BIND, IPv4Address("10.0.0.1"), 5000), h("0500"))
    server, event, _ = feed_whole(data, auth=False)
    assert isinstance(event, Socks5Request)
    assert server.reply(Reply.COMMAND_NOT_SUPPORTED) == h("05070001000000000000")
    assert server.state is Socks5State.FAILED


@pytest.mark.parametrize(
    ("addr", "port", "host"),
    [
        (h("01 00000000"), 0, IPv4Address(0)),  # RFC 1928 §7: client may not know yet
        (b"\x04" + bytes(16), 0, IPv6Address(0)),
        (h("01 c0a80001"), 5353, IPv4Address("192.168.0.1")),
        (domain(b"client.local"), 0, "client.local"),
    ],
)
def test_udp_associate_is_parsed_including_zero_address(addr: bytes, port: int, host: Host) -> None:
    data = NOAUTH_GREETING + req(3, addr, port)
    tr(data, Socks5Request(Socks5Command.UDP_ASSOCIATE, host, port), h("0500"))


def test_udp_associate_reply_carries_relay_address() -> None:
    server, _, _ = feed_whole(NOAUTH_GREETING + req(3, h("01 00000000"), 0), auth=False)
    assert server.reply(Reply.SUCCEEDED, (IPv4Address("127.0.0.1"), 40000)) == h(
        "05000001 7f000001 9c40"
    )
    v6 = Socks5Server()
    v6.receive_data(NOAUTH_GREETING + req(3, h("01 00000000"), 0))
    assert v6.reply(Reply.SUCCEEDED, (IPv6Address("::1"), 1)) == (
        h("05000004") + IPv6Address("::1").packed + h("0001")
    )


@pytest.mark.parametrize("code", list(Reply))
def test_every_reply_code(code: Reply) -> None:
    server, event, _ = feed_whole(NOAUTH_GREETING + req(1, domain(b"x.org"), 80) + TRAIL, False)
    assert isinstance(event, Socks5Request)
    assert server.reply(code) == bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0))
    assert encode_reply(code) == bytes((5, code, 0, 1, 0, 0, 0, 0, 0, 0))
    if code is Reply.SUCCEEDED:
        assert server.state is Socks5State.DONE
        assert server.trailing_data() == TRAIL
    else:
        assert server.state is Socks5State.FAILED
        assert server.next_event() == Socks5Error(code, f"request refused with {code.name}")
        assert server.trailing_data() == b""


def test_pipelined_bytes_while_waiting_for_reply_are_kept() -> None:
    server, event, _ = feed_whole(NOAUTH_GREETING + req(1, domain(b"a.b"), 443) + b"ab", False)
    assert isinstance(event, Socks5Request)
    server.receive_data(b"cd")
    server.receive_data(b"")  # EOF while connecting: the caller sees it on its socket
    big = bytes(range(256)) * 256  # far above MAX_HANDSHAKE_BUFFER: not handshake bytes
    server.receive_data(big)
    server.reply(Reply.SUCCEEDED)
    assert server.trailing_data() == b"abcd" + big


def test_greeting_reply_is_sent_before_the_request_arrives() -> None:
    server = Socks5Server()
    server.receive_data(h("0503 00 01 02"))
    assert server.data_to_send() == h("0500")
    assert server.data_to_send() == b""
    assert server.state is Socks5State.REQUEST
    assert server.next_event() == NEED_DATA


# ---------------------------------------------------------------------------
# Greeting and auth failures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("greeting", "auth"),
    [
        (h("050102"), False),  # only user/pass offered, no auth configured
        (h("050100"), True),  # auth configured, client tries to skip it
        (h("0502 01 80"), True),
        (h("0500"), False),  # NMETHODS 0: nothing acceptable
        (h("05ff") + bytes(range(1, 256)), False),
    ],
)
def test_no_acceptable_method(greeting: bytes, auth: bool) -> None:
    expected = Socks5Error(None, "client offers no acceptable authentication method")
    tr_error(greeting + req(1, h("01 01010101"), 80), expected, h("05ff"), auth=auth)


def test_all_255_methods_offered_selects_no_auth() -> None:
    tr(
        h("05ff") + bytes(range(255)) + req(1, h("01 01010101"), 80),
        Socks5Request(Socks5Command.CONNECT, IPv4Address("1.1.1.1"), 80),
        h("0500"),
    )


@pytest.mark.parametrize(
    "first", [h("04"), h("00"), b"GET / HTTP/1.1\r\n", b"CONNECT a:1 HTTP/1.1\r\n", h("ff05")]
)
def test_not_socks5_gets_no_reply(first: bytes) -> None:
    server, event, out = feed_whole(first, auth=False)
    assert isinstance(event, Socks5Error)
    assert event.reply is None
    assert event.close
    assert "not a SOCKS5 greeting" in event.message
    assert out == b""
    server.receive_data(b"more")  # ignored once failed
    assert server.next_event() == event


def test_wrong_password() -> None:
    data = AUTH_GREETING + auth_msg(USER.encode(), b"wrong") + req(1, h("01 01010101"), 80)
    tr_error(data, Socks5Error(None, "username/password rejected"), h("0502 0101"), auth=True)


def test_wrong_username() -> None:
    data = AUTH_GREETING + auth_msg(b"bob", PASSWORD.encode())
    tr_error(data, Socks5Error(None, "username/password rejected"), h("0502 0101"), auth=True)


def test_password_not_utf8_is_rejected_without_calling_back() -> None:
    calls: list[tuple[str, str]] = []

    def spy(user: str, password: str) -> bool:
        calls.append((user, password))
        return True

    server = Socks5Server(credentials=spy)
    server.receive_data(AUTH_GREETING + auth_msg(b"u", b"\xff\xfe"))
    assert server.data_to_send() == h("0502 0101")
    assert server.next_event() == Socks5Error(None, "username/password rejected")
    assert calls == []


@pytest.mark.parametrize(
    ("msg", "why"),
    [
        (h("02 01 75 01 70"), "version"),
        (h("00"), "version"),
        (h("05 01 00"), "version"),  # a SOCKS5 request where auth was due
        (h("01 00 01 70"), "empty username"),
        (h("01 01 75 00"), "empty password"),
    ],
)
def test_malformed_auth(msg: bytes, why: str) -> None:
    expected = Socks5Error(None, f"malformed username/password request ({why})")
    tr_error(AUTH_GREETING + msg, expected, h("0502 0101"), auth=True)


# ---------------------------------------------------------------------------
# Request failures
# ---------------------------------------------------------------------------


def _reply(code: int) -> bytes:
    return bytes((5, code)) + FAIL_REPLY[2:]


@pytest.mark.parametrize(
    ("request_bytes", "code", "message"),
    [
        (h("04 01 00 01 01010101 0050"), 1, "request version byte 0x04, not 5"),
        (h("05 01 01 01 01010101 0050"), 1, "request RSV byte is not zero"),
        (h("05 01 ff 01 01010101 0050"), 1, "request RSV byte is not zero"),
        (h("05 00 00 01 01010101 0050"), 7, "unknown command 0x00"),
        (h("05 04 00 01 01010101 0050"), 7, "unknown command 0x04"),
        (h("05 ff 00 01 01010101 0050"), 7, "unknown command 0xff"),
        (h("05 01 00 02 01010101 0050"), 8, "address type 2 not supported"),
        (h("05 01 00 00 01010101 0050"), 8, "address type 0 not supported"),
        (h("05 01 00 05 01010101 0050"), 8, "address type 5 not supported"),
        (h("05 03 00 ff"), 8, "address type 255 not supported"),
        (h("05 01 00 03 00 0050"), 1, "zero-length domain name"),
        (h("05 01 00 01 01010101 0000"), 1, "CONNECT to port 0"),
        (h("05 01 00 03 00"), 1, "zero-length domain name"),
    ],
)
def test_request_errors(request_bytes: bytes, code: int, message: str) -> None:
    tr_error(
        NOAUTH_GREETING + request_bytes, Socks5Error(Reply(code), message), h("0500") + _reply(code)
    )


@pytest.mark.parametrize(
    "name",
    [
        b"exa\x00mple.com",
        b"example.com\x00",
        b"bad host",
        b"tab\there",
        b"new\nline",
        b"\x7f",
        b"caf\xc3\xa9.example",  # UTF-8: must arrive IDNA-encoded
        b"\xff",
        b"a/b",
        b"user@host",
        b"[::1]",
        b":::::",  # IPv6-ish characters but not an address
    ],
)
def test_request_with_malformed_domain(name: bytes) -> None:
    data = NOAUTH_GREETING + req(1, domain(name), 80)
    tr_error(
        data, Socks5Error(Reply.GENERAL_FAILURE, "malformed host name"), h("0500") + FAIL_REPLY
    )


def test_unknown_atyp_0x02_replies_0x08_immediately() -> None:
    server = Socks5Server()
    server.receive_data(NOAUTH_GREETING + h("05010002"))
    assert server.data_to_send() == h("0500 05080001000000000000")
    event = server.next_event()
    assert isinstance(event, Socks5Error)
    assert event.reply is Reply.ADDRESS_TYPE_NOT_SUPPORTED


# ---------------------------------------------------------------------------
# Truncation and EOF
# ---------------------------------------------------------------------------

_FULL_NOAUTH = NOAUTH_GREETING + req(1, domain(b"example.com"), 443)
_FULL_AUTH = AUTH_GREETING + GOOD_AUTH + req(1, h("04") + bytes(16), 443)


@pytest.mark.parametrize(
    ("data", "auth"),
    [(_FULL_NOAUTH[:n], False) for n in range(len(_FULL_NOAUTH))]
    + [(_FULL_AUTH[:n], True) for n in range(len(_FULL_AUTH))],
)
def test_every_truncation_needs_data_then_eof_is_an_error(data: bytes, auth: bool) -> None:
    server = new(auth)
    if data:  # b"" would be EOF already
        server.receive_data(data)
    assert server.next_event() == NEED_DATA
    assert server.trailing_data() == b""
    server.data_to_send()
    server.receive_data(b"")
    assert server.next_event() == Socks5Error(
        None, "client closed the connection during the SOCKS5 handshake"
    )
    assert server.data_to_send() == b""
    assert server.state is Socks5State.FAILED


def test_handshake_buffer_stays_bounded_by_parsing() -> None:
    # Handshake messages are length-prefixed and at most 513 bytes, and parsing is
    # eager: a chunk far larger than the cap is either parsed or rejected, never kept.
    server = Socks5Server(credentials=check)
    server.receive_data(
        AUTH_GREETING + h("01ff") + b"u" * 255 + h("ff") + b"p" * (MAX_HANDSHAKE_BUFFER * 4)
    )
    assert server.data_to_send() == h("0502 0101")
    assert server.state is Socks5State.FAILED


# ---------------------------------------------------------------------------
# API misuse
# ---------------------------------------------------------------------------


def test_reply_before_request_is_a_local_error() -> None:
    server = Socks5Server()
    with pytest.raises(LocalProtocolError):
        server.reply(Reply.SUCCEEDED)
    server.receive_data(NOAUTH_GREETING)
    with pytest.raises(LocalProtocolError):
        server.reply(Reply.SUCCEEDED)


def test_misuse_after_done() -> None:
    server, event, _ = feed_whole(_FULL_NOAUTH, auth=False)
    assert isinstance(event, Socks5Request)
    with pytest.raises(LocalProtocolError):
        server.next_event()  # the request is returned once
    server.reply(Reply.SUCCEEDED)
    with pytest.raises(LocalProtocolError):
        server.reply(Reply.SUCCEEDED)
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"x")
    with pytest.raises(LocalProtocolError):
        server.next_event()


def test_reply_rejects_bad_bind_port() -> None:
    server, _, _ = feed_whole(_FULL_NOAUTH, auth=False)
    with pytest.raises(ValueError, match="port"):
        server.reply(Reply.SUCCEEDED, (IPv4Address(0), 65536))
    assert server.state is Socks5State.REPLY


# ---------------------------------------------------------------------------
# Credentials never leak
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth_bytes",
    [
        GOOD_AUTH,
        auth_msg(USER.encode(), b"wrong-" + PASSWORD.encode()),
        auth_msg(b"x" + USER.encode(), PASSWORD.encode()),
        auth_msg(USER.encode(), PASSWORD.encode() + b"\xff"),
    ],
)
def test_credentials_never_in_any_repr(auth_bytes: bytes) -> None:
    data = AUTH_GREETING + auth_bytes + req(1, domain(b"example.com"), 443)
    seen: list[object] = []
    for split in (len(data), 1):
        server = Socks5Server(credentials=check)
        for i in range(0, len(data), split):
            server.receive_data(data[i : i + split])
            seen.append(server.next_event())
        seen.append(server)
        if server.state is Socks5State.REPLY:
            server.reply(Reply.NOT_ALLOWED)
            seen.append(server.next_event())
    assert any(isinstance(e, Socks5Request | Socks5Error) for e in seen)
    text = " ".join(repr(e) + str(e) for e in seen)
    for secret in ("USERSECRET", "PASSSECRET", "hunter2", "alice"):
        assert secret not in text


# ---------------------------------------------------------------------------
# Hypothesis: never raises; any split gives the same result
# ---------------------------------------------------------------------------


@FUZZ
@given(
    st.booleans(),
    st.lists(st.binary(max_size=40), max_size=8),
    st.sampled_from([b"", NOAUTH_GREETING, AUTH_GREETING, AUTH_GREETING + GOOD_AUTH]),
    st.sampled_from(list(Reply)),
)
def test_random_bytes_only_produce_events(
    auth: bool, chunks: list[bytes], prefix: bytes, code: Reply
) -> None:
    server = new(auth)
    for chunk in [prefix, *chunks, b""]:
        if chunk or prefix:  # the very first empty chunk would be EOF
            server.receive_data(chunk)
        assert isinstance(server.data_to_send(), bytes)
        event = server.next_event()
        assert isinstance(event, Socks5Request | Socks5Error) or event == NEED_DATA
        if isinstance(event, Socks5Request):
            assert server.reply(code)[:2] == bytes((5, code))
            assert server.state is (
                Socks5State.DONE if code is Reply.SUCCEEDED else Socks5State.FAILED
            )
            assert isinstance(server.trailing_data(), bytes)
            return
        if isinstance(event, Socks5Error):
            assert server.state is Socks5State.FAILED
            return


_name = st.from_regex(r"[A-Za-z0-9._-]{1,255}", fullmatch=True)
_host: st.SearchStrategy[Host] = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), _name)


def _encode_host(host: Host) -> bytes:
    if isinstance(host, IPv4Address):
        return b"\x01" + host.packed
    if isinstance(host, IPv6Address):
        return b"\x04" + host.packed
    return domain(host.encode())


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    # Empty chunks are left out: receive_data(b"") means EOF.
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@SPLITS
@given(
    st.booleans(),
    st.sampled_from(list(Socks5Command)),
    _host,
    st.integers(1, 65535),
    st.lists(st.integers(0, 2000), max_size=12),
    st.binary(max_size=20),
)
def test_random_split_gives_the_same_request(
    auth: bool, cmd: Socks5Command, host: Host, port: int, cuts: list[int], trail: bytes
) -> None:
    head = (AUTH_GREETING + GOOD_AUTH) if auth else NOAUTH_GREETING
    data = head + req(cmd, _encode_host(host), port)
    expected = Socks5Request(cmd, host, port)
    server = new(auth)
    events = []
    out = b""
    for chunk in _split(data + trail, cuts):
        if server.state is Socks5State.REPLY:
            server.receive_data(chunk)
            continue
        server.receive_data(chunk)
        out += server.data_to_send()
        events.append(server.next_event())
    assert [e for e in events if e != NEED_DATA] == [expected]
    assert out == (h("0502 0100") if auth else h("0500"))
    server.reply(Reply.SUCCEEDED)
    assert server.trailing_data() == trail


# ---------------------------------------------------------------------------
# UDP ASSOCIATE datagrams (RFC 1928 §7)
# ---------------------------------------------------------------------------


def test_udp_known_bytes() -> None:
    assert encode_udp_datagram(IPv4Address("1.2.3.4"), 80, b"x") == h("000000 01 01020304 0050 78")
    assert encode_udp_datagram("ab.c", 53, b"") == h("000000 03 04 61622e63 0035")
    assert encode_udp_datagram(IPv6Address("::1"), 65535, b"yz") == (
        h("000000 04") + IPv6Address("::1").packed + h("ffff") + b"yz"
    )
    assert parse_udp_datagram_untrusted(h("000000 01 01020304 0050 78")) == UdpDatagram(
        IPv4Address("1.2.3.4"), 80, b"x", 0
    )


def test_udp_frag_is_returned_for_the_caller_to_drop() -> None:
    dgram = parse_udp_datagram_untrusted(h("000081 03 01 61 0050") + b"payload")
    assert dgram == UdpDatagram("a", 80, b"payload", 0x81)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "truncated"),
        (h("000000"), "truncated"),
        (h("000100 01 01020304 0050"), "RSV"),
        (h("010000 01 01020304 0050"), "RSV"),
        (h("000000 02 01020304 0050"), "address type 2"),
        (h("000000 00 01020304 0050"), "address type 0"),
        (h("000000 05"), "address type 5"),
        (h("000000 01 010203"), "truncated"),
        (h("000000 01 01020304 00"), "truncated"),
        (h("000000 04") + bytes(15), "truncated"),
        (h("000000 04") + bytes(17), "truncated"),
        (h("000000 03"), "truncated"),
        (h("000000 03 00 0050"), "zero-length"),
        (h("000000 03 05 6162 0050"), "truncated"),
        (h("000000 03 03 61 00 62 0050"), "malformed host name"),
        (h("000000 03 02 c3a9 0050"), "malformed host name"),
    ],
)
def test_udp_malformed(data: bytes, match: str) -> None:
    with pytest.raises(ProxyProtocolError, match=match):
        parse_udp_datagram_untrusted(data)


@pytest.mark.parametrize(
    ("host", "port"),
    [("bad host", 1), ("café", 1), ("", 1), ("a" * 256, 1), ("ok", -1), ("ok", 65536)],
)
def test_udp_encode_rejects_what_the_wire_cannot_carry(host: str, port: int) -> None:
    with pytest.raises(ValueError):
        encode_udp_datagram(host, port, b"")


@FUZZ
@given(_host, st.integers(0, 65535), st.binary(max_size=600))
def test_udp_round_trip(host: Host, port: int, data: bytes) -> None:
    assert parse_udp_datagram_untrusted(encode_udp_datagram(host, port, data)) == UdpDatagram(
        host, port, data, 0
    )


@FUZZ
@given(st.binary(max_size=300))
def test_udp_parser_raises_only_protocol_errors(data: bytes) -> None:
    try:
        dgram = parse_udp_datagram_untrusted(data)
    except ProxyProtocolError:
        return
    assert 0 <= dgram.port <= 65535
    assert len(dgram.data) < len(data)

"""Tests for resip.core.wire: packed integers, records, command messages (PROTOCOL.md §1, §4, §5).

Golden hex strings are written out literally on purpose: any change to a byte
layout must break this file.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.errors import WireError
from resip.core.wire import (
    INNER_PREFIX,
    MAX_ACK_ITEMS,
    Ack,
    AckGroup,
    AddrType,
    Close,
    Cmd,
    Command,
    Credit,
    KeepAlive,
    PathChallenge,
    PathResponse,
    Proto,
    Record,
    Start,
    Started,
    Stop,
    Terminate,
    ack_from_ranges,
    encode_command,
    encode_inner,
    encode_record,
    int_bits,
    pack_int,
    parse_command_untrusted,
    parse_inner_untrusted,
    record_overhead,
    unpack_int_untrusted,
)
from tests.unit.wire_strategies import (
    acks,
    canonical_ranges,
    channels,
    codes,
    hostnames,
    ips,
    path_data,
    reasons,
    starts,
    u64s,
)

FUZZ = settings(max_examples=200, deadline=None)
ROUNDTRIP = settings(max_examples=150, deadline=None)

U32 = (1 << 32) - 1
U64 = (1 << 64) - 1

h = bytes.fromhex


# ---------------------------------------------------------------------------
# Packed integers (§1)


@pytest.mark.parametrize("size", range(1, 9))
def test_packed_int_boundaries_for_every_size(size: int) -> None:
    lo = 0 if size == 1 else 1 << (8 * (size - 1))
    hi = (1 << (8 * size)) - 1
    for value in (lo, hi):
        assert int_bits(value) == size - 1
        packed = pack_int(value)
        assert len(packed) == size
        assert unpack_int_untrusted(packed, 0, size) == value
        assert unpack_int_untrusted(b"\xaa" + packed + b"\xbb", 1, size) == value
    if size < 8:
        assert int_bits(hi + 1) == size


def test_packed_int_known_bytes() -> None:
    assert pack_int(0) == b"\x00"
    assert pack_int(255) == b"\xff"
    assert pack_int(256) == b"\x01\x00"
    assert pack_int(10000) == h("2710")
    assert pack_int(U64) == b"\xff" * 8


@pytest.mark.parametrize("value", [-1, 1 << 64, 1 << 70])
def test_int_bits_rejects_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match=r"0\.\.2\^64-1"):
        int_bits(value)


@pytest.mark.parametrize("size", range(2, 9))
def test_overlong_packed_int_is_malformed(size: int) -> None:
    buf = b"\x00" * (size - 1) + b"\x05"
    with pytest.raises(WireError, match="overlong"):
        unpack_int_untrusted(buf, 0, size)


def test_single_zero_byte_is_not_overlong() -> None:
    assert unpack_int_untrusted(b"\x00", 0, 1) == 0


@pytest.mark.parametrize(
    ("buf", "offset", "size"),
    [(b"", 0, 1), (b"\x01", 0, 2), (b"\x01\x02", 1, 2), (b"\x01", 5, 1), (b"\x01", 0, 0)],
)
def test_packed_int_truncation(buf: bytes, offset: int, size: int) -> None:
    with pytest.raises(WireError):
        unpack_int_untrusted(buf, offset, size)


@FUZZ
@given(st.integers(0, U64))
def test_packed_int_roundtrip(value: int) -> None:
    packed = pack_int(value)
    assert len(packed) == int_bits(value) + 1
    assert unpack_int_untrusted(packed, 0, len(packed)) == value


# ---------------------------------------------------------------------------
# Records (§4)


@st.composite
def records(draw: st.DrawFn, from_server: bool) -> Record:
    channel = draw(st.one_of(st.just(0), st.integers(1, 300), st.integers(0, U32)))
    low = 0 if channel == 0 else 1
    pnum = draw(st.one_of(st.integers(low, 70000), st.integers(low, U64)))
    fragment = False if pnum == 0 else draw(st.booleans())
    return Record(
        channel=channel,
        pnum=pnum,
        data=draw(st.binary(max_size=300)),
        from_server=from_server,
        compressed=draw(st.booleans()),
        fragment=fragment,
    )


@st.composite
def record_lists(draw: st.DrawFn) -> tuple[bool, list[Record]]:
    from_server = draw(st.booleans())
    return from_server, draw(st.lists(records(from_server), max_size=6))


@ROUNDTRIP
@given(record_lists(), st.integers(0, 3000))
def test_inner_roundtrip(case: tuple[bool, list[Record]], pad_to: int) -> None:
    from_server, recs = case
    encoded = [encode_record(r) for r in recs]
    for rec, enc in zip(recs, encoded, strict=True):
        assert len(enc) == record_overhead(rec.channel, rec.pnum) + len(rec.data)
    inner = encode_inner(encoded, pad_to=pad_to)
    body = sum(len(e) for e in encoded)
    assert len(inner) == max(pad_to, INNER_PREFIX + body)
    assert inner[INNER_PREFIX + body :] == bytes(len(inner) - INNER_PREFIX - body)
    assert parse_inner_untrusted(inner, from_server=from_server) == recs


def test_record_golden_bytes() -> None:
    rec = Record(channel=1, pnum=1, data=b"LOGIN\n", from_server=False)
    assert encode_record(rec) == h("0001010006") + b"LOGIN\n"
    srv = Record(channel=300, pnum=0x10000, data=b"", from_server=True, compressed=True)
    assert encode_record(srv) == h("ca012c0100000000")
    frag = Record(channel=0, pnum=2, data=b"\x04", from_server=False, fragment=True)
    assert encode_record(frag) == h("2000020001") + b"\x04"
    assert record_overhead(1, 1) == 5
    assert record_overhead(300, 0x10000) == 8
    inner = encode_inner([encode_record(rec)], pad_to=16)
    assert inner == h("000b") + h("0001010006") + b"LOGIN\n" + bytes(3)


def test_inner_ignores_padding_values_and_allows_no_records() -> None:
    rec = Record(channel=0, pnum=0, data=b"\x04\x00", from_server=True)
    inner = encode_inner([encode_record(rec)]) + b"\xff\x80\x00\x12"
    assert parse_inner_untrusted(inner, from_server=True) == [rec]
    assert parse_inner_untrusted(h("0000") + b"\xff" * 20, from_server=False) == []
    assert parse_inner_untrusted(h("0000"), from_server=True) == []


def test_encode_inner_limits() -> None:
    big = encode_record(Record(1, 1, b"x" * 65535, False))
    with pytest.raises(ValueError, match="65535"):
        encode_inner([big])
    # pad_to below the content size adds nothing rather than truncating
    small = encode_record(Record(1, 1, b"abc", False))
    assert encode_inner([small], pad_to=3) == h("0008") + small


@pytest.mark.parametrize(
    ("rec", "match"),
    [
        (Record(U32 + 1, 1, b"", False), "channel"),
        (Record(-1, 1, b"", False), "channel"),
        (Record(1, U64 + 1, b"", False), "pnum"),
        (Record(1, 1, b"x" * 65536, False), "65535"),
        (Record(5, 0, b"", False), "pnum 0"),
        (Record(0, 0, b"", False, fragment=True), "pnum 0"),
    ],
)
def test_encode_record_rejects_local_misuse(rec: Record, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_record(rec)


def _inner(*raw_records: str) -> bytes:
    body = b"".join(h(r) for r in raw_records)
    return len(body).to_bytes(2, "big") + body


@pytest.mark.parametrize(
    ("plaintext", "from_server", "match"),
    [
        (b"", False, "shorter"),
        (b"\x00", False, "shorter"),
        (h("0005") + h("00010100"), False, "exceeds"),
        (_inner("8001010000"), False, "direction"),  # server bit in a client packet
        (_inner("0001010000"), True, "direction"),
        (_inner("2000000000"), False, "unordered"),  # pnum 0 with the fragment bit
        (_inner("0005000000"), False, "unordered"),  # pnum 0 on channel 5
        (_inner("08000101 0000".replace(" ", "")), False, "overlong channel"),
        (_inner("01010001 0000".replace(" ", "")), False, "overlong packet number"),
        (_inner("0001010005aabb"), False, "overruns"),
        (_inner("00010100"), False, "truncated"),
        (_inner("0001010000", "00"), False, "truncated"),
        (_inner("07ffffffff"), False, "truncated"),
    ],
)
def test_parse_inner_rejects(plaintext: bytes, from_server: bool, match: str) -> None:
    with pytest.raises(WireError, match=match):
        parse_inner_untrusted(plaintext, from_server=from_server)


def test_records_len_bounds_records_even_with_padding_after() -> None:
    # The record claims 2 data bytes but records_len ends after 1; the padding
    # must not be read as record data.
    plaintext = h("0006") + h("0001010002aa") + h("bb00")
    with pytest.raises(WireError, match="overruns"):
        parse_inner_untrusted(plaintext, from_server=False)


def test_overlong_record_fields_are_malformed() -> None:
    overlong = h("09000100010001") + b"z"  # channel and pnum 0x0001 in two bytes each
    with pytest.raises(WireError, match="overlong channel"):
        parse_inner_untrusted(h("0008") + overlong, from_server=False)
    overlong_pnum = h("01010001") + h("0001") + b"z"
    with pytest.raises(WireError, match="overlong packet number"):
        parse_inner_untrusted(h("0007") + overlong_pnum, from_server=False)


@FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_parse_inner_fuzz_raises_only_wire_error(data: bytes, from_server: bool) -> None:
    try:
        recs = parse_inner_untrusted(data, from_server=from_server)
    except WireError:
        return
    assert all(r.from_server == from_server for r in recs)


@FUZZ
@given(record_lists(), st.integers(0, 200), st.integers(0, 255))
def test_parse_inner_mutations_raise_only_wire_error(
    case: tuple[bool, list[Record]], where: int, value: int
) -> None:
    from_server, recs = case
    inner = bytearray(encode_inner([encode_record(r) for r in recs], pad_to=20))
    inner[where % len(inner)] = value
    for candidate in (bytes(inner), bytes(inner[: where % len(inner)])):
        try:
            recs = parse_inner_untrusted(candidate, from_server=from_server)
        except WireError:
            continue
        assert all(r.from_server == from_server for r in recs)


# ---------------------------------------------------------------------------
# Command strategies

# (command, from_server) pairs valid in v2
v2_commands: st.SearchStrategy[tuple[Command, bool]] = st.one_of(
    st.tuples(starts(st.one_of(ips, hostnames)), st.just(False)),
    st.tuples(st.builds(Started, channels), st.just(True)),
    st.tuples(st.builds(Stop, channels, u64s), st.booleans()),
    st.tuples(acks, st.booleans()),
    st.tuples(st.builds(KeepAlive, st.booleans()), st.booleans()),
    st.tuples(st.builds(Terminate, channels, codes, reasons), st.booleans()),
    st.tuples(st.builds(Credit, channels, u64s), st.booleans()),
    st.tuples(st.builds(Close, codes, reasons), st.booleans()),
    st.tuples(st.builds(PathChallenge, path_data), st.just(True)),
    st.tuples(st.builds(PathResponse, path_data), st.just(False)),
)


@ROUNDTRIP
@given(v2_commands)
def test_command_roundtrip_v2(case: tuple[Command, bool]) -> None:
    cmd, from_server = case
    encoded = encode_command(cmd)
    assert encoded[0] & 0x1F in set(Cmd)
    assert parse_command_untrusted(encoded, from_server=from_server) == cmd


# ---------------------------------------------------------------------------
# Golden bytes

# (hex, from_server, parsed command); the encoder must reproduce the hex.
GOLDEN: list[tuple[str, bool, Command]] = [
    # PROTOCOL.md §5 examples (the host-name one with F = 0x49, see below)
    ("014101067f0000012710", False, Start(1, Proto.TCP, IPv4Address("127.0.0.1"), 10000)),
    ("014902060b6578616d706c652e636f6d01bb", False, Start(2, Proto.TCP, "example.com", 443)),
    ("010001", True, Started(1)),
    ("02000101", False, Stop(1, 1)),
    ("03000700000001c001038005", False, Ack(7, 0, (AckGroup(1, ((1, 3), (5, 5))),))),
    (
        "03000700010000020001c001038005",
        False,
        Ack(7, 0, (AckGroup(1, ((1, 3), (5, 5))),), packets=((5, 7),)),
    ),
    (
        "0300640003000000000a44000a08",
        True,
        Ack(100, 0, (), packets=((0, 8), (20, 88), (100, 100))),
    ),
    # frozen v2 encodings, one or more per command type
    (
        "01c4031120010db800000000000000000000000135",
        False,
        Start(3, Proto.UDP, IPv6Address("2001:db8::1"), 53, compress=True),
    ),
    (
        "01d9012c060c6578616d706c652e636f6d2e1f90",
        False,
        Start(300, Proto.TCP, "example.com.", 8080, compress=True),
    ),
    ("0101012c", True, Started(300)),
    ("020a012c011170", True, Stop(300, 70000)),
    ("0300050000", True, Ack(5, 0, ())),
    (
        "0309123461a800000080010101ffc10201ff",
        False,
        Ack(0x1234, 25000, (AckGroup(0, ((1, 1),)), AckGroup(0x1FF, ((2, 0x1FF),)))),
    ),
    ("0400", False, KeepAlive(response=False)),
    ("0401", True, KeepAlive(response=True)),
    ("050001050772656675736564", True, Terminate(1, 5, "refused")),
    ("0500020000", False, Terminate(2)),
    ("0601010200", True, Credit(1, 512)),
    ("070303627965", False, Close(3, "bye")),
    ("070000", True, Close()),
    ("080001020304050607", True, PathChallenge(bytes(range(8)))),
    ("09a0a1a2a3a4a5a6a7", False, PathResponse(bytes(range(0xA0, 0xA8)))),
]


@pytest.mark.parametrize(("hexed", "from_server", "cmd"), GOLDEN)
def test_golden_commands(hexed: str, from_server: bool, cmd: Command) -> None:
    data = h(hexed)
    assert parse_command_untrusted(data, from_server=from_server) == cmd
    assert encode_command(cmd) == data


def test_protocol_md_hostname_example_has_wrong_port_size() -> None:
    # PROTOCOL.md §5.1 prints F = 0x48 (1-byte port) before the 2-byte port 01bb;
    # read literally, the last byte is trailing garbage. The encoder writes 0x49.
    doc = h("014802060b6578616d706c652e636f6d01bb")
    with pytest.raises(WireError, match="trailing"):
        parse_command_untrusted(doc, from_server=False)
    assert encode_command(Start(2, Proto.TCP, "example.com", 443))[1] == 0x49


def test_bare_terminate_is_wire_error() -> None:
    with pytest.raises(WireError, match="malformed terminate"):
        parse_command_untrusted(b"\x05", from_server=False)


def test_start_addr_type_property() -> None:
    assert Start(1, Proto.TCP, IPv4Address("1.2.3.4"), 1).addr_type is AddrType.IPV4
    assert Start(1, Proto.TCP, IPv6Address("::1"), 1).addr_type is AddrType.IPV6
    # an IP literal given as str stays a host name: the caller decides
    as_name = Start(1, Proto.TCP, "127.0.0.1", 80)
    assert as_name.addr_type is AddrType.HOSTNAME
    encoded = encode_command(as_name)
    assert encoded[1] == 0x48
    assert parse_command_untrusted(encoded, from_server=False) == as_name


# ---------------------------------------------------------------------------
# Fuzz: bad bytes give WireError and nothing else


def _parse_or_wire_error(data: bytes, from_server: bool) -> Command | None:
    try:
        return parse_command_untrusted(data, from_server=from_server)
    except WireError:
        return None


@FUZZ
@given(st.binary(max_size=64), st.booleans())
def test_command_fuzz_raw(data: bytes, from_server: bool) -> None:
    cmd = _parse_or_wire_error(data, from_server)
    if cmd is not None:
        # whatever v2 accepts is canonical: it re-encodes to the same bytes
        assert encode_command(cmd) == data


@FUZZ
@given(st.integers(0, 40), st.binary(max_size=40), st.booleans())
def test_command_fuzz_known_command_byte(first: int, rest: bytes, from_server: bool) -> None:
    data = bytes((first,)) + rest
    cmd = _parse_or_wire_error(data, from_server)
    if cmd is not None:
        assert encode_command(cmd) == data


@pytest.mark.parametrize(("hexed", "from_server", "cmd"), GOLDEN)
def test_golden_truncations_and_mutations(hexed: str, from_server: bool, cmd: Command) -> None:
    data = h(hexed)
    for cut in range(len(data)):
        prefix = data[:cut]
        parsed = _parse_or_wire_error(prefix, from_server)
        if not isinstance(cmd, Ack):
            # every field is needed in v2, so every strict prefix is malformed
            # (an ACK cut after a complete item is a shorter valid ACK)
            assert parsed is None, (cut, parsed)
    for pos in range(len(data)):
        for value in range(256):
            mutated = data[:pos] + bytes((value,)) + data[pos + 1 :]
            for direction in (False, True):
                parsed = _parse_or_wire_error(mutated, direction)
                if parsed is not None:
                    assert encode_command(parsed) == mutated


# ---------------------------------------------------------------------------
# Byte-level rules


@pytest.mark.parametrize(
    ("hexed", "from_server"),
    [
        ("22000101", False),  # reserved bits of the command byte
        ("e400", True),
        ("02800101", False),  # STOP S bits 7..5
        ("010401", True),  # STARTED bits 7..2
        ("0504010000", False),  # TERMINATE bits 7..2
        ("03000000000401c00102", False),  # ACK channel selector bits 6..2
        ("030000000000018101", False),  # ACK item with EEE != 0 although R = 0
    ],
)
def test_reserved_bits_rejected(hexed: str, from_server: bool) -> None:
    with pytest.raises(WireError, match="reserved"):
        parse_command_untrusted(h(hexed), from_server=from_server)


@pytest.mark.parametrize(
    ("hexed", "from_server", "match"),
    [
        ("", False, "empty"),
        ("00", False, "unknown"),
        ("0a", False, "unknown"),
        ("1f", True, "unknown"),
        ("0200010100", False, "trailing"),
        ("040000", False, "trailing"),
        ("0208000101", False, "overlong"),
        ("010101067f0000012710", False, "bit 6"),
        ("014d01067f0000012710", False, "address type"),
        ("014001067f00000100", False, "port"),
        ("014201067f000001011170", False, "port"),
        ("014101017f0000012710", False, "proto"),
        ("014101067f00", False, "truncated"),
        ("014802060361206250", False, "host name"),
        ("014802060361006250", False, "host name"),
        ("014802060050", False, "host name"),
        ("014802060a6162", False, "truncated"),
        ("0402", False, "kind"),
        ("0500010001ff", False, "UTF-8"),
        ("0500010005616263", False, "truncated"),
        ("07000180", True, "UTF-8"),
        ("03c00700", False, "reserved"),
        ("0300070000000180058001", False, "ascending"),
        ("0300070000000180018002", False, "touching"),
        ("03000700000001c00101", False, "end not above"),
        ("03000700000001c00501", False, "end not above"),
        ("030007000000018000", False, "pnum 0"),
        ("03000700008001", False, "before any channel"),
        ("03000700000001", False, "without items"),
        ("0300070000000100018001", False, "without items"),
        ("03000700000100018001", False, "overlong"),
        ("08000102030405", True, "truncated"),
        ("080001020304050607", False, "direction"),
        ("090001020304050607", True, "direction"),
    ],
)
def test_v2_malformed(hexed: str, from_server: bool, match: str) -> None:
    with pytest.raises(WireError, match=match):
        parse_command_untrusted(h(hexed), from_server=from_server)


def test_ack_with_zero_groups_is_valid() -> None:
    assert parse_command_untrusted(h("0300ff0000"), from_server=True) == Ack(0xFF, 0, ())


# ---------------------------------------------------------------------------
# Encoder misuse


@pytest.mark.parametrize(
    ("cmd", "match"),
    [
        (Start(1, Proto.TCP, "a" * 256, 80), "host name"),
        (Start(1, Proto.TCP, "", 80), "host name"),
        (Start(1, Proto.TCP, "exa mple.com", 80), "host name"),
        (Start(1, Proto.TCP, "bücher.de", 80), "ASCII"),
        (Start(1, Proto.TCP, IPv4Address("1.2.3.4"), 0), "port"),
        (Start(1, Proto.TCP, IPv4Address("1.2.3.4"), 65536), "port"),
        (Start(U32 + 1, Proto.TCP, IPv4Address("1.2.3.4"), 80), "channel"),
        (Started(U32 + 1), "channel"),
        (Stop(1, U64 + 1), "last"),
        (Stop(-1, 0), "channel"),
        (Ack(U64 + 1, 0, ()), "largest"),
        (Ack(0, -1, ()), "delay_us"),
        (Ack(0, 0, (AckGroup(1, ()),)), "no ranges"),
        (Ack(0, 0, (AckGroup(1, ((0, 0),)),)), "ascending"),
        (Ack(0, 0, (AckGroup(1, ((1, 2), (3, 4))),)), "ascending"),
        (Ack(0, 0, (AckGroup(1, ((5, 6), (1, 2))),)), "ascending"),
        (Ack(0, 0, (AckGroup(1, ((5, 4),)),)), "ascending"),
        (Terminate(1, 256), "code"),
        (Close(-1), "code"),
        (Credit(1, U64 + 1), "max_pnum"),
        (PathChallenge(b"1234567"), "8 bytes"),
        (PathResponse(b"123456789"), "8 bytes"),
    ],
)
def test_encode_rejects_local_misuse(cmd: Command, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        encode_command(cmd)
    assert not isinstance(info.value, WireError)


def test_hostname_limits() -> None:
    longest = ".".join(["a" * 63] * 4)  # 255 bytes
    assert len(longest) == 255
    start = Start(1, Proto.TCP, longest, 443)
    encoded = encode_command(start)
    assert encoded[4] == 255
    assert parse_command_untrusted(encoded, from_server=False) == start
    with pytest.raises(ValueError, match="host name"):
        encode_command(Start(1, Proto.TCP, longest + "b", 443))
    for name in ("under_score.example", "xn--bcher-kva.de", "trailing.dot.", "a"):
        s = Start(7, Proto.UDP, name, 53)
        assert parse_command_untrusted(encode_command(s), from_server=False) == s


@pytest.mark.parametrize("bad", [b"a b", b"a/b", b"a\x00b", b"\xc3\xbc", b"a:b", b"a\nb"])
def test_crafted_hostname_with_bad_chars_rejected(bad: bytes) -> None:
    data = h("01480206") + bytes((len(bad),)) + bad + h("50")
    with pytest.raises(WireError, match="host name"):
        parse_command_untrusted(data, from_server=False)


def _terminate(reason: str) -> Command:
    return Terminate(1, 1, reason)


def _close(reason: str) -> Command:
    return Close(1, reason)


@pytest.mark.parametrize("make", [_terminate, _close])
def test_reason_truncated_at_character_boundary(make: Callable[[str], Command]) -> None:
    # 400 UTF-8 bytes: 127 "é" are 254 bytes, the 128th would need 256
    parsed = parse_command_untrusted(encode_command(make("é" * 200)), from_server=True)
    assert parsed == make("é" * 127)
    parsed = parse_command_untrusted(encode_command(make("x" * 300)), from_server=True)
    assert parsed == make("x" * 255)
    parsed = parse_command_untrusted(encode_command(make("x" * 254 + "€")), from_server=True)
    assert parsed == make("x" * 254)


# ---------------------------------------------------------------------------
# ack_from_ranges


def _items(ack: Ack) -> int:
    return sum(len(g.ranges) for g in ack.groups)


def test_ack_from_ranges_keeps_everything_under_budget() -> None:
    ack = ack_from_ranges(9, 100, {3: [(1, 2)], 0: [(1, 1), (3, 4)], 7: []})
    assert ack == Ack(
        9, 100, (AckGroup(0, ((1, 1), (3, 4))), AckGroup(3, ((1, 2),)))
    )  # ascending channels, empty ones left out
    assert parse_command_untrusted(encode_command(ack), from_server=False) == ack


def test_ack_from_ranges_keeps_newest_items() -> None:
    many = [(3 * i + 1, 3 * i + 2) for i in range(100)]
    ack = ack_from_ranges(1, 0, {1: many})
    assert MAX_ACK_ITEMS == 64
    assert ack.groups == (AckGroup(1, tuple(many[-64:])),)


def test_ack_from_ranges_shares_budget_between_channels() -> None:
    many = [(3 * i + 1, 3 * i + 1) for i in range(100)]
    ack = ack_from_ranges(1, 0, {5: many, 0: [(1, 1), (3, 9)], 2: [(4, 4)]}, max_items=10)
    assert ack.groups == (
        AckGroup(0, ((1, 1), (3, 9))),
        AckGroup(2, ((4, 4),)),
        AckGroup(5, tuple(many[-7:])),
    )
    none = ack_from_ranges(1, 0, {5: many}, max_items=0)
    assert none == Ack(1, 0, ())
    with pytest.raises(ValueError, match="max_items"):
        ack_from_ranges(1, 0, {}, max_items=-1)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.integers(0, 50), canonical_ranges(), max_size=12), st.integers(0, 80))
def test_ack_from_ranges_properties(
    ranges: dict[int, tuple[tuple[int, int], ...]], max_items: int
) -> None:
    ack = ack_from_ranges(3, 4, ranges, max_items)
    total = sum(len(r) for r in ranges.values())
    assert _items(ack) == min(total, max_items)
    chans = [g.channel for g in ack.groups]
    assert chans == sorted(chans)
    for group in ack.groups:
        src = ranges[group.channel]
        assert group.ranges == src[len(src) - len(group.ranges) :]  # a newest suffix
    # fairness: channels that lost items got at least as many as any other minus one
    kept = {g.channel: len(g.ranges) for g in ack.groups}
    trimmed = [ch for ch, rs in ranges.items() if kept.get(ch, 0) < len(rs)]
    if trimmed:
        floor = min(kept.get(ch, 0) for ch in trimmed)
        assert all(n <= floor + 1 for n in kept.values())
    assert parse_command_untrusted(encode_command(ack), from_server=True) == ack


# ---------------------------------------------------------------------------
# Sanity: the fuzz helpers can fail


def test_parse_helper_distinguishes_success() -> None:
    check: Callable[[bytes, bool], Command | None] = _parse_or_wire_error
    assert check(h("0400"), False) == KeepAlive()
    assert check(h("0403"), False) is None


def test_ack_packet_ranges_below_zero_are_malformed() -> None:
    # largest 3, one range of length 9 ending at 3 would start at -6.
    with pytest.raises(WireError):
        parse_command_untrusted(bytes.fromhex("030003000100000009"), from_server=False)


def test_ack_packet_ranges_must_not_touch() -> None:
    with pytest.raises(ValueError):
        encode_command(Ack(10, 0, (), packets=((0, 4), (5, 10))))


@settings(max_examples=150, deadline=None)
@given(st.sets(st.integers(0, 5000), min_size=0, max_size=300), st.integers(0, 100))
def test_ack_packet_ranges_round_trip(counters: set[int], extra: int) -> None:
    from resip.core.rangeset import RangeSet

    ranges = RangeSet((c, c) for c in counters).newest(255)
    largest = (max(counters) if counters else 0) + extra
    ack = Ack(largest, 7, (), packets=tuple(ranges))
    assert parse_command_untrusted(encode_command(ack), from_server=True) == ack

"""Tests for resip.compat.legacy_v1_wire: the prototype's records and commands (PROTOCOL.md §9).

v1 parsing is as tolerant as the prototype was (reserved bits ignored, overlong integers
and trailing bytes accepted) but still raises only WireError, whatever the bytes.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.compat.legacy_v1_wire import (
    encode_command_v1,
    encode_record_v1,
    parse_command_v1_untrusted,
    parse_record_v1_untrusted,
    unpack_int_v1_untrusted,
)
from resip.core.errors import WireError
from resip.core.wire import (
    Ack,
    AckGroup,
    Close,
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
)
from tests.unit.wire_strategies import U32, U64, acks, channels, codes, ips, reasons, starts, u64s

FUZZ = settings(max_examples=200, deadline=None)
ROUNDTRIP = settings(max_examples=150, deadline=None)

h = bytes.fromhex


# ---------------------------------------------------------------------------
# Packed integers and records


@pytest.mark.parametrize("size", range(2, 9))
def test_overlong_packed_int_is_tolerated(size: int) -> None:
    buf = b"\x00" * (size - 1) + b"\x05"
    assert unpack_int_v1_untrusted(buf, 0, size) == 5


@pytest.mark.parametrize(
    ("buf", "offset", "size"),
    [(b"", 0, 1), (b"\x01", 0, 2), (b"\x01\x02", 1, 2), (b"\x01", 5, 1), (b"\x01", 0, 0)],
)
def test_packed_int_truncation(buf: bytes, offset: int, size: int) -> None:
    with pytest.raises(WireError):
        unpack_int_v1_untrusted(buf, offset, size)


def test_v1_record_helper_tolerance_and_offsets() -> None:
    # A v1 inner plaintext: random byte, then one record, then random padding.
    buf = h("96") + h("000001000a") + h("014101067f0000012710") + h("5a5a")
    rec, nxt = parse_record_v1_untrusted(buf, 1)
    assert rec == Record(0, 1, h("014101067f0000012710"), from_server=False)
    assert nxt == len(buf) - 2
    overlong = h("09000100010001") + b"z"  # channel and pnum 0x0001 in two bytes each
    rec, nxt = parse_record_v1_untrusted(overlong, 0)
    assert (rec.channel, rec.pnum, rec.data, nxt) == (1, 1, b"z", 8)
    for bad_offset in (-1, 11, 100):
        with pytest.raises(WireError):
            parse_record_v1_untrusted(buf[:11], bad_offset)
    with pytest.raises(WireError, match="overruns"):
        parse_record_v1_untrusted(h("000101ffff00"), 0)
    with pytest.raises(WireError, match="unordered"):
        parse_record_v1_untrusted(h("000100000141"), 0)


@st.composite
def records(draw: st.DrawFn) -> Record:
    channel = draw(st.one_of(st.just(0), st.integers(1, 300), st.integers(0, U32)))
    low = 0 if channel == 0 else 1
    pnum = draw(st.one_of(st.integers(low, 70000), st.integers(low, U64)))
    fragment = False if pnum == 0 else draw(st.booleans())
    return Record(
        channel=channel,
        pnum=pnum,
        data=draw(st.binary(max_size=300)),
        from_server=draw(st.booleans()),
        compressed=draw(st.booleans()),
        fragment=fragment,
    )


@ROUNDTRIP
@given(records(), st.binary(max_size=20))
def test_record_roundtrip(rec: Record, padding: bytes) -> None:
    encoded = encode_record_v1(rec)
    assert parse_record_v1_untrusted(b"\x5a" + encoded + padding, 1) == (rec, 1 + len(encoded))


@FUZZ
@given(st.binary(max_size=80), st.integers(-2, 90))
def test_record_fuzz_raises_only_wire_error(data: bytes, offset: int) -> None:
    try:
        rec, end = parse_record_v1_untrusted(data, offset)
    except WireError:
        return
    assert offset < end <= len(data)
    assert rec.pnum != 0 or (rec.channel == 0 and not rec.fragment)


# ---------------------------------------------------------------------------
# Commands: round trips and golden bytes


def _v1_expected(cmd: Command) -> Command:
    """What a v1 round trip gives back: v1 drops fields it cannot carry."""
    if isinstance(cmd, Ack):
        return Ack(0, 0, cmd.groups)
    if isinstance(cmd, KeepAlive):
        return KeepAlive()
    if isinstance(cmd, Terminate):
        return Terminate(cmd.channel)
    return cmd


v1_commands: st.SearchStrategy[tuple[Command, bool]] = st.one_of(
    st.tuples(starts(ips), st.just(False)),
    st.tuples(st.builds(Started, channels), st.just(True)),
    st.tuples(st.builds(Stop, channels, u64s), st.booleans()),
    st.tuples(acks, st.booleans()),
    st.tuples(st.builds(KeepAlive, st.booleans()), st.booleans()),
    st.tuples(st.builds(Terminate, channels, codes, reasons), st.booleans()),
)


@ROUNDTRIP
@given(v1_commands)
def test_command_roundtrip_v1(case: tuple[Command, bool]) -> None:
    cmd, from_server = case
    encoded = encode_command_v1(cmd)
    parsed = parse_command_v1_untrusted(encoded, from_server=from_server)
    assert parsed == _v1_expected(cmd)
    assert encode_command_v1(parsed) == encoded


# (hex, from_server, parsed command) from seed-protocol.md §7 and seed-vectors.json;
# the encoder must reproduce the hex.
GOLDEN_V1: list[tuple[str, bool, Command]] = [
    ("014101067f0000012710", False, Start(1, Proto.TCP, IPv4Address("127.0.0.1"), 10000)),
    ("010001", True, Started(1)),
    ("02000101", False, Stop(1, 1)),
    ("02000101", True, Stop(1, 1)),
    (
        "030000c001020001c001038005c00709",
        False,
        Ack(0, 0, (AckGroup(0, ((1, 2),)), AckGroup(1, ((1, 3), (5, 5), (7, 9))))),
    ),
    (
        "030000c001030001c001028004c9012c012d",
        True,
        Ack(0, 0, (AckGroup(0, ((1, 3),)), AckGroup(1, ((1, 2), (4, 4), (300, 301))))),
    ),
    ("04", False, KeepAlive()),
    ("04", True, KeepAlive()),
    ("050001", False, Terminate(1)),
]


@pytest.mark.parametrize(("hexed", "from_server", "cmd"), GOLDEN_V1)
def test_golden_commands_v1(hexed: str, from_server: bool, cmd: Command) -> None:
    data = h(hexed)
    assert parse_command_v1_untrusted(data, from_server=from_server) == cmd
    assert encode_command_v1(cmd) == data


def test_v1_encoder_ignores_v2_only_fields() -> None:
    groups = (AckGroup(1, ((1, 3),)),)
    assert encode_command_v1(Ack(99, 1234, groups)) == h("030001c00103")
    assert encode_command_v1(Ack(99, 1234, groups, packets=((0, 99),))) == h("030001c00103")
    assert encode_command_v1(KeepAlive(response=True)) == h("04")
    assert encode_command_v1(Terminate(1, 5, "refused")) == h("050001")


def test_v1_buggy_bare_terminate_is_wire_error() -> None:
    with pytest.raises(WireError, match="malformed terminate"):
        parse_command_v1_untrusted(b"\x05", from_server=False)


# ---------------------------------------------------------------------------
# Fuzz: bad bytes give WireError and nothing else


def _parse_or_wire_error(data: bytes, from_server: bool) -> Command | None:
    try:
        return parse_command_v1_untrusted(data, from_server=from_server)
    except WireError:
        return None


@FUZZ
@given(st.binary(max_size=64), st.booleans())
def test_command_fuzz_raw(data: bytes, from_server: bool) -> None:
    _parse_or_wire_error(data, from_server)


@FUZZ
@given(st.integers(0, 40), st.binary(max_size=40), st.booleans())
def test_command_fuzz_known_command_byte(first: int, rest: bytes, from_server: bool) -> None:
    _parse_or_wire_error(bytes((first,)) + rest, from_server)


@pytest.mark.parametrize(("hexed", "from_server", "cmd"), GOLDEN_V1)
def test_golden_truncations_and_mutations(hexed: str, from_server: bool, cmd: Command) -> None:
    data = h(hexed)
    for cut in range(len(data)):
        _parse_or_wire_error(data[:cut], from_server)
    for pos in range(len(data)):
        for value in range(256):
            mutated = data[:pos] + bytes((value,)) + data[pos + 1 :]
            for direction in (False, True):
                _parse_or_wire_error(mutated, direction)


def test_v1_truncations_of_multibyte_commands_are_wire_errors() -> None:
    for hexed in ("014101067f0000012710", "010001", "02000101", "050001", "030000c00102"):
        data = h(hexed)
        for cut in range(1, len(data)):
            if hexed.startswith("03") and cut in (1, 3):
                continue  # a v1 ACK may legitimately end after its groups
            with pytest.raises(WireError):
                parse_command_v1_untrusted(data[:cut], from_server=hexed == "010001")


# ---------------------------------------------------------------------------
# Byte-level rules


@pytest.mark.parametrize(
    ("hexed", "from_server", "result"),
    [
        ("22000101", False, Stop(1, 1)),  # reserved bits of the command byte
        ("e4", True, KeepAlive()),
        ("02800101", False, Stop(1, 1)),  # STOP S bits 7..5
        ("010401", True, Started(1)),  # STARTED bits 7..2
        ("050401", False, Terminate(1)),  # TERMINATE bits 7..2
        # ACK channel selector bits 6..2 (v1 has no S/largest/delay prefix)
        ("030401c00102", False, Ack(0, 0, (AckGroup(1, ((1, 2),)),))),
        # ACK item with EEE != 0 although R = 0
        ("0300018101", False, Ack(0, 0, (AckGroup(1, ((1, 1),)),))),
    ],
)
def test_reserved_bits_tolerated_in_v1(hexed: str, from_server: bool, result: Command) -> None:
    assert parse_command_v1_untrusted(h(hexed), from_server=from_server) == result


@pytest.mark.parametrize(
    "hexed",
    [
        "0601010200",  # CREDIT
        "070000",  # CLOSE
        "080001020304050607",  # PATH_CHALLENGE
        "090001020304050607",  # PATH_RESPONSE
        "038001",  # ACK item before any selector
        "030001c00501",  # range end below start
        "0a",
        "00",
    ],
)
def test_v1_malformed(hexed: str) -> None:
    for from_server in (False, True):
        with pytest.raises(WireError):
            parse_command_v1_untrusted(h(hexed), from_server=from_server)


def test_v1_start_has_no_host_names() -> None:
    data = h("014902060b6578616d706c652e636f6d01bb")
    with pytest.raises(WireError, match="address type 2"):
        parse_command_v1_untrusted(data, from_server=False)


def test_v1_tolerances() -> None:
    def v1(hexed: str, from_server: bool = False) -> Command:
        return parse_command_v1_untrusted(h(hexed), from_server=from_server)

    assert v1("0208000101") == Stop(1, 1)  # overlong channel
    assert v1("0200010100") == Stop(1, 1)  # trailing bytes
    assert v1("010101067f0000012710") == Start(1, Proto.TCP, IPv4Address("127.0.0.1"), 10000)
    assert v1("014301067f00000100002710") == Start(
        1, Proto.TCP, IPv4Address("127.0.0.1"), 10000
    )  # 4-byte port
    assert v1("0403") == KeepAlive()
    # the prototype's ACK split repeats the channel selector
    assert v1("0300000000c00102") == Ack(0, 0, (AckGroup(0, ((1, 2),)),))
    # unordered, touching and overlapping v1 ranges come back canonical
    assert v1("03000180098001c00203c003058000") == Ack(0, 0, (AckGroup(1, ((1, 5), (9, 9))),))
    assert v1("030001") == Ack(0, 0, ())
    assert v1("03") == Ack(0, 0, ())


# ---------------------------------------------------------------------------
# Encoder misuse


@pytest.mark.parametrize(
    ("cmd", "match"),
    [
        (Start(1, Proto.TCP, "example.com", 80), "host names"),
        (Start(1, Proto.TCP, IPv4Address("1.2.3.4"), 0), "port"),
        (Start(U32 + 1, Proto.TCP, IPv4Address("1.2.3.4"), 80), "channel"),
        (Stop(1, U64 + 1), "last"),
        (Ack(0, 0, (AckGroup(1, ()),)), "no ranges"),
        (Ack(0, 0, (AckGroup(1, ((1, 2), (2, 4))),)), "ascending"),
        (Credit(1, 2), "v1"),
        (Close(), "v1"),
        (PathChallenge(bytes(8)), "v1"),
        (PathResponse(bytes(8)), "v1"),
    ],
)
def test_encode_rejects_local_misuse(cmd: Command, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        encode_command_v1(cmd)
    assert not isinstance(info.value, WireError)


@pytest.mark.parametrize(
    ("rec", "match"),
    [
        (Record(U32 + 1, 1, b"", False), "channel"),
        (Record(1, U64 + 1, b"", False), "pnum"),
        (Record(1, 1, bytes(0x10000), False), "at most"),
        (Record(1, 0, b"", False), "pnum 0"),
        (Record(0, 0, b"", False, fragment=True), "pnum 0"),
    ],
)
def test_encode_record_rejects_local_misuse(rec: Record, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_record_v1(rec)

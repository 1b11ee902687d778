"""Legacy v1 codec against the PHP prototype's known-answer vectors, plus robustness.

The vectors in tests/data/seed-vectors.json were produced by running the PHP prototype
with a deterministic RNG; replaying that RNG through ``LegacyV1Codec.seal`` must give the
same packets byte for byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.compat import legacy_v1
from resip.compat.legacy_v1 import (
    HashAlg,
    LegacyKeys,
    LegacyV1Codec,
    deflate,
    fragment_message,
    inflate_untrusted,
    peek_session_id_untrusted,
)
from resip.compat.legacy_v1_wire import encode_command_v1, parse_command_v1_untrusted
from resip.core.errors import DecryptError, LocalProtocolError, WireError
from resip.core.wire import (
    Ack,
    AckGroup,
    Command,
    KeepAlive,
    Proto,
    Record,
    Start,
    Started,
    Stop,
    int_bits,
)

VECTORS_PATH = Path(__file__).resolve().parent.parent / "data" / "seed-vectors.json"
SEED = json.loads(VECTORS_PATH.read_text())
INPUTS = SEED["inputs"]
VECTORS: list[dict[str, Any]] = SEED["vectors"]
SESSION_ID = INPUTS["session_id"]
P = INPUTS["packet_size"]


def vector_id(vec: dict[str, Any]) -> str:
    return f"{vec['name']}-{vec['direction']}"


class VectorRng:
    """The vectors' RNG: SHA256(b'ResIP-vector-rng' || uint32_be(i)) blocks, read in order."""

    def __init__(self) -> None:
        self._stream = bytearray()
        self._counter = 0
        self._pos = 0
        self.calls: list[tuple[int, str]] = []

    def __call__(self, n: int) -> bytes:
        while len(self._stream) < self._pos + n:
            block = b"ResIP-vector-rng" + self._counter.to_bytes(4, "big")
            self._stream += hashlib.sha256(block).digest()
            self._counter += 1
        out = bytes(self._stream[self._pos : self._pos + n])
        self._pos += n
        self.calls.append((n, out.hex()))
        return out


def make_keys(alg: HashAlg) -> LegacyKeys:
    m, s = INPUTS["master"], INPUTS["session"]
    return LegacyKeys(
        master_key1=bytes.fromhex(m["key1"]),
        master_iv1=bytes.fromhex(m["iv1"]),
        master_key2=bytes.fromhex(m["key2"]),
        master_iv2=bytes.fromhex(m["iv2"]),
        session_key1=bytes.fromhex(s["key1"]),
        session_iv1=bytes.fromhex(s["iv1"]),
        session_key2=bytes.fromhex(s["key2"]),
        session_iv2=bytes.fromhex(s["iv2"]),
        sign=bytes.fromhex(s["sign_sha1"] if alg is HashAlg.SHA1 else s["sign_md5"]),
        hash=alg,
    )


def sender_is_server(vec: dict[str, Any]) -> bool:
    assert vec["direction"] in ("client_to_server", "server_to_client")
    return bool(vec["direction"] == "server_to_client")


def codecs_for(
    vec: dict[str, Any], rng: VectorRng | None = None
) -> tuple[LegacyV1Codec, LegacyV1Codec]:
    """(sender, receiver) codecs for a vector; the sender draws from ``rng``."""
    keys = make_keys(HashAlg(vec["hash"]))
    from_server = sender_is_server(vec)
    sender = LegacyV1Codec(keys, SESSION_ID, is_server=from_server, random_bytes=rng or VectorRng())
    receiver = LegacyV1Codec(keys, SESSION_ID, is_server=not from_server)
    return sender, receiver


def peek(packet: bytes, keys: LegacyKeys) -> int:
    return peek_session_id_untrusted(
        packet,
        master_key1=keys.master_key1,
        master_iv1=keys.master_iv1,
        master_key2=keys.master_key2,
        master_iv2=keys.master_iv2,
    )


def recorded_record(pkt: dict[str, Any]) -> Record:
    pi = pkt["parsed_inner"]
    flags = pi["flags_byte"]
    # The recorded flags byte and the decoded booleans must agree before we trust either.
    assert bool(flags & 0x80) == pi["from_server"]
    assert bool(flags & 0x40) == pi["compressed"]
    assert bool(flags & 0x20) == pi["fragment"]
    assert (flags >> 3) & 0x3 == int_bits(pi["channel"])
    assert flags & 0x7 == int_bits(pi["packet_number"])
    data = bytes.fromhex(pi["data_hex"])
    assert len(data) == pi["data_size"]
    return Record(
        channel=pi["channel"],
        pnum=pi["packet_number"],
        data=data,
        from_server=pi["from_server"],
        compressed=pi["compressed"],
        fragment=pi["fragment"],
    )


def expected_rng_calls(vec: dict[str, Any]) -> list[tuple[int, str]]:
    # PHP's GetBytes(n <= 0) returns false and consumes nothing; the codec skips the call.
    return [(c["len"], c["hex"]) for c in vec["rng_calls"] if c["len"] > 0]


VALID_VECTORS = [v for v in VECTORS if all(p["len"] == P for p in v["packets"])]
BUGGY_VECTORS = [v for v in VECTORS if v["name"].endswith("_original_buggy")]


def test_vector_file_is_what_we_expect() -> None:
    assert len(VECTORS) == 15
    assert {vector_id(v) for v in BUGGY_VECTORS} == {
        "fragmented_original_buggy-client_to_server",
        "terminate_original_buggy-client_to_server",
    }
    # Every vector except the fragment-size bug is a set of well-formed 512-byte packets.
    assert [vector_id(v) for v in VECTORS if v not in VALID_VECTORS] == [
        "fragmented_original_buggy-client_to_server"
    ]


# --------------------------------------------------------------------------------------
# Known answers


@pytest.mark.parametrize("vec", VALID_VECTORS, ids=vector_id)
def test_seal_reproduces_vector_byte_for_byte(vec: dict[str, Any]) -> None:
    rng = VectorRng()
    sender, _ = codecs_for(vec, rng)
    for pkt in vec["packets"]:
        assert sender.seal(recorded_record(pkt)).hex() == pkt["hex"]
    assert rng.calls == expected_rng_calls(vec)


@pytest.mark.parametrize("vec", VALID_VECTORS, ids=vector_id)
def test_open_decodes_vector(vec: dict[str, Any]) -> None:
    _, receiver = codecs_for(vec)
    for pkt in vec["packets"]:
        pi = pkt["parsed_inner"]
        rec = receiver.open_untrusted(bytes.fromhex(pkt["hex"]))
        assert rec.channel == pi["channel"]
        assert rec.pnum == pi["packet_number"]
        assert rec.compressed == pi["compressed"]
        assert rec.fragment == pi["fragment"]
        assert rec.from_server == pi["from_server"] == sender_is_server(vec)
        assert rec.data.hex() == pi["data_hex"]
        assert peek(bytes.fromhex(pkt["hex"]), receiver.keys) == SESSION_ID


@pytest.mark.parametrize("vec", VALID_VECTORS, ids=vector_id)
def test_the_sender_refuses_its_own_packets(vec: dict[str, Any]) -> None:
    sender, _ = codecs_for(vec)
    for pkt in vec["packets"]:
        with pytest.raises(WireError, match="direction"):
            sender.open_untrusted(bytes.fromhex(pkt["hex"]))


# Channel-0 payloads of the vectors, as v1 commands.
EXPECTED_COMMANDS: dict[str, Command] = {
    "start_channel-client_to_server": Start(
        channel=1, proto=Proto.TCP, host=IPv4Address("127.0.0.1"), port=10000
    ),
    "ack_ranges-client_to_server": Ack(
        largest=0,
        delay_us=0,
        groups=(AckGroup(0, ((1, 2),)), AckGroup(1, ((1, 3), (5, 5), (7, 9)))),
    ),
    "keepalive-client_to_server": KeepAlive(),
    "keepalive_md5-client_to_server": KeepAlive(),
    "stop_channel-client_to_server": Stop(channel=1, last=1),
    "channel_started-server_to_client": Started(channel=1),
    "keepalive_response-server_to_client": KeepAlive(),
    "ack_ranges-server_to_client": Ack(
        largest=0,
        delay_us=0,
        groups=(AckGroup(0, ((1, 3),)), AckGroup(1, ((1, 2), (4, 4), (300, 301)))),
    ),
    "stop_channel-server_to_client": Stop(channel=1, last=1),
}


def test_every_channel_zero_vector_has_an_expected_command() -> None:
    channel_zero = {
        vector_id(v)
        for v in VALID_VECTORS
        if any(p["parsed_inner"]["channel"] == 0 for p in v["packets"])
    }
    assert channel_zero == set(EXPECTED_COMMANDS) | {"terminate_original_buggy-client_to_server"}


@pytest.mark.parametrize("vid", sorted(EXPECTED_COMMANDS))
def test_vector_commands_parse_as_v1(vid: str) -> None:
    (vec,) = [v for v in VECTORS if vector_id(v) == vid]
    _, receiver = codecs_for(vec)
    (pkt,) = vec["packets"]
    rec = receiver.open_untrusted(bytes.fromhex(pkt["hex"]))
    assert rec.channel == 0
    cmd = parse_command_v1_untrusted(rec.data, from_server=rec.from_server)
    assert cmd == EXPECTED_COMMANDS[vid]
    assert encode_command_v1(cmd) == rec.data
    # Unordered on the wire exactly for ACK, keep-alive and STARTED, as in the prototype.
    assert (rec.pnum == 0) == isinstance(cmd, Ack | KeepAlive | Started)


def test_terminate_original_buggy_opens_but_its_command_is_malformed() -> None:
    (vec,) = [v for v in VECTORS if v["name"] == "terminate_original_buggy"]
    _, receiver = codecs_for(vec)
    rec = receiver.open_untrusted(bytes.fromhex(vec["packets"][0]["hex"]))
    assert rec == Record(channel=0, pnum=3, data=b"\x05", from_server=False)
    with pytest.raises(WireError):
        parse_command_v1_untrusted(rec.data, from_server=False)


def test_compressed_vector_start_packet_requests_compression() -> None:
    (vec,) = [v for v in VECTORS if v["name"] == "data_compressed"]
    _, receiver = codecs_for(vec)
    rec = receiver.open_untrusted(bytes.fromhex(vec["start_channel_packet_hex"]))
    assert (rec.channel, rec.pnum, rec.fragment, rec.compressed) == (0, 1, False, False)
    cmd = parse_command_v1_untrusted(rec.data, from_server=False)
    assert cmd == Start(
        channel=1, proto=Proto.TCP, host=IPv4Address("127.0.0.1"), port=10000, compress=True
    )


def test_original_buggy_fragments_are_rejected_not_reproduced() -> None:
    (vec,) = [v for v in VECTORS if v["name"] == "fragmented_original_buggy"]
    sender, receiver = codecs_for(vec)
    for pkt in vec["packets"]:
        packet = bytes.fromhex(pkt["hex"])
        assert len(packet) == 528
        with pytest.raises(WireError, match="512"):
            receiver.open_untrusted(packet)
        # As the prototype's recvfrom(512) would see it: truncated, so garbage, never a crash.
        with pytest.raises((WireError, DecryptError)):
            receiver.open_untrusted(packet[:P])
    # The two 475-byte fragments are one byte too long for a correct sender.
    for pkt in vec["packets"][:2]:
        with pytest.raises(LocalProtocolError, match="474"):
            sender.seal(recorded_record(pkt))


def test_fragment_message_reproduces_fixed_maxfragment_vector() -> None:
    (vec,) = [v for v in VECTORS if v["name"] == "fragmented_fixed_maxfragment"]
    payload = bytes.fromhex(vec["payload_hex"])
    assert payload == bytes(i & 0xFF for i in range(1000))
    rng = VectorRng()
    sender, receiver = codecs_for(vec, rng)
    records = fragment_message(
        1, 1, payload, from_server=False, max_fragment=sender.max_fragment, compress=False
    )
    assert [len(r.data) for r in records] == [474, 474, 52]
    assert [r.pnum for r in records] == [1, 2, 3]
    assert [r.fragment for r in records] == [True, True, False]
    assert records == [recorded_record(p) for p in vec["packets"]]
    packets = [sender.seal(r) for r in records]
    assert [p.hex() for p in packets] == [p["hex"] for p in vec["packets"]]
    assert rng.calls == expected_rng_calls(vec)
    assert b"".join(receiver.open_untrusted(p).data for p in packets) == payload


def test_fragment_message_reproduces_compressed_vector() -> None:
    (vec,) = [v for v in VECTORS if v["name"] == "data_compressed"]
    payload = bytes.fromhex(vec["payload_hex"])
    assert deflate(payload).hex() == vec["deflated_hex"]
    rng = VectorRng()
    sender, receiver = codecs_for(vec, rng)
    records = fragment_message(
        1, 1, payload, from_server=False, max_fragment=sender.max_fragment, compress=True
    )
    assert records == [recorded_record(vec["packets"][0])]
    assert sender.seal(records[0]).hex() == vec["packets"][0]["hex"]
    rec = receiver.open_untrusted(bytes.fromhex(vec["packets"][0]["hex"]))
    assert rec.compressed
    assert inflate_untrusted(rec.data) == payload


def test_max_fragment_is_the_fixed_formula() -> None:
    codec = LegacyV1Codec(make_keys(HashAlg.SHA1), SESSION_ID, is_server=False)
    assert codec.max_fragment(1, 1) == 474
    assert codec.max_fragment(0, 0) == 474
    assert codec.max_fragment(256, 1) == 473
    assert codec.max_fragment(1, 256) == 473
    assert codec.max_fragment(2**32 - 1, 2**64 - 1) == 474 - 3 - 7


# --------------------------------------------------------------------------------------
# Round trips and robustness

records_strategy = st.builds(
    lambda channel, pnum, fragment, compressed, from_server, data: (
        channel,
        pnum,
        fragment,
        compressed,
        from_server,
        data,
    ),
    st.one_of(st.just(0), st.integers(1, 300), st.integers(0, 2**32 - 1)),
    st.one_of(st.just(0), st.integers(1, 300), st.integers(0, 2**64 - 1)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.binary(max_size=480),
)


def valid_record(raw: tuple[int, int, bool, bool, bool, bytes], codec_max: int) -> Record:
    channel, pnum, fragment, compressed, from_server, data = raw
    if channel == 0:
        fragment = False
    if pnum == 0:
        channel, fragment = 0, False
    return Record(
        channel=channel,
        pnum=pnum,
        data=data[: codec_max - int_bits(channel) - int_bits(pnum)],
        from_server=from_server,
        compressed=compressed,
        fragment=fragment,
    )


@settings(max_examples=200, deadline=None)
@given(
    raw=records_strategy,
    alg=st.sampled_from(list(HashAlg)),
    seed=st.integers(0, 2**32),
)
def test_seal_open_round_trip(
    raw: tuple[int, int, bool, bool, bool, bytes], alg: HashAlg, seed: int
) -> None:
    rec = valid_record(raw, 474)
    keys = make_keys(alg)
    rng = random.Random(seed)
    sender = LegacyV1Codec(keys, SESSION_ID, is_server=rec.from_server, random_bytes=rng.randbytes)
    receiver = LegacyV1Codec(keys, SESSION_ID, is_server=not rec.from_server)
    packet = sender.seal(rec)
    assert len(packet) == P
    assert receiver.open_untrusted(packet) == rec
    with pytest.raises(WireError, match="direction"):
        sender.open_untrusted(packet)


@pytest.mark.parametrize("alg", list(HashAlg))
def test_every_data_length_round_trips(alg: HashAlg) -> None:
    # Covers the padding edge cases: 1 byte of padding, and none at all.
    keys = make_keys(alg)
    rng = random.Random(3)
    client = LegacyV1Codec(keys, SESSION_ID, is_server=False, random_bytes=rng.randbytes)
    server = LegacyV1Codec(keys, SESSION_ID, is_server=True)
    for n in range(client.max_fragment(1, 1) + 1):
        rec = Record(channel=1, pnum=1, data=rng.randbytes(n), from_server=False)
        packet = client.seal(rec)
        assert len(packet) == P
        assert server.open_untrusted(packet) == rec


def test_every_truncation_extension_and_byte_flip_is_refused() -> None:
    keys = make_keys(HashAlg.SHA1)
    rng = random.Random(7)
    sender = LegacyV1Codec(keys, SESSION_ID, is_server=True, random_bytes=rng.randbytes)
    receiver = LegacyV1Codec(keys, SESSION_ID, is_server=False)
    packet = sender.seal(Record(channel=1, pnum=5, data=b"hello", from_server=True))
    assert receiver.open_untrusted(packet).data == b"hello"
    for n in range(len(packet)):
        with pytest.raises(WireError):
            receiver.open_untrusted(packet[:n])
    for extra in (b"\x00", b"\x00" * 16, packet):
        with pytest.raises(WireError):
            receiver.open_untrusted(packet + extra)
    refused = 0
    for i in range(len(packet)):
        for delta in (0x01, 0x80, 0xFF):
            mutated = bytearray(packet)
            mutated[i] ^= delta
            with pytest.raises((WireError, DecryptError)):
                receiver.open_untrusted(bytes(mutated))
            refused += 1
    assert refused == 3 * P


@settings(max_examples=200, deadline=None)
@given(
    packet=st.one_of(st.binary(min_size=P, max_size=P), st.binary(max_size=2 * P)),
    alg=st.sampled_from(list(HashAlg)),
    is_server=st.booleans(),
)
def test_random_bytes_only_raise_wire_or_decrypt_error(
    packet: bytes, alg: HashAlg, is_server: bool
) -> None:
    receiver = LegacyV1Codec(make_keys(alg), SESSION_ID, is_server=is_server)
    with pytest.raises((WireError, DecryptError)):
        receiver.open_untrusted(packet)
    with contextlib.suppress(WireError):
        peek(packet, receiver.keys)


@settings(max_examples=100, deadline=None)
@given(
    raw=records_strategy,
    alg=st.sampled_from(list(HashAlg)),
    seed=st.integers(0, 2**32),
    position=st.integers(0, P - 1),
    value=st.integers(1, 255),
)
def test_random_single_byte_mutations_are_refused(
    raw: tuple[int, int, bool, bool, bool, bytes],
    alg: HashAlg,
    seed: int,
    position: int,
    value: int,
) -> None:
    rec = valid_record(raw, 474)
    keys = make_keys(alg)
    rng = random.Random(seed)
    sender = LegacyV1Codec(keys, SESSION_ID, is_server=rec.from_server, random_bytes=rng.randbytes)
    receiver = LegacyV1Codec(keys, SESSION_ID, is_server=not rec.from_server)
    mutated = bytearray(sender.seal(rec))
    mutated[position] ^= value
    with pytest.raises((WireError, DecryptError)):
        receiver.open_untrusted(bytes(mutated))


def test_other_session_and_other_hash_are_refused() -> None:
    keys = make_keys(HashAlg.SHA1)
    sender = LegacyV1Codec(keys, SESSION_ID, is_server=False)
    packet = sender.seal(Record(channel=0, pnum=0, data=b"\x04", from_server=False))
    other_session = LegacyV1Codec(keys, SESSION_ID + 1, is_server=True)
    # The server finds the session from the master layer alone, before any HMAC check.
    assert peek(packet, keys) == SESSION_ID
    with pytest.raises(WireError, match="512"):
        peek(packet + b"\x00", keys)
    with pytest.raises(ValueError, match="master_iv2"):
        peek_session_id_untrusted(
            packet,
            master_key1=keys.master_key1,
            master_iv1=keys.master_iv1,
            master_key2=keys.master_key2,
            master_iv2=keys.master_key2,
        )
    with pytest.raises(WireError, match="session"):
        other_session.open_untrusted(packet)
    md5 = LegacyV1Codec(make_keys(HashAlg.MD5), SESSION_ID, is_server=True)
    with pytest.raises(DecryptError):
        md5.open_untrusted(packet)


def test_hmac_is_over_the_inner_ciphertext() -> None:
    """A tampered HMAC field, re-encrypted with the (shared) master keys, is a DecryptError."""
    keys = make_keys(HashAlg.SHA1)
    sender = LegacyV1Codec(keys, SESSION_ID, is_server=False)
    receiver = LegacyV1Codec(keys, SESSION_ID, is_server=True)
    packet = sender.seal(Record(channel=0, pnum=0, data=b"\x04", from_server=False))
    master = legacy_v1._master_layer(keys)
    outer = bytearray(master.unwrap(packet))
    # The filler is not authenticated in v1 (a documented weakness): changing it passes.
    outer[P - 21] ^= 1
    assert receiver.open_untrusted(master.wrap(bytes(outer))).data == b"\x04"
    outer[P - 1] ^= 1
    with pytest.raises(DecryptError):
        receiver.open_untrusted(master.wrap(bytes(outer)))
    outer[P - 1] ^= 1
    outer[1] = 0x01
    with pytest.raises(WireError, match="type"):
        receiver.open_untrusted(master.wrap(bytes(outer)))
    outer[1] = 0xF0  # the high nibble is reserved but ignored, as in the prototype
    assert receiver.open_untrusted(master.wrap(bytes(outer))).data == b"\x04"


def forge_inner(keys: LegacyKeys, inner: bytes) -> bytes:
    """Build a correctly encrypted and authenticated packet around an arbitrary inner plaintext."""
    session = legacy_v1._Layer(
        keys.session_key1, keys.session_iv1, keys.session_key2, keys.session_iv2
    )
    ciphertext = session.wrap(inner)
    import hmac

    outer = (
        b"\x00\x00"
        + SESSION_ID.to_bytes(4, "big")
        + ciphertext
        + b"\x00" * 6
        + hmac.digest(keys.sign, ciphertext, "sha1")
    )
    return legacy_v1._master_layer(keys).wrap(outer)


@pytest.mark.parametrize(
    ("record_bytes", "why"),
    [
        (bytes.fromhex("20 00 01 0001 41"), "channel 0"),  # channel 0 with the fragment bit
        (bytes.fromhex("00 01 00 0001 41"), "unordered"),  # pnum 0 on channel 1
        (bytes.fromhex("80 00 00 0001 04"), "direction"),  # server bit, sent to the server
        (bytes.fromhex("00 00 01 01e0"), "overruns"),  # length 480 beyond the inner plaintext
        (bytes.fromhex("00 00 01 01db"), "overruns"),  # length 475 with only 474 bytes left
    ],
)
def test_authenticated_but_malformed_records_are_wire_errors(record_bytes: bytes, why: str) -> None:
    keys = make_keys(HashAlg.SHA1)
    server = LegacyV1Codec(keys, SESSION_ID, is_server=True)
    inner = b"\x00" + record_bytes
    inner = inner + b"\x00" * (P - 32 - len(inner))
    with pytest.raises(WireError, match=why):
        server.open_untrusted(forge_inner(keys, inner))


def test_largest_record_fits_exactly() -> None:
    keys = make_keys(HashAlg.SHA1)
    server = LegacyV1Codec(keys, SESSION_ID, is_server=True)
    inner = bytes.fromhex("00 00 00 01 01da") + bytes(474)
    assert len(inner) == P - 32
    assert server.open_untrusted(forge_inner(keys, inner)).data == bytes(474)


# --------------------------------------------------------------------------------------
# Sealing refuses records a peer would drop


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (Record(channel=1, pnum=1, data=b"x", from_server=True), "direction"),
        (Record(channel=0, pnum=1, data=b"x", from_server=False, fragment=True), "channel 0"),
        (Record(channel=1, pnum=0, data=b"x", from_server=False), "number 0"),
        (Record(channel=2**32, pnum=1, data=b"x", from_server=False), "channel"),
        (Record(channel=1, pnum=1, data=bytes(475), from_server=False), "474"),
        (Record(channel=1, pnum=256, data=bytes(474), from_server=False), "473"),
    ],
)
def test_seal_refuses_invalid_records(record: Record, why: str) -> None:
    codec = LegacyV1Codec(make_keys(HashAlg.SHA1), SESSION_ID, is_server=False)
    with pytest.raises(LocalProtocolError, match=why):
        codec.seal(record)


def test_bad_random_source_is_caught() -> None:
    codec = LegacyV1Codec(
        make_keys(HashAlg.SHA1), SESSION_ID, is_server=False, random_bytes=lambda n: b"\x00"
    )
    with pytest.raises(LocalProtocolError, match="random_bytes"):
        codec.seal(Record(channel=1, pnum=1, data=b"", from_server=False))


def test_bad_keys_are_refused() -> None:
    good = make_keys(HashAlg.SHA1)
    with pytest.raises(ValueError, match="master_key1"):
        LegacyKeys(**{**_fields(good), "master_key1": bytes(16)})
    with pytest.raises(ValueError, match="session_iv2"):
        LegacyKeys(**{**_fields(good), "session_iv2": bytes(32)})
    with pytest.raises(ValueError, match="sign"):
        LegacyKeys(**{**_fields(good), "hash": HashAlg.MD5})
    with pytest.raises(ValueError, match="session ids"):
        LegacyV1Codec(good, 2**32, is_server=False)
    with pytest.raises(ValueError, match="packet size"):
        LegacyV1Codec(good, 1, is_server=False, packet_size=520)


def _fields(keys: LegacyKeys) -> dict[str, Any]:
    return {name: getattr(keys, name) for name in LegacyKeys.__slots__}


def test_other_packet_sizes_work() -> None:
    keys = make_keys(HashAlg.MD5)
    client = LegacyV1Codec(keys, 3, is_server=False, packet_size=1024)
    server = LegacyV1Codec(keys, 3, is_server=True, packet_size=1024)
    assert client.max_fragment(1, 1) == 1024 - 38
    rec = Record(channel=1, pnum=1, data=bytes(range(256)) * 3, from_server=False)
    packet = client.seal(rec)
    assert len(packet) == 1024
    assert server.open_untrusted(packet) == rec


def test_insecure_warning_is_logged_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(legacy_v1, "_warned_insecure", False)
    with caplog.at_level(logging.WARNING, logger="resip.compat.legacy_v1"):
        LegacyV1Codec(make_keys(HashAlg.SHA1), 1, is_server=False)
        LegacyV1Codec(make_keys(HashAlg.SHA1), 2, is_server=True)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "insecure" in warnings[0].getMessage() or "legacy v1" in warnings[0].getMessage()


# --------------------------------------------------------------------------------------
# Fragmentation and compression


def small_max(channel: int, pnum: int) -> int:
    return 10 - int_bits(channel) - int_bits(pnum)


def test_fragment_message_numbering_and_flags() -> None:
    data = bytes(range(25))
    recs = fragment_message(7, 4, data, from_server=True, max_fragment=small_max, compress=False)
    assert [r.pnum for r in recs] == [4, 5, 6]
    assert [r.data for r in recs] == [data[:10], data[10:20], data[20:]]
    assert [r.fragment for r in recs] == [True, True, False]
    assert all(r.from_server and r.channel == 7 and not r.compressed for r in recs)
    assert (
        fragment_message(7, 4, b"", from_server=True, max_fragment=small_max, compress=False) == []
    )


def test_fragment_message_chunks_are_separate_messages() -> None:
    # max 10 at pnum 1: chunks of 10 * 128 bytes; 1300 bytes -> chunk of 128 + chunk of 2.
    data = bytes(1300)
    recs = fragment_message(1, 1, data, from_server=False, max_fragment=small_max, compress=False)
    assert len(recs) == 130
    ends = [r.pnum for r in recs if not r.fragment]
    assert ends == [128, 130]
    assert b"".join(r.data for r in recs) == data


def test_fragment_message_sizes_follow_each_pnum() -> None:
    # Crossing pnum 255 -> 256 makes the header a byte longer; the fragment must shrink.
    data = bytes(40)
    recs = fragment_message(1, 254, data, from_server=False, max_fragment=small_max, compress=False)
    assert [(r.pnum, len(r.data)) for r in recs] == [
        (254, 10),
        (255, 10),
        (256, 9),
        (257, 9),
        (258, 2),
    ]
    codec = LegacyV1Codec(make_keys(HashAlg.SHA1), SESSION_ID, is_server=False)
    big = fragment_message(
        1, 255, bytes(1000), from_server=False, max_fragment=codec.max_fragment, compress=False
    )
    assert [len(r.data) for r in big] == [474, 473, 53]
    for rec in big:
        assert len(codec.seal(rec)) == P


def test_fragment_message_compresses_each_chunk_as_one_message() -> None:
    # Incompressible data: the deflated chunks are a little longer than the chunks.
    data = random.Random(1).randbytes(1300)
    recs = fragment_message(3, 1, data, from_server=False, max_fragment=small_max, compress=True)
    assert all(r.compressed for r in recs)
    messages: list[bytes] = []
    current = b""
    for rec in recs:
        current += rec.data
        if not rec.fragment:
            messages.append(current)
            current = b""
    assert current == b""
    # Chunks are 10 * 128 bytes of *input*, each deflated on its own.
    assert [inflate_untrusted(m) for m in messages] == [data[:1280], data[1280:]]
    assert len(recs) > 130


def test_fragment_message_channel_zero_rules() -> None:
    (rec,) = fragment_message(
        0, 0, b"\x04", from_server=False, max_fragment=small_max, compress=False
    )
    assert rec == Record(channel=0, pnum=0, data=b"\x04", from_server=False)
    with pytest.raises(LocalProtocolError, match="one"):
        fragment_message(0, 1, bytes(11), from_server=False, max_fragment=small_max, compress=False)
    with pytest.raises(LocalProtocolError, match="compressed"):
        fragment_message(0, 1, b"\x04", from_server=False, max_fragment=small_max, compress=True)
    with pytest.raises(LocalProtocolError, match="number 0"):
        fragment_message(1, 0, b"x", from_server=False, max_fragment=small_max, compress=False)


def test_inflate_is_bounded_and_strict() -> None:
    bomb = deflate(bytes(2 << 20))
    assert len(bomb) < 4096
    with pytest.raises(WireError, match="beyond"):
        inflate_untrusted(bomb)
    assert inflate_untrusted(deflate(bytes(1 << 20))) == bytes(1 << 20)
    ok = deflate(b"hello world")
    assert inflate_untrusted(ok) == b"hello world"
    with pytest.raises(WireError, match="truncated"):
        inflate_untrusted(ok[:-2])
    with pytest.raises(WireError, match="trailing"):
        inflate_untrusted(ok + b"x")
    with pytest.raises(WireError):
        inflate_untrusted(b"\xff\xff\xff")
    with pytest.raises(WireError, match="truncated"):
        inflate_untrusted(b"")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_inflate_untrusted_only_raises_wire_error(blob: bytes) -> None:
    try:
        out = inflate_untrusted(blob, max_size=1000)
    except WireError:
        return
    assert len(out) <= 1000

"""Tests of resip.core.crypto: v2 packet protection per docs/PROTOCOL.md sections 2 and 3.

Covers the frozen golden packets (and an independent rebuild of them from the spec text),
round trips, forgeries and truncations (which must change no state), the replay window
(WireGuard's replay_test.go vectors ported), direction and session binding, key updates with
reordering across epochs, nonce uniqueness over 10^6 packets, and counter exhaustion.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.crypto import (
    HEADER_SIZE,
    MAX_COUNTER,
    MAX_DATAGRAM,
    MIN_DATAGRAM,
    OVERHEAD,
    TAG_SIZE,
    Header,
    HeaderProtection,
    KeyLimits,
    PacketProtector,
    ReplayWindow,
    Suite,
    derive_epoch_keys,
    derive_initial_secret,
)
from resip.core.errors import DecryptError, LocalProtocolError, WireError

SID = bytes.fromhex("5eed0123456789ab")
SECRET = bytes(range(32))
HP_KEY = bytes(range(0x40, 0x60))
HP_ID = 3
INNER = bytes.fromhex("0005") + b"hello"
REJECT = (WireError, DecryptError)


def make_hp() -> HeaderProtection:
    return HeaderProtection({HP_ID: HP_KEY}, HP_ID)


def make_pair(
    suite: Suite = Suite.AES_256_GCM,
    limits: KeyLimits | None = None,
    *,
    session_id: bytes = SID,
    secret: bytes = SECRET,
) -> tuple[PacketProtector, PacketProtector]:
    """(client, server) protectors of one session."""
    hp = make_hp()
    lim = limits if limits is not None else KeyLimits()
    client = PacketProtector(
        suite=suite, session_id=session_id, session_secret=secret, is_server=False, hp=hp,
        limits=lim,
    )  # fmt: skip
    server = PacketProtector(
        suite=suite, session_id=session_id, session_secret=secret, is_server=True, hp=hp,
        limits=lim,
    )  # fmt: skip
    return client, server


# --------------------------------------------------------------------------- golden packets

# Frozen v2 packets: INNER sealed under SID/SECRET/HP_KEY (key id 3) with
# update_after_packets=2, so counter 2 is the first packet of key epoch 1.
GOLDEN: dict[tuple[Suite, bool, int], str] = {
    (Suite.AES_256_GCM, False, 0): (
        "23ceaed1ad49ef3440ff5a9af2347034fa32bb46098d2e3e08b5b660cf162245b9c5d18c00fc96"
    ),
    (Suite.AES_256_GCM, False, 1): (
        "2358a78e5409fb5483637d07c95e35451069b63aef60932895a3c5ce045efce3767d618253b7ad"
    ),
    (Suite.AES_256_GCM, False, 2): (
        "23219f88e4385d6f70897f4bd5643122d85d64f66ff133ec6ff6cf9857997b885b25e06997e84f"
    ),
    (Suite.AES_256_GCM, True, 0): (
        "23211f21e83cea4427dc3cf317e6dc9d6f9ea7193f4490dd3d1d20939d795bff6926a946ef510f"
    ),
    (Suite.AES_256_GCM, True, 1): (
        "23477e309cdc00e7ad06c5f3c6baae933793746d4a4fdeeaa38944eaa8d27233bb5f4218c11ea8"
    ),
    (Suite.AES_256_GCM, True, 2): (
        "234f6663d22311196175aa703828edd3da7696f1020d06e370430e8891dbc6d2f18385c999c79e"
    ),
    (Suite.CHACHA20_POLY1305, False, 0): (
        "23ae5e0a7ed0229ad381c0e88e03cb35ef036e857c44e0b13c0dd2da5b6d44c0a6f236ccc7df29"
    ),
    (Suite.CHACHA20_POLY1305, False, 1): (
        "23c2215e364ef91aa5c552e54b2171d66b428c518f417a61b43982ebe2e9c2904a86782f92b8d0"
    ),
    (Suite.CHACHA20_POLY1305, False, 2): (
        "2345f7e8eb76daca2fbb72d266431c05ffc6ac25cfdb39741fe9a41ba4bb05307c54ba0e568b5c"
    ),
    (Suite.CHACHA20_POLY1305, True, 0): (
        "23b9848558acdd9eb3732145107d94a2266008eee0629b34fc47b10da5b898d6164f25478c847a"
    ),
    (Suite.CHACHA20_POLY1305, True, 1): (
        "233eb38255a2cf242bbfd5629df73fb4ca1f4f553b47fac68f1e0b3e0c4babcb289e253cdd08e5"
    ),
    (Suite.CHACHA20_POLY1305, True, 2): (
        "230ff34d14a5b84855ba55242ce6d9d156f84c3b4c13204b7454315ad338bfdb36a48af81ca7d0"
    ),
}


def reference_packet(suite: Suite, from_server: bool, counter: int, epoch: int) -> bytes:
    """Build a packet straight from the PROTOCOL.md text, without resip.core.crypto."""
    direction = b"s2c" if from_server else b"c2s"
    secret = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"resip v2" + SID, info=b"resip v2 " + direction
    ).derive(SECRET)
    for _ in range(epoch):
        secret = HKDFExpand(algorithm=hashes.SHA256(), length=32, info=b"resip ku").derive(secret)
    key = HKDFExpand(algorithm=hashes.SHA256(), length=32, info=b"resip key").derive(secret)
    iv = HKDFExpand(algorithm=hashes.SHA256(), length=12, info=b"resip iv").derive(secret)
    nonce = bytes(a ^ b for a, b in zip(iv, bytes(4) + counter.to_bytes(8, "big"), strict=True))
    flags = (2 if from_server else 0) | (epoch & 1)
    header = bytes([0x20 | HP_ID, flags]) + SID + counter.to_bytes(6, "big")
    aead = AESGCM(key) if suite == Suite.AES_256_GCM else ChaCha20Poly1305(key)
    ciphertext = aead.encrypt(nonce, INNER, header)
    ecb = Cipher(algorithms.AES(HP_KEY), modes.ECB()).encryptor()
    mask = ecb.update(ciphertext[:16]) + ecb.finalize()
    masked = header[:1] + bytes(h ^ m for h, m in zip(header[1:], mask[:15], strict=True))
    return masked + ciphertext


def sealed_golden(suite: Suite, from_server: bool) -> list[bytes]:
    client, server = make_pair(suite, KeyLimits(update_after_packets=2))
    sender = server if from_server else client
    return [sender.seal(INNER, now=0.0) for _ in range(3)]


@pytest.mark.parametrize("suite", list(Suite))
@pytest.mark.parametrize("from_server", [False, True])
def test_golden_packets_are_frozen(suite: Suite, from_server: bool) -> None:
    packets = sealed_golden(suite, from_server)
    for counter, packet in enumerate(packets):
        assert packet.hex() == GOLDEN[(suite, from_server, counter)]
        assert len(packet) == len(INNER) + OVERHEAD


@pytest.mark.parametrize("suite", list(Suite))
@pytest.mark.parametrize("from_server", [False, True])
def test_golden_packets_match_the_spec_text(suite: Suite, from_server: bool) -> None:
    for counter in range(3):
        epoch = 1 if counter == 2 else 0
        expected = reference_packet(suite, from_server, counter, epoch)
        assert expected.hex() == GOLDEN[(suite, from_server, counter)]


@pytest.mark.parametrize("suite", list(Suite))
@pytest.mark.parametrize("from_server", [False, True])
def test_golden_packets_open(suite: Suite, from_server: bool) -> None:
    client, server = make_pair(suite, KeyLimits(update_after_packets=2))
    receiver = client if from_server else server
    for counter in range(3):
        opened = receiver.open_untrusted(
            bytes.fromhex(GOLDEN[(suite, from_server, counter)]), now=0.0
        )
        assert opened.plaintext == INNER
        assert opened.epoch == (1 if counter == 2 else 0)
        assert opened.header == Header(HP_ID, from_server, opened.epoch & 1, SID, counter)
    assert receiver.recv_epoch == 1


def test_key_schedule_known_answer() -> None:
    secret = derive_initial_secret(SECRET, SID, from_server=False)
    assert secret.hex() == "e169ae7314b554738f43534ea635588ba4ea5466de0390630f591052dec6e390"
    key, iv, next_secret = derive_epoch_keys(secret)
    assert key.hex() == "e9c4f0c01e4141a9e281925d67d7467fcb7d1ace4a48934367ab51808fe46f77"
    assert iv.hex() == "f9692e92da370a24756c2614"
    assert next_secret.hex() == "b0333e7af96df946e92319aabc6e6dd500593db3c975f043ae2fce6fc3c7ef34"
    assert derive_initial_secret(SECRET, SID, from_server=True) != secret


def test_header_pack_layout() -> None:
    header = Header(key_id=3, from_server=True, key_phase=1, session_id=SID, counter=0x010203040506)
    assert header.pack() == bytes.fromhex("2303") + SID + bytes.fromhex("010203040506")
    top = Header(0, False, 0, SID, MAX_COUNTER).pack()
    assert top[10:] == b"\xff" * 6
    with pytest.raises(ValueError, match="counter"):
        Header(0, False, 0, SID, MAX_COUNTER + 1).pack()
    with pytest.raises(ValueError, match="key_id"):
        Header(16, False, 0, SID, 0).pack()


def test_constants() -> None:
    assert (HEADER_SIZE, TAG_SIZE, OVERHEAD, MIN_DATAGRAM, MAX_DATAGRAM) == (16, 16, 32, 34, 65535)
    assert MAX_COUNTER == 2**48 - 1
    assert ReplayWindow.SIZE == 4096


# --------------------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None)
@given(
    suite=st.sampled_from(list(Suite)),
    inners=st.lists(st.binary(min_size=2, max_size=1400), min_size=1, max_size=4),
)
def test_round_trip_both_directions(suite: Suite, inners: list[bytes]) -> None:
    client, server = make_pair(suite)
    for i, inner in enumerate(inners):
        up = client.seal(inner, now=float(i))
        assert len(up) == len(inner) + OVERHEAD
        opened = server.open_untrusted(up, now=float(i))
        assert opened.plaintext == inner
        assert opened.header.counter == i
        assert not opened.header.from_server
        down = server.seal(inner, now=float(i))
        back = client.open_untrusted(down, now=float(i))
        assert back.plaintext == inner
        assert back.header.from_server


def test_header_protection_hides_the_header() -> None:
    client, _ = make_pair()
    packet = client.seal(INNER, now=0.0)
    # Session id and counter 0 must not appear in the clear.
    assert SID not in packet
    assert packet[10:16] != bytes(6)
    header = make_hp().unmask_untrusted(packet)
    assert header == Header(HP_ID, False, 0, SID, 0)
    assert make_hp().unmask_untrusted(bytearray(packet)) == header  # type: ignore[arg-type,unused-ignore]
    assert make_hp().unmask_untrusted(memoryview(packet)) == header  # type: ignore[arg-type,unused-ignore]


def _outcome(server: PacketProtector, datagram: bytes, header: Header | None = None) -> object:
    try:
        opened = server.open_untrusted(datagram, now=0.0, header=header)
    except (WireError, DecryptError) as exc:
        return (type(exc), str(exc), server.receive_state())
    return (opened, server.receive_state())


def test_open_with_the_routed_header_is_exactly_open() -> None:
    """Opening with the header the endpoint unmasked gives what unmasking here gives."""
    client, plain = make_pair()
    _, routed = make_pair()
    packets = [client.seal(bytes([i]) * 40, now=0.0) for i in range(3)]
    last = packets[2]
    candidates = [*packets, packets[1], packets[0][:20]]  # a replay, a runt
    # every header byte and the mask sample, flipped
    candidates += [last[:i] + bytes([last[i] ^ 0x10]) + last[i + 1 :] for i in range(32)]
    hp = routed._hp
    for datagram in candidates:
        try:
            header = hp.unmask_untrusted(datagram)
        except WireError:
            continue  # the endpoint drops it: nothing to hand over
        assert _outcome(routed, datagram, header) == _outcome(plain, datagram)


def test_the_handed_header_is_what_opens() -> None:
    """The header passed in is used, not unmasked again: a wrong one fails to authenticate."""
    client, server = make_pair()
    hp = server._hp
    first, second = client.seal(INNER, now=0.0), client.seal(INNER, now=0.0)
    with pytest.raises(DecryptError):
        server.open_untrusted(first, now=0.0, header=hp.unmask_untrusted(second))
    assert server.open_untrusted(first, now=0.0, header=hp.unmask_untrusted(first)).plaintext
    assert server.open_untrusted(second, now=0.0).header.counter == 1


def test_seal_rejects_bad_inner_sizes() -> None:
    client, _ = make_pair()
    for bad in (b"", b"x", bytes(MAX_DATAGRAM - OVERHEAD + 1)):
        with pytest.raises(LocalProtocolError):
            client.seal(bad, now=0.0)
    assert client.next_counter == 0
    assert len(client.seal(bytes(MAX_DATAGRAM - OVERHEAD), now=0.0)) == MAX_DATAGRAM


# --------------------------------------------------------------------------- forgeries


def test_every_single_byte_flip_fails_and_changes_nothing() -> None:
    client, server = make_pair()
    server.open_untrusted(client.seal(b"\x00\x00warmup", now=0.0), now=0.0)
    packet = client.seal(bytes(range(100 - OVERHEAD)), now=0.0)
    assert len(packet) == 100
    before = server.receive_state()
    for position in range(len(packet)):
        for flip in (0x01, 0x80, 0xFF):
            forged = bytearray(packet)
            forged[position] ^= flip
            with pytest.raises(REJECT):
                server.open_untrusted(bytes(forged), now=0.0)
            assert server.receive_state() == before, (position, flip)
    assert server.failed_decrypts > 0
    assert server.open_untrusted(packet, now=0.0).plaintext == bytes(range(100 - OVERHEAD))
    assert server.largest_received == 1


def test_every_truncation_and_extension_fails() -> None:
    client, server = make_pair()
    packet = client.seal(bytes(200), now=0.0)
    before = server.receive_state()
    for size in range(len(packet)):
        with pytest.raises(REJECT):
            server.open_untrusted(packet[:size], now=0.0)
        with pytest.raises(REJECT):
            server.open_untrusted(packet[len(packet) - size :], now=0.0)
    for extra in (b"\x00", b"\x00" * 16, packet):
        with pytest.raises(REJECT):
            server.open_untrusted(packet + extra, now=0.0)
    assert server.receive_state() == before
    server.open_untrusted(packet, now=0.0)


@st.composite
def mutations(draw: st.DrawFn, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "insert", "delete", "xor"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif data:
            data[pos] ^= draw(st.integers(1, 255))
    return bytes(data)


_MUT_CLIENT, _MUT_SERVER = make_pair()
_MUT_PACKETS = [_MUT_CLIENT.seal(bytes(range(i, i + 60)), now=0.0) for i in range(8)]


@settings(max_examples=200, deadline=None)
@given(data=st.data(), index=st.integers(0, len(_MUT_PACKETS) - 1))
def test_random_mutation_fails_with_wire_or_decrypt_error(data: st.DataObject, index: int) -> None:
    _, server = make_pair()
    packet = _MUT_PACKETS[index]
    mutated = data.draw(mutations(packet))
    if mutated == packet:
        return
    before = server.receive_state()
    with pytest.raises(REJECT):
        server.open_untrusted(mutated, now=0.0)
    assert server.receive_state() == before


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=200), first=st.sampled_from([0x23, 0x20, 0x13, 0x33, 0xFF]))
def test_random_bytes_only_raise_wire_or_decrypt_error(blob: bytes, first: int) -> None:
    _, server = make_pair()
    datagram = bytes([first]) + blob
    with contextlib.suppress(WireError):
        make_hp().unmask_untrusted(datagram)
    with pytest.raises(REJECT):
        server.open_untrusted(datagram, now=0.0)
    assert server.largest_received == -1


def forge(counter: int, *, phase: int, from_server: bool = False, body_size: int = 40) -> bytes:
    """A well-formed datagram with a chosen header and a random (wrong) ciphertext."""
    header = Header(HP_ID, from_server, phase, SID, counter).pack()
    body = random.Random(counter).randbytes(body_size)
    return make_hp().mask(header, body) + body


@pytest.mark.parametrize("phase", [0, 1])
def test_far_forward_forgery_moves_nothing(phase: int) -> None:
    client, server = make_pair()
    genuine = [client.seal(INNER, now=0.0) for _ in range(3)]
    server.open_untrusted(genuine[0], now=0.0)
    before = server.receive_state()
    with pytest.raises(DecryptError):
        server.open_untrusted(forge(10**6, phase=phase), now=0.0)
    assert server.receive_state() == before
    assert server.recv_epoch == 0
    assert server.failed_decrypts == 1
    assert server.open_untrusted(genuine[2], now=0.0).header.counter == 2
    assert server.open_untrusted(genuine[1], now=0.0).header.counter == 1


def test_unmask_untrusted_checks() -> None:
    hp = make_hp()
    client, _ = make_pair()
    packet = client.seal(INNER, now=0.0)
    with pytest.raises(WireError, match="outside"):
        hp.unmask_untrusted(packet[: MIN_DATAGRAM - 1])
    with pytest.raises(WireError, match="outside"):
        hp.unmask_untrusted(packet + bytes(MAX_DATAGRAM))
    with pytest.raises(WireError, match="key id"):
        hp.unmask_untrusted(bytes([0x13]) + packet[1:])  # version 1
    with pytest.raises(WireError, match="key id"):
        hp.unmask_untrusted(bytes([0x24]) + packet[1:])  # unknown key id 4
    body = bytes(20)
    for flags in (0x04, 0x80, 0xFC):
        header = bytes([0x23, flags]) + SID + bytes(6)
        with pytest.raises(WireError, match="reserved"):
            hp.unmask_untrusted(hp.mask(header, body) + body)


def test_open_rejects_reserved_flags_as_wire_error() -> None:
    _, server = make_pair()
    hp = make_hp()
    body = bytes(20)
    for flags in (0x04, 0x40, 0x80):
        header = bytes([0x20 | HP_ID, flags]) + SID + bytes(6)
        with pytest.raises(WireError, match="reserved"):
            server.open_untrusted(hp.mask(header, body) + body, now=0.0)
    assert server.failed_decrypts == 0


def test_header_protection_rejects_bad_setup() -> None:
    with pytest.raises(ValueError, match=r"0\.\.15"):
        HeaderProtection({16: HP_KEY}, 16)
    with pytest.raises(ValueError, match="32 bytes"):
        HeaderProtection({1: bytes(16)}, 1)
    with pytest.raises(ValueError, match="no key"):
        HeaderProtection({1: HP_KEY}, 2)


# --------------------------------------------------------------------------- direction, session


def test_wrong_direction_is_refused() -> None:
    client, server = make_pair()
    client_b, server_b = make_pair()
    up = client.seal(INNER, now=0.0)
    down = server.seal(INNER, now=0.0)
    with pytest.raises(DecryptError, match="direction"):
        client_b.open_untrusted(up, now=0.0)
    with pytest.raises(DecryptError, match="direction"):
        server_b.open_untrusted(down, now=0.0)
    # A forged direction bit does not help: the bit is authenticated.
    with pytest.raises(DecryptError):
        client_b.open_untrusted(forge(0, phase=0, from_server=True), now=0.0)
    assert client_b.largest_received == server_b.largest_received == -1


def test_other_session_is_refused() -> None:
    client, _ = make_pair()
    _, other_sid = make_pair(session_id=bytes(8))
    _, other_secret = make_pair(secret=bytes(32))
    packet = client.seal(INNER, now=0.0)
    with pytest.raises(DecryptError, match="another session"):
        other_sid.open_untrusted(packet, now=0.0)
    with pytest.raises(DecryptError, match="authentication"):
        other_secret.open_untrusted(packet, now=0.0)
    assert other_secret.largest_received == -1


def test_server_seals_with_the_key_id_the_client_holds() -> None:
    old, new = bytes(range(32)), bytes(range(1, 33))
    server_hp = HeaderProtection({1: old, 2: new}, 2)
    client_hp = HeaderProtection({1: old}, 1)
    kwargs = {"suite": Suite.AES_256_GCM, "session_id": SID, "session_secret": SECRET}
    client = PacketProtector(**kwargs, is_server=False, hp=client_hp)  # type: ignore[arg-type]
    server = PacketProtector(**kwargs, is_server=True, hp=server_hp, hp_key_id=1)  # type: ignore[arg-type]
    assert client.open_untrusted(server.seal(INNER, now=0.0), now=0.0).header.key_id == 1
    assert server.open_untrusted(client.seal(INNER, now=0.0), now=0.0).plaintext == INNER
    with pytest.raises(ValueError, match="unknown"):
        PacketProtector(**kwargs, is_server=True, hp=client_hp, hp_key_id=2)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- replay window


def replay_vectors() -> Iterator[tuple[int, bool]]:
    """wireguard-go replay/replay_test.go (from the Linux kernel), on our window.

    WireGuard refuses ``largest - n > windowSize``; ours refuses ``largest - n >= SIZE``, so
    its ``windowSize`` is our ``SIZE - 1`` and ``T_LIM = SIZE``. Its message limit
    (RejectAfterMessages) is our 48-bit counter space: counters above MAX_COUNTER are refused.
    """
    t_lim = ReplayWindow.SIZE
    limit = MAX_COUNTER + 1
    yield from [
        (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
        (t_lim, True), (t_lim - 1, True), (t_lim - 1, False), (t_lim - 2, True), (2, True),
        (2, False), (t_lim + 16, True), (3, False), (t_lim + 16, False), (t_lim * 4, True),
        (t_lim * 4 - (t_lim - 1), True), (10, False), (t_lim * 4 - t_lim, False),
        (t_lim * 4 - (t_lim + 1), False), (t_lim * 4 - (t_lim - 2), True),
        (t_lim * 4 + 1 - t_lim, False), (0, False), (limit, False), (limit - 1, True),
        (limit, False), (limit - 1, False), (limit - 2, True), (limit + 1, False),
        (limit + 2, False), (limit - 2, False), (limit - 3, True), (0, False),
    ]  # fmt: skip


def check_and_mark(window: ReplayWindow, counter: int) -> bool:
    if window.seen(counter):
        return False
    window.mark(counter)
    return True


def test_wireguard_replay_vectors() -> None:
    window = ReplayWindow()
    for number, (counter, expected) in enumerate(replay_vectors(), start=1):
        assert check_and_mark(window, counter) is expected, (number, counter)
    window = ReplayWindow()
    for number, (counter, expected) in enumerate(replay_vectors(), start=1):
        assert window.accept(counter) is expected, (number, counter)


W = ReplayWindow.SIZE - 1  # WireGuard's windowSize in our terms


@pytest.mark.parametrize(
    ("sequence", "tail"),
    [
        (range(1, W + 1), [(0, True), (0, False)]),  # bulk 1
        (range(2, W + 2), [(1, True), (0, False)]),  # bulk 2
        (range(W + 1, 0, -1), []),  # bulk 3
        (range(W + 2, 1, -1), [(0, False)]),  # bulk 4
        (range(W, 0, -1), [(W + 1, True), (0, False)]),  # bulk 5
        (range(W, 0, -1), [(0, True), (W + 1, True)]),  # bulk 6
    ],
)
def test_wireguard_bulk_vectors(sequence: range, tail: list[tuple[int, bool]]) -> None:
    window = ReplayWindow()
    for counter in sequence:
        assert check_and_mark(window, counter), counter
    for counter, expected in tail:
        assert check_and_mark(window, counter) is expected, counter


def random_walk(steps: list[int]) -> list[int]:
    """Counters near a moving front: mostly forward, sometimes back across the window edge."""
    counters, position = [], 0
    for step in steps:
        position = max(0, position + step)
        counters.append(position)
    return counters


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.lists(st.integers(0, 3 * ReplayWindow.SIZE), max_size=300),
        st.lists(
            st.one_of(
                st.integers(-ReplayWindow.SIZE - 70, 70),
                st.sampled_from([64, 65, 4095, 4096, 4097, 8192, 8256]),
            ),
            max_size=400,
        ).map(random_walk),
    )
)
def test_replay_window_matches_a_set_model(counters: list[int]) -> None:
    window = ReplayWindow()
    delivered: set[int] = set()
    largest = -1
    for counter in counters:
        expected = counter not in delivered and largest - counter < ReplayWindow.SIZE
        assert window.accept(counter) is expected
        if expected:
            delivered.add(counter)
            largest = max(largest, counter)
        assert window.largest == largest
    for counter in range(max(0, largest - ReplayWindow.SIZE - 2), largest + 2):
        expected_seen = counter in delivered or largest - counter >= ReplayWindow.SIZE
        assert window.seen(counter) is expected_seen, counter


def test_replay_through_the_protector() -> None:
    client, server = make_pair()
    packets = [client.seal(INNER, now=0.0) for _ in range(ReplayWindow.SIZE + 2)]
    server.open_untrusted(packets[5], now=0.0)
    server.open_untrusted(packets[3], now=0.0)  # reordered, inside the window
    with pytest.raises(DecryptError, match="replay"):
        server.open_untrusted(packets[3], now=0.0)
    server.open_untrusted(packets[ReplayWindow.SIZE], now=0.0)
    before = server.receive_state()
    with pytest.raises(DecryptError, match="replay"):  # exactly SIZE below the largest
        server.open_untrusted(packets[0], now=0.0)
    with pytest.raises(DecryptError, match="replay"):
        server.open_untrusted(packets[5], now=0.0)
    assert server.receive_state() == before
    opened = server.open_untrusted(packets[1], now=0.0)  # SIZE - 1 below: still inside
    assert opened.header.counter == 1
    assert server.failed_decrypts == 0  # replays are not authentication failures


# --------------------------------------------------------------------------- key update


def test_key_updates_in_both_directions_across_several_epochs() -> None:
    client, server = make_pair(limits=KeyLimits(update_after_packets=100))
    for i in range(550):
        up = client.seal(i.to_bytes(4, "big"), now=0.0)
        got = server.open_untrusted(up, now=0.0)
        assert got.plaintext == i.to_bytes(4, "big")
        client.on_peer_acked(got.header.counter)  # the session does this on every ACK
        down = server.seal(i.to_bytes(4, "big"), now=0.0)
        opened = client.open_untrusted(down, now=0.0)
        server.on_peer_acked(opened.header.counter)
        assert opened.epoch == i // 100
        assert opened.header.key_phase == (i // 100) & 1
    assert client.send_epoch == server.recv_epoch == 5
    assert server.send_epoch == client.recv_epoch == 5
    assert client.packets_sealed == server.packets_sealed == 550


def test_time_based_and_forced_key_update() -> None:
    client, server = make_pair(limits=KeyLimits(update_after_seconds=60.0))

    def deliver(t: float) -> int:
        opened = server.open_untrusted(client.seal(INNER, now=t), now=t)
        client.on_peer_acked(opened.header.counter)
        return opened.epoch

    assert deliver(0.0) == 0
    assert deliver(59.9) == 0
    assert deliver(60.0) == 1
    client.update_keys(now=61.0)
    assert client.send_epoch == 2
    assert deliver(61.0) == 2
    assert deliver(120.9) == 2
    assert deliver(121.0) == 3


def test_no_second_update_before_the_peer_follows() -> None:
    """A long outage with hourly updates must not leave the receiver two epochs behind."""
    client, server = make_pair(limits=KeyLimits(update_after_seconds=3600.0))
    assert server.open_untrusted(client.seal(INNER, now=0.0), now=0.0).epoch == 0
    # Hours of probes into a dead link: one update, then no more until acknowledged.
    lost = [client.seal(INNER, now=3600.0 * h) for h in range(1, 73)]
    assert client.send_epoch == 1
    assert not client.send_epoch_confirmed
    # The link returns: the receiver can still open the newest probe.
    opened = server.open_untrusted(lost[-1], now=73 * 3600.0)
    assert opened.epoch == 1
    client.on_peer_acked(opened.header.counter)
    assert client.send_epoch_confirmed
    assert server.open_untrusted(client.seal(INNER, now=74 * 3600.0), now=74 * 3600.0).epoch == 2


def test_previous_epoch_reordering_inside_and_after_the_discard_window() -> None:
    limits = KeyLimits(update_after_packets=100, old_key_discard_seconds=10.0)
    client, server = make_pair(limits=limits)
    packets = [client.seal(i.to_bytes(2, "big"), now=0.0) for i in range(150)]
    for counter in range(90):
        server.open_untrusted(packets[counter], now=0.0)
    # The first epoch-1 packet to arrive is 105; 100..104 are reordered behind it.
    assert server.open_untrusted(packets[105], now=1.0).epoch == 1
    assert server.recv_epoch == 1
    assert server.open_untrusted(packets[101], now=2.0).epoch == 1
    assert server.open_untrusted(packets[95], now=5.0).epoch == 0  # old key, inside window
    assert server.open_untrusted(packets[90], now=10.9).epoch == 0
    before = server.receive_state()
    for late in (96, 97, 99):
        with pytest.raises(DecryptError):
            server.open_untrusted(packets[late], now=11.0)  # 1.0 + 10 s: discarded
    with pytest.raises(DecryptError):
        server.open_untrusted(packets[98], now=1000.0)
    assert server.receive_state() == before
    assert server.open_untrusted(packets[100], now=11.0).epoch == 1  # current epoch, below first
    assert server.open_untrusted(packets[149], now=11.0).epoch == 1
    assert server.failed_decrypts == 0


def test_only_one_previous_epoch_is_kept() -> None:
    """After two updates, epoch e-1 packets still open; epoch e-2 ones (same phase as e) fail."""
    client, server = make_pair(limits=KeyLimits(update_after_packets=10))
    packets = []
    for _ in range(30):
        packets.append(client.seal(INNER, now=0.0))
        client.on_peer_acked(client.next_counter - 1)  # an ideal peer acknowledges at once
    for counter in (0, 1, 10, 20):
        server.open_untrusted(packets[counter], now=0.0)
    assert server.recv_epoch == 2
    assert server.open_untrusted(packets[15], now=0.0).epoch == 1
    before = server.receive_state()
    with pytest.raises(DecryptError):
        server.open_untrusted(packets[5], now=0.0)
    assert server.receive_state() == before
    assert server.failed_decrypts == 1
    assert server.open_untrusted(packets[25], now=0.0).epoch == 2


def test_nonces_never_repeat_across_a_million_packets_and_ten_key_updates() -> None:
    seen: set[tuple[int, bytes]] = set()
    epochs: set[int] = set()
    count = 0

    def audit(epoch: int, nonce: bytes) -> None:
        nonlocal count
        count += 1
        seen.add((epoch, nonce))
        epochs.add(epoch)

    hp = make_hp()
    client = PacketProtector(
        suite=Suite.AES_256_GCM, session_id=SID, session_secret=SECRET, is_server=False, hp=hp,
        limits=KeyLimits(update_after_packets=100_000), nonce_audit=audit,
    )  # fmt: skip
    seal = client.seal
    for i in range(1_000_000):
        seal(b"\x00\x00", now=0.0)
        if i % 1000 == 999:
            client.on_peer_acked(i)  # the peer keeps up, so every update may happen
    assert count == 1_000_000
    assert len(seen) == count
    assert epochs == set(range(10))
    # Also unique as bare nonces: every epoch has its own IV, so this holds with overwhelming
    # probability and would catch an IV that failed to change across an update.
    assert len({nonce for _, nonce in seen}) == count


# --------------------------------------------------------------------------- limits


def test_counter_exhaustion_raises_local_protocol_error() -> None:
    client, server = make_pair(limits=KeyLimits(max_counter=5, update_after_packets=4))
    packets = [client.seal(INNER, now=0.0) for _ in range(6)]
    assert client.next_counter == 6
    for _ in range(2):
        with pytest.raises(LocalProtocolError, match="exhausted"):
            client.seal(INNER, now=0.0)
    assert client.next_counter == 6
    assert [server.open_untrusted(p, now=0.0).header.counter for p in packets] == list(range(6))
    with pytest.raises(ValueError, match="max_counter"):
        KeyLimits(max_counter=MAX_COUNTER + 1)


def test_integrity_limit() -> None:
    client, server = make_pair(limits=KeyLimits(max_failed_decrypts=3))
    genuine = client.seal(INNER, now=0.0)
    for counter in range(3):
        assert not server.integrity_limit_reached
        with pytest.raises(DecryptError):
            server.open_untrusted(forge(counter, phase=0), now=0.0)
    assert server.integrity_limit_reached
    with pytest.raises(DecryptError, match="integrity"):
        server.open_untrusted(genuine, now=0.0)


def test_limits_validation() -> None:
    for bad in (
        {"update_after_packets": 0},
        {"update_after_seconds": 0.0},
        {"old_key_discard_seconds": -1.0},
        {"max_failed_decrypts": 0},
        {"max_counter": -1},
    ):
        with pytest.raises(ValueError):
            KeyLimits(**bad)

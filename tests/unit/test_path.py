"""PathManager: the server's reply address, challenges and the amplification limit."""

from __future__ import annotations

import itertools

from resip.core.path import AMPLIFICATION_FACTOR, PathManager

A = ("192.0.2.1", 1000)
B = ("198.51.100.7", 2000)


def manager() -> PathManager:
    counter = itertools.count()
    return PathManager(lambda n: next(counter).to_bytes(n, "big"))


def test_first_address_is_trusted_and_unlimited() -> None:
    paths = manager()
    assert paths.on_packet(A, 100, newest=True, now=0.0, timeout=2.0) is None
    assert paths.current is not None and paths.current.validated
    assert paths.challenge_to_send() is None
    assert paths.allowance() == 1 << 62


def test_new_address_is_challenged_once_then_repeated_only_to_it() -> None:
    paths = manager()
    paths.on_packet(A, 100, newest=True, now=0.0, timeout=2.0)
    assert paths.on_packet(B, 120, newest=True, now=1.0, timeout=2.0) == (A, B)
    assert paths.challenge_pending
    first = paths.challenge_to_send()
    assert first is not None and first[1] == B and first[2] is True
    assert not paths.challenge_pending  # nothing makes a packet just for the repeats
    repeat = paths.challenge_to_send()
    assert repeat == (first[0], B, False)
    assert paths.allowance() == AMPLIFICATION_FACTOR * 120
    paths.on_sent(300)
    assert paths.allowance() == AMPLIFICATION_FACTOR * 120 - 300
    assert paths.on_response(first[0])
    assert paths.challenge_to_send() is None
    assert paths.allowance() == 1 << 62


def test_wrong_or_stale_response_validates_nothing() -> None:
    paths = manager()
    paths.on_packet(A, 100, newest=True, now=0.0, timeout=2.0)
    paths.on_packet(B, 100, newest=True, now=1.0, timeout=2.0)
    challenge = paths.challenge_to_send()
    assert challenge is not None
    assert not paths.on_response(b"\xff" * 8)
    assert paths.current is not None and not paths.current.validated


def test_silent_new_address_falls_back_to_the_validated_one() -> None:
    paths = manager()
    paths.on_packet(A, 100, newest=True, now=0.0, timeout=2.0)
    paths.on_packet(B, 100, newest=True, now=1.0, timeout=2.0)
    assert paths.next_timer() == 3.0
    assert paths.handle_timer(now=2.9, timeout=2.0) is None
    assert paths.handle_timer(now=3.0, timeout=2.0) == (B, A)
    assert paths.current is not None and paths.current.address == A
    assert paths.challenge_to_send() is None


def test_old_or_replayed_packets_move_nothing() -> None:
    paths = manager()
    paths.on_packet(A, 100, newest=True, now=0.0, timeout=2.0)
    assert paths.on_packet(B, 100, newest=False, now=1.0, timeout=2.0) is None
    assert paths.current is not None and paths.current.address == A


def test_validated_addresses_are_remembered_when_bouncing() -> None:
    paths = manager()
    paths.on_packet(A, 100, newest=True, now=0.0, timeout=2.0)
    paths.on_packet(B, 100, newest=True, now=1.0, timeout=2.0)
    challenge = paths.challenge_to_send()
    assert challenge is not None and paths.on_response(challenge[0])
    assert paths.on_packet(A, 100, newest=True, now=2.0, timeout=2.0) == (B, A)
    assert paths.on_packet(B, 100, newest=True, now=3.0, timeout=2.0) == (A, B)
    assert paths.challenge_to_send() is None  # no new round trip for a known address

"""Endpoint: session creation, demultiplexing by session id, limits, silent drops."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection
from resip.core.session import Role, Session
from resip.server.endpoint import Endpoint, SessionLimitReached
from tests.server.conftest import client_session

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 31266)


def bare(session: Session) -> Session:
    """The registry entry of these tests: the session itself."""
    return session


def make_endpoint(max_sessions: int = 4) -> Endpoint[Session]:
    rng = random.Random(7)
    return Endpoint.generate(SessionConfig(), max_sessions=max_sessions, random_bytes=rng.randbytes)


def first_datagram(credentials: dict[str, object]) -> bytes:
    client = client_session(credentials, peer=SERVER, now=0.0)
    datagrams = client.datagrams_to_send(now=0.0)
    assert datagrams, "a new client sends a keep-alive at once"
    return datagrams[0][0]


def test_credentials_describe_a_server_session() -> None:
    endpoint = make_endpoint()
    session, creds = endpoint.create_session(0.0, bare)
    assert session.role is Role.SERVER
    assert creds["session_id"] == session.session_id.hex()
    assert len(bytes.fromhex(str(creds["session_id"]))) == 8
    assert len(bytes.fromhex(str(creds["secret"]))) == 32
    assert len(bytes.fromhex(str(creds["hp_key"]))) == 32
    assert creds["suite"] == 1
    assert creds["hp_key_id"] == endpoint.hp.current_key_id
    assert creds["packet_size"] == 1200
    assert creds["idle_timeout"] == SessionConfig().idle_timeout
    assert endpoint.get(session.session_id) is session
    assert len(endpoint) == 1
    assert "secret" not in repr(endpoint)


def test_genuine_packet_is_routed_and_authenticates() -> None:
    endpoint = make_endpoint()
    session, creds = endpoint.create_session(0.0, bare)
    datagram = first_datagram(creds)
    routed = endpoint.route_untrusted(datagram)
    assert routed is not None
    assert routed[0] is session
    assert routed[1] == endpoint.hp.unmask_untrusted(datagram)
    assert session.receive_datagram(datagram, CLIENT, now=0.01, header=routed[1])
    assert session.packets_received == 1
    assert session.peer == CLIENT
    assert endpoint.stats.routed == 1


class _CountingEcb:
    """Stands in for a header-protection encryptor and counts the blocks it masks."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def update(self, data: bytes) -> bytes:
        self.calls += 1
        return bytes(self.inner.update(data))


def test_a_routed_datagram_is_unmasked_once() -> None:
    endpoint = make_endpoint()
    session, creds = endpoint.create_session(0.0, bare)
    datagram = first_datagram(creds)
    table: dict[int, Any] = endpoint.hp._by_first_byte  # shared with the session's protector
    counting = _CountingEcb(table[datagram[0]])
    table[datagram[0]] = counting
    try:
        routed = endpoint.route_untrusted(datagram)
        assert routed is not None
        assert routed[0] is session
        session.receive_datagram(datagram, CLIENT, now=0.01, header=routed[1])
    finally:
        table[datagram[0]] = counting.inner
    assert session.packets_received == 1
    assert counting.calls == 1


def test_unknown_session_id_is_dropped_silently_and_counted() -> None:
    endpoint = make_endpoint()
    session, creds = endpoint.create_session(0.0, bare)
    stranger = dict(creds, session_id=os.urandom(8).hex())
    datagram = first_datagram(stranger)
    assert endpoint.route_untrusted(datagram) is None
    assert endpoint.stats.unknown_session == 1
    assert session.packets_received == 0
    assert session.datagrams_to_send(now=0.0) == []


def test_forged_datagrams_are_counted_not_raised() -> None:
    endpoint = make_endpoint()
    _, creds = endpoint.create_session(0.0, bare)
    rng = random.Random(1)
    forged = [rng.randbytes(rng.randrange(0, 1500)) for _ in range(500)]
    forged += [b"", b"\x20" * 33, b"\x20" * 65536]
    for datagram in forged:
        assert endpoint.route_untrusted(datagram) is None
    assert endpoint.stats.dropped == len(forged)
    assert endpoint.stats.routed == 0
    # Masked with another header-protection key: unmasks to garbage, never to our session.
    alien = dict(creds, hp_key=os.urandom(32).hex())
    assert endpoint.route_untrusted(first_datagram(alien)) is None


def test_session_limit_is_a_clear_error_and_terminated_sessions_free_room() -> None:
    endpoint = make_endpoint(max_sessions=2)
    first, _ = endpoint.create_session(0.0, bare)
    endpoint.create_session(0.0, bare)
    with pytest.raises(SessionLimitReached, match="maximum of 2 sessions"):
        endpoint.create_session(0.0, bare)
    first.close(0, "done", now=1.0)
    assert first.terminated
    endpoint.create_session(1.0, bare)  # the terminated one was swept
    assert first not in endpoint.sessions()


def test_terminated_session_is_removed_when_its_packets_arrive() -> None:
    endpoint = make_endpoint()
    session, creds = endpoint.create_session(0.0, bare)
    session.close(0, "gone", now=1.0)
    assert endpoint.route_untrusted(first_datagram(creds)) is None
    assert endpoint.get(session.session_id) is None


def test_remove_forgets_a_session() -> None:
    endpoint = make_endpoint()
    session, creds = endpoint.create_session(0.0, bare)
    assert endpoint.remove(session.session_id) is session
    assert endpoint.remove(session.session_id) is None
    assert endpoint.route_untrusted(first_datagram(creds)) is None


def test_hp_key_must_match() -> None:
    key = os.urandom(32)
    hp = HeaderProtection({3: key}, 3)
    Endpoint(SessionConfig(), hp, hp_key=key, max_sessions=1)
    with pytest.raises(ValueError, match="hp_key"):
        Endpoint(SessionConfig(), hp, hp_key=os.urandom(32), max_sessions=1)

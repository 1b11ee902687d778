"""The session's rooms alone: the ACK range walk, the roles, ACK state, the packet builder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resip.core.ack_state import AckState
from resip.core.channel import SendSide
from resip.core.config import SessionConfig
from resip.core.errors import LocalProtocolError
from resip.core.loss_recovery import keys_in_ranges
from resip.core.packet_builder import Packet
from resip.core.roles import ClientRole, Role, ServerRole, make_role
from resip.core.wire import Proto

ranges_strategy = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=8,
)


@given(keys=st.sets(st.integers(0, 250), max_size=80), ranges=ranges_strategy)
def test_keys_in_ranges_is_a_filter_in_range_order(
    keys: set[int], ranges: list[tuple[int, int]]
) -> None:
    keyed: dict[int, None] = dict.fromkeys(sorted(keys))
    expected: list[int] = []
    remaining = set(keys)
    for start, end in ranges:
        hit = sorted(k for k in remaining if start <= k <= end)
        expected.extend(hit)
        remaining -= set(hit)
    got = []
    for key in keys_in_ranges(keyed, ranges):
        got.append(key)
        del keyed[key]  # callers remove what they are given, as ACK processing does
    assert got == expected
    assert set(keyed) == remaining


def test_keys_in_ranges_walks_huge_ranges_by_filtering() -> None:
    keyed = {5: None, 1 << 60: None}
    assert list(keys_in_ranges(keyed, [(0, 1 << 62)])) == [5, 1 << 60]


def test_roles_are_data_chosen_once() -> None:
    client = make_role(Role.CLIENT, peer="server", random_bytes=bytes)
    server = make_role(Role.SERVER, peer=None, random_bytes=lambda n: b"\x01" * n)
    assert isinstance(client, ClientRole) and isinstance(server, ServerRole)
    assert client.opens_channels and client.sends_keepalives and not client.starts_connected
    assert not server.opens_channels and server.holds_early_records and server.starts_connected
    assert client.peer == "server" and server.peer is None
    with pytest.raises(LocalProtocolError):
        server.set_peer("elsewhere")
    client.set_peer("elsewhere")
    assert str(client.peer) == "elsewhere"
    # The server follows the newest authenticated source; the client never moves.
    assert server.on_packet("a", 100, newest=True, now=0.0, timeout=2.0) is None
    assert server.on_packet("b", 100, newest=True, now=1.0, timeout=2.0) == ("a", "b")
    assert client.on_packet("b", 100, newest=True, now=1.0, timeout=2.0) is None
    # "b" is unvalidated: three times 100 bytes, and only as a first challenge copy.
    assert server.send_limit(1200, min_packet=60) == 300
    assert client.send_limit(1200, min_packet=60) == 1200


def test_keepalive_only_from_an_idle_client() -> None:
    client = ClientRole("server")
    server = ServerRole(bytes)
    kwargs = {"last_heard": 10.0, "sent_at": 12.0, "interval": 25.0}
    assert client.keepalive_at(in_flight=False, **kwargs) == 37.0
    assert client.keepalive_at(in_flight=True, **kwargs) is None
    assert server.keepalive_at(in_flight=False, **kwargs) is None


def test_ack_state_deadline_follows_the_ack_policy() -> None:
    config = SessionConfig()
    acks = AckState(config, now=0.0)
    assert acks.on_packet(5, now=1.0) and not acks.on_packet(3, now=1.1)
    acks.on_eliciting(now=1.0)
    assert acks.deadline == 1.0 + config.max_ack_delay
    assert not acks.due(now=1.0) and acks.due(now=1.0 + config.max_ack_delay)
    for _ in range(config.ack_every - 1):
        acks.on_eliciting(now=1.01)
    assert acks.deadline == 1.01


def test_packet_stamps_records_with_its_counter_as_they_go_in() -> None:
    send = SendSide(
        Proto.TCP,
        buffer_limit=1 << 20,
        message_size=16384,
        compress=False,
        datagram_max_age=30.0,
        datagram_queue=256,
    )
    send.write(b"x" * 100)
    record = send.next_new_record(1, 200, now=0.0)
    assert record is not None and record.counter == -1
    packet = Packet(counter=7, room=300)
    packet.add_ordered(1, record, b"e" * 110)
    assert record.counter == 7
    assert packet.carried == [(1, record.pnum)] and packet.room == 190


def test_a_retransmission_that_does_not_fit_stays_queued() -> None:
    send = SendSide(
        Proto.TCP,
        buffer_limit=1 << 20,
        message_size=16384,
        compress=False,
        datagram_max_age=30.0,
        datagram_queue=256,
    )
    send.write(b"y" * 100)
    record = send.next_new_record(1, 200, now=0.0)
    assert record is not None
    record.counter = 3
    send.on_lost(record.pnum, 3)
    assert send.next_retransmission(1, 50) is None  # too big for 50 bytes: not taken
    assert send.lost_record() is record
    assert send.next_retransmission(1, 200) is record
    assert send.lost_record() is None

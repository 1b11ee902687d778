"""Session behaviour in the simulator: channels, outages, roaming, attacks, idle limit."""

from __future__ import annotations

import pytest

from resip.core import events as ev
from resip.core.config import SessionConfig
from resip.core.wire import Proto
from resip.testing.netsim import LinkSpec
from resip.testing.pair import CLIENT_ADDR, SERVER_ADDR, SessionPair
from tests.sim.conftest import MIB, Transfer, payload, sha

LINK = LinkSpec(delay=0.025, rate_bps=20e6, queue_bytes=128 * 1024)


def test_half_close_each_way_keeps_the_other_direction_open() -> None:
    pair = SessionPair.create(seed=11, link=LINK)
    channel = pair.open()
    up = payload(1, 50_000)
    pair.client.write(channel, up, shutdown=True)
    pair.sim.run_until(2.0)
    server_log = pair.server.log(channel)
    assert server_log.ended, "server did not see the client's half-close"
    assert sha(server_log.received) == sha(up)
    # The server can still send after the client half-closed.
    down = payload(2, 80_000)
    pair.server.write(channel, down)
    pair.sim.run_until(4.0)
    assert sha(pair.client.log(channel).received) == sha(down)
    assert not pair.client.log(channel).ended
    assert not pair.client.log(channel).closed
    pair.server.write(channel, b"", shutdown=True)
    pair.sim.run_until(6.0)
    assert pair.client.log(channel).ended
    assert pair.client.log(channel).closed
    assert pair.server.log(channel).closed
    assert pair.client.session.channels.get(channel) is None
    assert pair.server.session.channels.get(channel) is None


def test_server_can_half_close_first() -> None:
    pair = SessionPair.create(seed=12, link=LINK)
    channel = pair.open()
    pair.client.write(channel, b"request")
    pair.sim.run_until(1.0)
    pair.server.write(channel, b"response", shutdown=True)
    pair.sim.run_until(2.0)
    assert pair.client.log(channel).ended
    assert bytes(pair.client.log(channel).received) == b"response"
    pair.client.write(channel, b" and more", shutdown=True)
    pair.sim.run_until(3.0)
    assert bytes(pair.server.log(channel).received) == b"request and more"
    assert pair.client.log(channel).closed and pair.server.log(channel).closed


def test_refused_channel_reports_why() -> None:
    pair = SessionPair.create(
        seed=13,
        link=LINK,
        refuse=lambda req: "connection refused by 10.1.1.1:22" if req.port == 22 else None,
    )
    bad = pair.open("10.1.1.1", 22)
    good = pair.open("example.org", 80)
    pair.client.write(bad, b"x" * 1000)
    pair.client.write(good, b"hello", shutdown=True)
    pair.sim.run_until(2.0)
    assert pair.client.log(bad).terminated == (5, "connection refused by 10.1.1.1:22")
    assert pair.client.session.channels.get(bad) is None
    assert bytes(pair.server.log(good).received) == b"hello"
    assert pair.client.log(good).started
    # The records of the refused channel were acknowledged and forgotten, not resent forever.
    assert pair.client.session.stats(now=pair.sim.now).bytes_in_flight == 0


@pytest.mark.parametrize("seed", [21])
def test_five_hundred_channels_of_mixed_sizes(seed: int) -> None:
    pair = SessionPair.create(seed=seed, link=LINK)
    sizes = [(i * 7919) % 40_000 + (i % 3) for i in range(500)]
    sent: dict[int, bytes] = {}
    for i, size in enumerate(sizes):
        channel = pair.open("198.51.100.7", 1000 + i)
        data = payload(seed * 1000 + i, size)
        sent[channel] = data
        pair.client.write(channel, data, shutdown=True)
    pair.sim.run_until(120.0, stop=lambda: all(pair.server.log(c).ended for c in sent))
    for channel, data in sent.items():
        got = pair.server.log(channel).received
        assert sha(got) == sha(data), f"seed={seed} channel {channel}: {len(got)}/{len(data)}"
    assert len(pair.server.session.channels) <= 500


def test_channel_limit_is_reported() -> None:
    pair = SessionPair.create(seed=14, link=LINK, server_config=SessionConfig(max_channels=2))
    ids = [pair.open("192.0.2.9", 80) for _ in range(3)]
    pair.sim.run_until(2.0)
    assert pair.client.log(ids[0]).started and pair.client.log(ids[1]).started
    assert pair.client.log(ids[2]).terminated is not None
    assert pair.client.log(ids[2]).terminated[0] == 9


def test_udp_channel_keeps_datagram_boundaries_without_duplicates() -> None:
    pair = SessionPair.create(
        seed=15, link=LinkSpec(delay=0.02, loss=0.2, duplicate=0.1, reorder=0.2)
    )
    channel = pair.open("192.0.2.53", 53, proto=Proto.UDP)
    datagrams = [payload(i, 20 + (i * 37) % 3000) for i in range(60)]
    for d in datagrams:
        assert pair.client.session.send_datagram(channel, d, now=pair.sim.now)
    pair.sim.run_until(30.0, stop=lambda: len(pair.server.log(channel).datagrams) == 60)
    assert pair.server.log(channel).datagrams == datagrams


@pytest.mark.parametrize(("outage", "limit"), [(60.0, 200.0), (3600.0, 4000.0)])
def test_blackhole_mid_transfer_survives_and_resumes(outage: float, limit: float) -> None:
    seed = 31
    config = SessionConfig(probe_backoff_cap=30.0)
    pair = SessionPair.create(seed=seed, link=LINK, client_config=config, server_config=config)
    transfer = Transfer.start(pair, up=2 * MIB, down=2 * MIB, seed=seed)
    start = 0.5
    pair.sim.outage("client", "server", start=start, end=start + outage)
    pair.sim.run_until(start + outage)
    assert not transfer.complete()
    assert "OutageStarted" in pair.client.event_types()
    transfer.run(limit=limit)
    transfer.assert_exact(seed)
    assert "OutageEnded" in pair.client.event_types()
    assert not pair.client.session.terminated and not pair.server.session.terminated
    assert_resumed_quickly(pair, end=start + outage, probe_cap=config.probe_backoff_cap, seed=seed)


def assert_resumed_quickly(pair: SessionPair, *, end: float, probe_cap: float, seed: int) -> None:
    """Data flows again within (probe cap + 2 RTT) of the link's return (RTT here 50 ms)."""
    first = min(
        t for peer in (pair.client, pair.server) for t, e in peer.timeline
        if t >= end and isinstance(e, ev.ChannelData)
    )  # fmt: skip
    assert first - end <= probe_cap + 2 * 0.05, f"seed={seed}: resumed {first - end:.1f} s late"


@pytest.mark.slow
def test_blackhole_of_73_hours_survives() -> None:
    seed = 32
    pair = SessionPair.create(seed=seed, link=LINK)
    transfer = Transfer.start(pair, up=1 * MIB, down=1 * MIB, seed=seed)
    start, end = 0.4, 0.4 + 73 * 3600.0
    pair.sim.outage("client", "server", start=start, end=end)
    pair.sim.run_until(end)
    assert not pair.client.session.terminated and not pair.server.session.terminated
    # Memory stays bounded while waiting: nothing piles up in flight.
    assert len(pair.client.session._recovery.inflight) <= 64
    transfer.run(limit=300.0)
    transfer.assert_exact(seed)
    assert_resumed_quickly(pair, end=end, probe_cap=30.0, seed=seed)


def test_receive_loss_shows_a_downloads_losses_on_the_client() -> None:
    """The client's send-side estimate barely learns from a download; receive_loss does."""
    seed = 43
    lossy_down = LinkSpec(delay=0.025, rate_bps=20e6, queue_bytes=128 * 1024, loss=0.3)
    pair = SessionPair.create(seed=seed, link=LINK, reverse=lossy_down)
    transfer = Transfer.start(pair, up=1000, down=2 * MIB, seed=seed)
    transfer.run(limit=60.0)
    transfer.assert_exact(seed)
    stats = pair.client.session.stats(now=pair.sim.now)
    assert 0.2 < stats.receive_loss < 0.4, stats.receive_loss
    assert stats.loss_estimate < 0.1  # what the client itself sends hardly suffers


def test_idle_limit_terminates_both_sides_cleanly() -> None:
    config = SessionConfig(idle_timeout=120.0, keepalive_interval=15.0)
    pair = SessionPair.create(seed=41, link=LINK, client_config=config, server_config=config)
    pair.open()
    pair.sim.run_until(5.0)
    pair.sim.outage("client", "server", start=5.0, end=10_000.0)
    pair.sim.run_until(1000.0)
    for peer in (pair.client, pair.server):
        ends = [e for e in peer.events if isinstance(e, ev.SessionTerminated)]
        assert len(ends) == 1, peer.event_types()
        assert ends[0].code == 1
        assert peer.session.next_timer() is None


def test_close_reaches_the_peer() -> None:
    pair = SessionPair.create(seed=42, link=LINK)
    pair.sim.run_until(1.0)
    pair.client.session.close(0, "bye", now=pair.sim.now)
    pair.sim.run_until(2.0)
    ends = [e for e in pair.server.events if isinstance(e, ev.SessionTerminated)]
    assert ends == [ev.SessionTerminated(0, "bye", by_peer=True)]


def test_port_rebinding_and_address_changes_are_followed() -> None:
    seed = 51
    pair = SessionPair.create(seed=seed, link=LINK)
    transfer = Transfer.start(pair, up=1 * MIB, down=3 * MIB, seed=seed)
    pair.sim.rebind("client", ("10.0.0.2", 40001), at=1.0)
    for i in range(1, 6):
        pair.sim.rebind("client", ("10.0.0.2", 40001 + i), at=1.0 + 5 * i)
    pair.sim.rebind("client", ("203.0.113.77", 5555), at=32.0)
    transfer.run(limit=120.0)
    transfer.assert_exact(seed)
    assert pair.server.session.peer == ("203.0.113.77", 5555) or pair.sim.now < 32.0
    changes = [e for e in pair.server.events if isinstance(e, ev.PathChanged)]
    assert changes, "the server never followed the client"


def test_nat_rebinding_with_old_mapping_alive_causes_no_packet_storm() -> None:
    """Regression (lab, 5 % loss): a NAT rebinding mid-download once set off a storm.

    Every packet to the unvalidated address repeated the challenge, packets holding only
    that challenge went out back to back, and the client answered each copy: thousands
    of tiny packets per round trip that starved a real proxy of CPU. One answer per
    challenge per round trip, and no packets that carry nothing but a repeat.
    """
    seed = 55
    link = LinkSpec(delay=0.05, rate_bps=20e6, queue_bytes=64 * 1024, loss=0.05)
    pair = SessionPair.create(seed=seed, link=link)
    pair.sim.trace_enabled = True
    transfer = Transfer.start(pair, up=1000, down=8 * MIB, seed=seed)
    # The client now sends from a new public address, yet the old mapping still delivers.
    pair.sim.bounce("client", [("10.200.1.77", 40001), CLIENT_ADDR], start=2.0, every=1e9)
    transfer.run(limit=60.0)
    transfer.assert_exact(seed)
    changes = [e for e in pair.server.events if isinstance(e, ev.PathChanged)]
    assert len(changes) == 1, changes  # validated at once: no flapping back and forth
    window = [r for r in pair.sim.trace if 2.0 <= r.time < 3.0 and r.fate == "sent"]
    from_server = sum(1 for r in window if r.src == SERVER_ADDR)
    from_client = len(window) - from_server
    full_packets_per_second = 20e6 / 8 / 1200
    assert from_server < 1.2 * full_packets_per_second, from_server
    assert from_client < from_server, (from_client, from_server)


def test_bouncing_between_three_addresses() -> None:
    seed = 52
    pair = SessionPair.create(seed=seed, link=LINK)
    transfer = Transfer.start(pair, up=2 * MIB, down=2 * MIB, seed=seed)
    addrs = [CLIENT_ADDR, ("10.9.0.2", 40000), ("172.16.5.5", 6000)]
    pair.sim.bounce("client", addrs, start=0.5, every=2.0)
    transfer.run(limit=120.0)
    transfer.assert_exact(seed)


def test_copied_packet_from_attacker_never_takes_the_session_over() -> None:
    seed = 53
    pair = SessionPair.create(seed=seed, link=LINK)
    transfer = Transfer.start(pair, up=200_000, down=2 * MIB, seed=seed)
    attacker = ("198.18.0.66", 666)
    captured: list[bytes] = []

    def capture(dst: str, data: bytes, src: object, now: float) -> None:
        if dst == "server" and len(captured) < 50:
            captured.append(data)

    pair.sim.on_deliver = capture
    pair.sim.run_until(1.0)
    for i, data in enumerate(captured):
        pair.sim.inject(attacker, "server", data, at=1.0 + i * 0.01)
    transfer.run(limit=60.0)
    pair.sim.run_until(max(pair.sim.now, 1.0 + len(captured) * 0.01 + 0.5))
    transfer.assert_exact(seed)
    assert pair.server.session.peer == CLIENT_ADDR
    stats = pair.server.session.stats(now=pair.sim.now)
    assert stats.invalid_dropped >= len(captured)  # every copy was a replay
    assert attacker != SERVER_ADDR


def test_forged_and_truncated_packets_change_nothing() -> None:
    pair = SessionPair.create(seed=54, link=LINK)
    pair.sim.run_until(1.0)
    server = pair.server.session
    before = server.stats(now=pair.sim.now)
    genuine: list[bytes] = []
    pair.sim.on_deliver = lambda dst, data, src, now: (
        genuine.append(data) if dst == "server" else None
    )
    channel = pair.open()
    pair.client.write(channel, b"abc")
    pair.sim.run_until(2.0)
    assert genuine
    sample = genuine[0]
    forged = [
        sample[:20],
        sample + b"\x00",
        bytes([sample[0] ^ 1]) + sample[1:],
        sample[:40] + bytes([sample[40] ^ 0x80]) + sample[41:],
        b"\x20" + b"\x00" * 60,
        b"",
    ]
    for i, data in enumerate(forged):
        pair.sim.inject(("198.18.0.1", 9), "server", data, at=2.0 + i * 0.001)
    pair.sim.run_until(3.0)
    after = server.stats(now=pair.sim.now)
    assert after.invalid_dropped - before.invalid_dropped >= len(forged)
    assert server.peer == CLIENT_ADDR
    assert not server.terminated


def test_channels_refused_by_the_full_session_buffer_are_all_woken() -> None:
    # Issue 16: 100 parallel downloads filled the session-wide send buffer; a channel
    # refused before it had anything in flight was never woken, because only its own
    # ACKs did that. The harness feeds a channel only on ChannelWritable, like a splice.
    budget = 2 * MIB
    pair = SessionPair.create(
        seed=31,
        link=LinkSpec(delay=0.005, rate_bps=100e6, queue_bytes=256 * 1024),
        server_config=SessionConfig(session_send_buffer=budget),
    )
    sent: dict[int, bytes] = {}
    for i in range(40):
        channel = pair.open("198.51.100.8", 2000 + i)
        pair.client.write(channel, b"GET", shutdown=True)
        sent[channel] = payload(3100 + i, 256 * 1024)
        pair.server.write(channel, sent[channel], shutdown=True)
    pair.sim.run_until(60.0, stop=lambda: all(pair.client.log(c).ended for c in sent))
    short = [c for c, data in sent.items() if len(pair.client.log(c).received) < len(data)]
    assert not short, f"{len(short)} of {len(sent)} channels stalled"
    for channel, data in sent.items():
        assert sha(pair.client.log(channel).received) == sha(data)


def _ping_pong(pair: SessionPair, channel: int) -> float:
    start, sim = pair.sim.now, pair.sim
    server_log, client_log = pair.server.log(channel), pair.client.log(channel)
    want_server, want_client = len(server_log.received) + 100, len(client_log.received) + 100
    pair.client.write(channel, b"p" * 100)
    sim.run_for(5.0, stop=lambda: len(server_log.received) >= want_server)
    pair.server.write(channel, b"q" * 100)
    sim.run_for(5.0, stop=lambda: len(client_log.received) >= want_client)
    return sim.now - start


def test_ping_pong_after_spaced_pings_is_as_fast_as_on_a_fresh_session() -> None:
    # Issue 16: delayed ACKs of spaced pings looked like queueing, the guard capped the
    # estimate with the app-limited delivery rate, and the rate decayed to its floor.
    pair = SessionPair.create(seed=32, link=LinkSpec(delay=0.0005))
    channel = pair.open()
    pair.sim.run_for(0.1)
    fresh = sorted(_ping_pong(pair, channel) for _ in range(20))[10]
    for _ in range(200):
        _ping_pong(pair, channel)
        pair.sim.run_for(0.05)
    after = sorted(_ping_pong(pair, channel) for _ in range(20))[10]
    assert after <= fresh + 0.001, f"fresh {fresh * 1000:.2f} ms, after {after * 1000:.2f} ms"
    config = pair.client.session.config.congestion
    assert pair.client.session.stats(now=pair.sim.now).pacing_rate >= config.initial_rate


def test_receive_datagram_says_whether_the_datagram_authenticated() -> None:
    pair = SessionPair.create(seed=40, link=LINK)
    client, server = pair.client.session, pair.server.session
    [(datagram, _)] = client.datagrams_to_send(now=0.0)
    assert server.receive_datagram(datagram, CLIENT_ADDR, now=0.01) is True
    assert server.receive_datagram(datagram, CLIENT_ADDR, now=0.02) is False  # a replay
    forged = datagram[:-1] + bytes([datagram[-1] ^ 1])
    assert server.receive_datagram(forged, CLIENT_ADDR, now=0.03) is False
    assert server.receive_datagram(b"\x00" * 40, CLIENT_ADDR, now=0.04) is False
    assert server.invalid_dropped == 3
    client.set_peer(SERVER_ADDR)  # asks for a keep-alive: one more authentic datagram
    [(fresh, _)] = client.datagrams_to_send(now=0.05)
    server.close(now=0.06)
    assert server.receive_datagram(fresh, CLIENT_ADDR, now=0.07) is False  # closed: ignored
    [(close, _)] = server.datagrams_to_send(now=0.07)
    assert client.receive_datagram(close, SERVER_ADDR, now=0.08) is True
    assert client.terminated

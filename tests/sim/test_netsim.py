"""Tests of the deterministic network simulator (resip.testing.netsim) with tiny fake endpoints.

Every statistical assertion uses a fixed seed, so a failure replays exactly; the
seed is in the assertion message.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.testing import LinkSpec, NetSim, SimEndpoint, TraceRecord

A = ("10.0.0.1", 5000)
A2 = ("10.0.0.1", 6000)
A3 = ("192.168.1.7", 5000)
B = ("10.0.0.2", 443)


class Recorder:
    """Records every arrival; sends whatever the test puts in ``outbox``."""

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, Hashable]] = []
        self.received: list[tuple[float, bytes, Hashable]] = []

    def receive_datagram(self, data: bytes, path: Hashable, *, now: float) -> None:
        self.received.append((now, data, path))

    def datagrams_to_send(self, *, now: float) -> list[tuple[bytes, Hashable]]:
        out, self.outbox = self.outbox, []
        return out

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        raise AssertionError("Recorder has no timer")


class Echo(Recorder):
    """Replies to every datagram, to the address it came from."""

    def receive_datagram(self, data: bytes, path: Hashable, *, now: float) -> None:
        super().receive_datagram(data, path, now=now)
        self.outbox.append((data, path))


class Pinger(Recorder):
    """Sends a numbered ping to ``dst`` every ``interval`` seconds, starting at ``first``."""

    def __init__(self, dst: Hashable, interval: float, *, first: float = 0.0) -> None:
        super().__init__()
        self.dst = dst
        self.interval = interval
        self.deadline = first
        self.sent_at: dict[bytes, float] = {}

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, *, now: float) -> None:
        msg = b"ping %d" % len(self.sent_at)
        self.sent_at[msg] = now
        self.outbox.append((msg, self.dst))
        self.deadline += self.interval


class Paced(Recorder):
    """Sends ``count`` datagrams of ``size`` bytes, one every ``gap`` seconds from t=0."""

    def __init__(self, dst: Hashable, *, count: int, size: int, gap: float) -> None:
        super().__init__()
        self.dst, self.count, self.size, self.gap = dst, count, size, gap
        self.n = 0
        self.sent_at: list[float] = []

    def next_timer(self) -> float | None:
        return self.n * self.gap if self.n < self.count else None

    def handle_timer(self, *, now: float) -> None:
        body = b"%08d" % self.n
        self.outbox.append((body + b"x" * (self.size - len(body)), self.dst))
        self.sent_at.append(now)
        self.n += 1


class StuckTimer(Recorder):
    """Broken endpoint: its deadline never moves after firing."""

    def __init__(self) -> None:
        super().__init__()
        self.fired = 0

    def next_timer(self) -> float | None:
        return 1.0

    def handle_timer(self, *, now: float) -> None:
        self.fired += 1


def pair(
    seed: int, a: SimEndpoint, b: SimEndpoint, spec: LinkSpec, *, trace: bool = False
) -> NetSim:
    sim = NetSim(seed=seed, trace=trace)
    sim.add("client", a, A)
    sim.add("server", b, B)
    sim.link("client", "server", spec)
    return sim


def burst(sim: NetSim, src: Recorder, n: int, size: int = 100) -> list[bytes]:
    msgs = [(b"%06d" % i).ljust(size, b".") for i in range(n)]
    src.outbox.extend((m, B) for m in msgs)
    return msgs


def test_clean_link_delivers_with_exact_delay_and_sender_address() -> None:
    client, server = Recorder(), Recorder()
    sim = pair(1, client, server, LinkSpec(delay=0.040))
    msgs = burst(sim, client, 5)
    sim.run_until(1.0)
    assert [d for _, d, _ in server.received] == msgs
    assert all(t == pytest.approx(0.040) for t, _, _ in server.received)
    assert {p for _, _, p in server.received} == {A}
    assert sim.now == 1.0
    st_ = sim.link_stats("client", "server")
    assert (st_.sent, st_.delivered, st_.dropped_total) == (5, 5, 0)


def test_loss_rate_matches_spec() -> None:
    seed, n = 7, 20_000
    client, server = Recorder(), Recorder()
    sim = pair(seed, client, server, LinkSpec(loss=0.1))
    burst(sim, client, n)
    sim.run_until(1.0)
    delivered = len(server.received)
    assert 0.88 * n < delivered < 0.92 * n, f"seed={seed} delivered={delivered}"
    st_ = sim.link_stats("client", "server")
    assert st_.dropped == {"lost": n - delivered}
    assert st_.delivered == delivered


def test_delay_and_jitter_bounds() -> None:
    seed = 3
    client = Paced(B, count=2000, size=50, gap=0.001)
    server = Recorder()
    sim = pair(seed, client, server, LinkSpec(delay=0.050, jitter=0.020))
    sim.run_until(10.0)
    assert len(server.received) == 2000
    latencies = [t - client.sent_at[int(d[:8])] for t, d, _ in server.received]
    assert min(latencies) >= 0.050 - 1e-9
    assert max(latencies) <= 0.070 + 1e-9
    # The jitter is actually used, not a constant offset.
    assert max(latencies) - min(latencies) > 0.018, f"seed={seed}"
    # 1 ms spacing and 20 ms of jitter: arrivals come out of order.
    order = [int(d[:8]) for _, d, _ in server.received]
    assert order != sorted(order)


def test_duplication() -> None:
    seed, n = 11, 10_000
    client, server = Recorder(), Recorder()
    sim = pair(seed, client, server, LinkSpec(duplicate=0.2), trace=True)
    burst(sim, client, n)
    sim.run_until(1.0)
    extra = len(server.received) - n
    assert 0.18 * n < extra < 0.22 * n, f"seed={seed} extra={extra}"
    assert sim.link_stats("client", "server").duplicated == extra
    assert len({d for _, d, _ in server.received}) == n
    assert sum(r.fate == "duplicated" for r in sim.trace) == extra


def test_reordering_reorders_and_no_reorder_preserves_order() -> None:
    for reorder, expect_sorted in ((0.0, True), (0.2, False)):
        client, server = Paced(B, count=500, size=50, gap=0.001), Recorder()
        sim = pair(5, client, server, LinkSpec(reorder=reorder, reorder_delay=0.010))
        sim.run_until(5.0)
        order = [int(d[:8]) for _, d, _ in server.received]
        assert sorted(order) == list(range(500))
        assert (order == sorted(order)) is expect_sorted, f"reorder={reorder}"
    # The held-back datagrams are late by exactly reorder_delay.
    late = [t - client.sent_at[int(d[:8])] for t, d, _ in server.received]
    assert {round(x, 9) for x in late} == {0.025, 0.035}


def test_rate_limit_throughput_and_queue_drops() -> None:
    seed, rate, size = 2, 1_000_000.0, 1000
    # Offers 8 Mbit/s for 10 s into a 1 Mbit/s bottleneck with a 20 kB queue.
    client = Paced(B, count=10_000, size=size, gap=0.001)
    server = Recorder()
    spec = LinkSpec(delay=0.010, rate_bps=rate, queue_bytes=20_000)
    sim = pair(seed, client, server, spec)
    sim.run_until(20.0)
    times = [t for t, _, _ in server.received]
    span = times[-1] - times[0]
    throughput = (len(times) - 1) * size * 8 / span
    assert throughput == pytest.approx(rate, rel=0.01), f"seed={seed}"
    # Consecutive arrivals are at least one serialisation time apart.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= size * 8 / rate - 1e-9
    st_ = sim.link_stats("client", "server")
    assert st_.dropped["queue"] > 0.8 * 10_000
    assert st_.delivered + st_.dropped["queue"] == 10_000
    # Queueing delay is bounded by the queue size: 20 kB + one packet at 1 Mbit/s.
    latencies = [t - client.sent_at[int(d[:8])] for t, d, _ in server.received]
    assert max(latencies) <= 0.010 + (20_000 + size) * 8 / rate + 1e-9


def test_mtu_and_no_route() -> None:
    client, server = Recorder(), Recorder()
    sim = pair(1, client, server, LinkSpec(mtu=1200), trace=True)
    client.outbox += [(b"a" * 1200, B), (b"b" * 1201, B), (b"c", ("10.9.9.9", 1))]
    sim.run_until(1.0)
    assert [d for _, d, _ in server.received] == [b"a" * 1200]
    assert sim.link_stats("client", "server").dropped == {"mtu": 1}
    assert sim.stats.no_route == 1
    assert {r.fate for r in sim.trace} == {"sent", "mtu", "no-route", "delivered"}


def test_outage_drops_inside_window_only() -> None:
    # Pings at x.x5 and a 0.1 s delay keep every send instant off the window edges.
    client, server = Pinger(B, 0.1, first=0.05), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.1), trace=True)
    sim.outage("client", "server", start=3.0, end=5.0)
    sim.run_until(10.0)
    dropped = [r for r in sim.trace if r.fate == "outage"]
    sent = [r for r in sim.trace if r.fate == "sent"]
    assert all(3.0 <= r.time < 5.0 for r in dropped)
    assert not any(3.0 <= r.time < 5.0 for r in sent)
    assert {r.src for r in dropped} == {A, B}  # both directions were cut

    def outside(t: float) -> bool:
        return not 3.0 <= t < 5.0

    # The ping sent at 2.95 is in flight at 3.0 and arrives; its echo (sent at 3.05) dies.
    expected_pings = {m for m, t in client.sent_at.items() if outside(t) and t + 0.1 <= 10.0}
    expected_pongs = {
        m for m, t in client.sent_at.items() if outside(t) and outside(t + 0.1) and t + 0.2 <= 10.0
    }
    assert {d for _, d, _ in server.received} == expected_pings
    assert {d for _, d, _ in client.received} == expected_pongs
    assert len(expected_pings) == 100 - 20 - 1
    assert len(expected_pongs) == 100 - 21 - 2
    assert len(dropped) == 20 + 1  # the pings in the window, and that one echo


def test_rebind_changes_source_address_and_strands_old_address() -> None:
    client, server = Pinger(B, 0.5, first=0.25), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.1), trace=True)
    sim.rebind("client", A3, at=5.0)
    sim.run_until(10.0)
    before = {p for t, _, p in server.received if t < 5.0}
    after = {p for t, _, p in server.received if t > 5.1}
    assert before == {A}
    assert after == {A3}
    assert sim.address("client") == A3
    assert len(client.received) == len(client.sent_at)
    # Nobody owns the old address any more.
    server.outbox.append((b"late", A))
    sim.run_until(11.0)
    assert b"late" not in {d for _, d, _ in client.received}
    assert sim.stats.no_route == 1


def test_in_flight_reply_to_old_address_is_dropped_after_rebind() -> None:
    client, server = Pinger(B, 10.0, first=4.9), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.1))
    sim.rebind("client", A3, at=5.05)
    sim.run_until(6.0)
    # Ping left from A at 4.9, echo left at 5.0 towards A, arrives at 5.1: A is gone.
    assert [p for _, _, p in server.received] == [A]
    assert client.received == []
    assert sim.stats.no_route == 1


def test_bounce_alternates_and_all_addresses_stay_reachable() -> None:
    client, server = Pinger(B, 0.25, first=0.1), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.01))
    sim.bounce("client", [A, A2, A3], start=2.0, every=1.0, end=8.0)
    sim.run_until(12.0)
    seen = [(t, p) for t, _, p in server.received]
    assert {p for t, p in seen if t < 2.0} == {A}
    for k, addr in enumerate([A, A2, A3, A, A2, A3]):
        lo = 2.0 + k + 0.02
        assert {p for t, p in seen if lo <= t < lo + 0.95} == {addr}, k
    assert {p for t, p in seen if t > 8.02} == {A3}  # stays on the last one
    assert len(client.received) == len(client.sent_at)
    assert {p for _, _, p in client.received} == {B}


def test_rebind_cancels_bounce() -> None:
    client, server = Pinger(B, 0.5, first=0.1), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.01))
    sim.bounce("client", [A, A2], start=1.0, every=1.0)
    sim.rebind("client", A3, at=3.5)
    sim.run_until(10.0)
    assert {p for t, _, p in server.received if t > 3.6} == {A3}


def test_inject_delivers_with_forged_source_and_bypasses_hook() -> None:
    client, server = Recorder(), Recorder()
    sim = pair(1, client, server, LinkSpec())
    hooked: list[tuple[str, bytes, Hashable, float]] = []
    sim.on_deliver = lambda *args: hooked.append(args)
    forged = ("6.6.6.6", 666)
    sim.inject(forged, "server", b"evil", at=1.5)
    client.outbox.append((b"genuine", B))
    sim.run_until(2.0)
    assert server.received == [(0.025, b"genuine", A), (1.5, b"evil", forged)]
    assert hooked == [("server", b"genuine", A, 0.025)]
    assert sim.stats.injected == 1


def test_hook_can_replay_captured_packets() -> None:
    client, server = Recorder(), Recorder()
    sim = pair(1, client, server, LinkSpec())
    captured: list[tuple[bytes, Hashable]] = []
    sim.on_deliver = lambda _name, data, src, _now: captured.append((data, src))
    client.outbox.append((b"p1", B))
    sim.run_until(1.0)
    data, src = captured[0]
    sim.inject(src, "server", data)
    sim.run_until(2.0)
    assert server.received == [(0.025, b"p1", A), (1.0, b"p1", A)]


def test_set_link_and_schedule_change_delay_mid_run() -> None:
    client, server = Pinger(B, 1.0), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.01))
    sim.schedule(5.0, lambda: sim.set_link("client", "server", LinkSpec(delay=0.2)))
    sim.run_until(10.0)
    lat = {round(t - client.sent_at[d], 9) for t, d, _ in server.received}
    assert lat == {0.01, 0.2}
    rtts = [t - client.sent_at[d] for t, d, _ in client.received]
    assert rtts[:5] == pytest.approx([0.02] * 5)
    assert rtts[5:] == pytest.approx([0.21] * (len(rtts) - 5))


def test_asymmetric_reverse_link() -> None:
    client, server = Pinger(B, 1.0), Echo()
    sim = NetSim(seed=1)
    sim.add("client", client, A)
    sim.add("server", server, B)
    sim.link("client", "server", LinkSpec(delay=0.01), reverse=LinkSpec(delay=0.3))
    sim.run_until(3.0)
    assert [round(t - client.sent_at[d], 9) for t, d, _ in client.received] == [0.31] * 3


def scenario_trace(seed: int) -> list[TraceRecord]:
    client = Paced(B, count=600, size=200, gap=0.0005)  # 3.2 Mbit/s offered
    server = Echo()
    spec = LinkSpec(
        delay=0.03,
        jitter=0.01,
        loss=0.1,
        duplicate=0.05,
        reorder=0.1,
        rate_bps=2_000_000.0,
        queue_bytes=4000,
    )
    sim = pair(seed, client, server, spec, trace=True)
    sim.run_until(5.0)
    return list(sim.trace)


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    t1, t2, t3 = scenario_trace(42), scenario_trace(42), scenario_trace(43)
    assert len(t1) > 600
    assert t1 == t2
    assert t1 != t3
    assert {r.fate for r in t1} >= {"sent", "lost", "queue", "delivered", "duplicated"}


def test_trace_is_off_by_default_and_bounded() -> None:
    client, server = Recorder(), Recorder()
    sim = pair(1, client, server, LinkSpec())
    burst(sim, client, 10)
    sim.run_until(1.0)
    assert len(sim.trace) == 0
    sim = NetSim(seed=1, trace=True, trace_limit=5)
    sim.add("client", client, A)
    sim.add("server", server, B)
    sim.link("client", "server", LinkSpec())
    burst(sim, client, 10)
    sim.run_until(1.0)
    assert len(sim.trace) == 5
    assert all(r.fate == "delivered" for r in sim.trace)  # the newest are kept


def test_72_hours_idle_costs_events_not_time() -> None:
    hours = 72
    client, server = Pinger(B, 15.0), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.05))
    sim.run_until(hours * 3600.0)
    pings = hours * 3600 // 15 + 1  # t = 0, 15, ..., 72 h inclusive
    assert len(client.sent_at) == pings
    assert len(client.received) == pings - 1  # the last pong is still in flight
    # One timer firing plus two deliveries per keepalive, nothing per elapsed second.
    assert sim.stats.timer_fires == pings
    assert sim.stats.deliveries == 2 * (pings - 1)
    assert sim.stats.events == 3 * pings - 2
    assert sim.now == hours * 3600.0


def test_stop_predicate_returns_early() -> None:
    client, server = Pinger(B, 1.0), Echo()
    sim = pair(1, client, server, LinkSpec(delay=0.05))
    sim.run_until(100.0, stop=lambda: len(client.received) >= 3)
    assert len(client.received) == 3
    assert sim.now == pytest.approx(2.1)
    sim.run_for(1.0)
    assert sim.now == pytest.approx(3.1)


def test_timer_not_advancing_guard() -> None:
    stuck = StuckTimer()
    sim = NetSim(seed=1)
    sim.add("broken", stuck, A)
    with pytest.raises(RuntimeError, match="timer not advancing"):
        sim.run_until(2.0)
    assert stuck.fired == 1000
    assert sim.now == 1.0


def test_past_timer_fires_at_now() -> None:
    client = Pinger(B, 100.0, first=-5.0)
    sim = NetSim(seed=1)
    sim.add("client", client, A)
    sim.run_until(1.0)
    assert client.sent_at == {b"ping 0": 0.0}
    assert sim.stats.no_route == 1  # nobody owns B


def test_zero_delay_ping_pong_is_caught() -> None:
    sim = NetSim(seed=1, max_events_per_instant=10_000)
    a, b = Echo(), Echo()
    sim.add("a", a, A)
    sim.add("b", b, B)
    sim.link("a", "b", LinkSpec(delay=0.0))
    a.outbox.append((b"x", B))
    with pytest.raises(RuntimeError, match="not advancing"):
        sim.run_until(1.0)


def test_api_misuse_is_rejected() -> None:
    sim = NetSim(seed=1)
    sim.add("a", Recorder(), A)
    with pytest.raises(ValueError, match="already belongs"):
        sim.add("b", Recorder(), A)
    with pytest.raises(KeyError):
        sim.link("a", "nope", LinkSpec())
    with pytest.raises(ValueError, match="probability"):
        LinkSpec(loss=1.5)
    sim.run_until(5.0)
    with pytest.raises(ValueError):
        sim.run_until(4.0)
    with pytest.raises(ValueError):
        sim.schedule(1.0, lambda: None)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.3),
    jitter=st.floats(0.0, 0.05),
    rate=st.one_of(st.none(), st.floats(1e5, 1e7)),
)
def test_conservation(
    seed: int, loss: float, dup: float, jitter: float, rate: float | None
) -> None:
    """Every datagram offered is delivered (once or twice) or dropped for one reason."""
    client = Paced(B, count=200, size=500, gap=0.001)
    server = Recorder()
    spec = LinkSpec(loss=loss, duplicate=dup, jitter=jitter, rate_bps=rate, queue_bytes=8000)
    sim = pair(seed, client, server, spec)
    sim.run_until(30.0)
    s = sim.link_stats("client", "server")
    assert sim.in_flight() == 0
    assert s.sent == 200
    assert s.delivered == len(server.received)
    assert s.delivered == s.sent - s.dropped_total + s.duplicated, f"seed={seed}"
    assert set(s.dropped) <= {"lost", "queue"}

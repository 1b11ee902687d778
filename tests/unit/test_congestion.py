"""RateController and Pacer, driven through a small packet-level model of a lossy bottleneck.

The model: a sender (this controller, the pacer, RFC 9002 loss detection) sends 1200-byte
packets into a FIFO bottleneck of ``capacity`` bytes/s with a tail-drop queue of
``queue_bytes``; ACKs return after ``base_rtt``. Random loss ``p`` is applied either *at* the
bottleneck (the frame uses the link, then is corrupted: a lossy radio or satellite hop, where
the best sending rate is ``capacity``) or *before* the queue (a lossy access link upstream of
a clean bottleneck, where the best sending rate is ``capacity / (1 - p)``). Seeded and exact.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from resip.core.congestion import CongestionConfig, Pacer, RateController, SendState
from resip.core.recovery import PACKET_THRESHOLD, RttEstimator

SIZE = 1200
C = 2_500_000.0  # 20 Mbit/s
RTT = 0.2


@dataclass
class Link:
    capacity: float
    queue_bytes: int
    base_rtt: float
    loss: float
    loss_at_bottleneck: bool = True  # lost packets still occupy the bottleneck
    seed: int = 1


@dataclass
class Trace:
    times: list[float] = field(default_factory=list)
    estimate: list[float] = field(default_factory=list)
    pacing: list[float] = field(default_factory=list)
    queue_delay: list[float] = field(default_factory=list)
    loss_est: list[float] = field(default_factory=list)
    state: list[str] = field(default_factory=list)
    delivered: int = 0
    tail_drops: int = 0
    drop_times: list[float] = field(default_factory=list)
    sent: int = 0


class Sim:
    def __init__(
        self,
        link: Link,
        config: CongestionConfig | None = None,
        has_data: Callable[[float], bool] = lambda now: True,
    ) -> None:
        self.link = link
        self.rng = random.Random(link.seed)
        self.ctrl = RateController(config or CongestionConfig())
        self.rtt = RttEstimator()
        self.pacer = Pacer()
        self.has_data = has_data
        self.now = 0.0
        self.pn = 0
        self.outstanding: dict[int, tuple[float, SendState]] = {}
        self.inflight = 0
        self.acks: deque[tuple[float, int]] = deque()
        self.link_free = 0.0
        self.trace = Trace()
        self.app_limited_flagged = False
        self.max_rate_seen = 0.0

    def queue_delay(self, t: float) -> float:
        return max(self.link_free - t, 0.0)

    def send(self) -> None:
        now = self.now
        state = self.ctrl.on_packet_sent(now=now, size=SIZE, bytes_in_flight=self.inflight)
        self.pacer.on_sent(now=now, rate=self.ctrl.pacing_rate, size=SIZE)
        self.max_rate_seen = max(self.max_rate_seen, self.ctrl.pacing_rate)
        pn = self.pn
        self.pn += 1
        self.outstanding[pn] = (now, state)
        self.inflight += SIZE
        self.trace.sent += 1
        link = self.link
        lost = self.rng.random() < link.loss
        if lost and not link.loss_at_bottleneck:
            return
        if self.queue_delay(now) * link.capacity + SIZE > link.queue_bytes:
            self.trace.tail_drops += 1
            self.trace.drop_times.append(now)
            return
        self.link_free = max(now, self.link_free) + SIZE / link.capacity
        if lost:
            return
        self.acks.append((self.link_free + link.base_rtt, pn))

    def on_ack(self, pn: int) -> None:
        now = self.now
        entry = self.outstanding.pop(pn, None)
        if entry is None:
            return
        sent, state = entry
        self.inflight -= SIZE
        self.rtt.update(now - sent, ack_delay=0.0, now=now)
        self.ctrl.on_packet_acked(now=now, size=SIZE, state=state, rtt=self.rtt)
        self.trace.delivered += SIZE
        delay = self.rtt.loss_delay()
        for old in list(self.outstanding):
            osent, ostate = self.outstanding[old]
            if old < pn and (old <= pn - PACKET_THRESHOLD or osent <= now - delay):
                del self.outstanding[old]
                self.inflight -= SIZE
                self.ctrl.on_packet_lost(now=now, size=SIZE, state=ostate, rtt=self.rtt)
            else:
                break

    def timeout_check(self) -> float:
        """Crude PTO stand-in: declare the oldest packet lost when nothing is acked for long."""
        if not self.outstanding:
            return math.inf
        old = next(iter(self.outstanding))
        osent, ostate = self.outstanding[old]
        deadline = osent + 2 * self.rtt.pto(max_ack_delay=0.0)
        if deadline <= self.now:
            del self.outstanding[old]
            self.inflight -= SIZE
            self.ctrl.on_packet_lost(now=self.now, size=SIZE, state=ostate, rtt=self.rtt)
            return self.now
        return deadline

    def run(self, until: float, sample_every: float = 0.05) -> Trace:
        next_sample = self.now
        while self.now < until:
            next_send = math.inf
            while True:
                if not self.has_data(self.now):
                    if not self.app_limited_flagged:
                        self.ctrl.on_app_limited()
                        self.app_limited_flagged = True
                    next_send = self.now + 0.01
                    break
                self.app_limited_flagged = False
                if self.inflight + SIZE > self.ctrl.cwnd:
                    break
                t = self.pacer.next_send_time(now=self.now, rate=self.ctrl.pacing_rate, size=SIZE)
                if t > self.now:
                    next_send = t
                    break
                self.send()
            while self.now >= next_sample:
                tr = self.trace
                tr.times.append(self.now)
                tr.estimate.append(self.ctrl.bandwidth_estimate)
                tr.pacing.append(self.ctrl.pacing_rate)
                tr.queue_delay.append(self.queue_delay(self.now))
                tr.loss_est.append(self.ctrl.loss_estimate)
                tr.state.append(self.ctrl.state)
                next_sample += sample_every
            next_ack = self.acks[0][0] if self.acks else math.inf
            to = self.timeout_check()
            self.now = min(next_ack, next_send, to, next_sample, until)
            while self.acks and self.acks[0][0] <= self.now:
                _, pn = self.acks.popleft()
                self.on_ack(pn)
        return self.trace

    def silence(self, duration: float) -> None:
        """Outage: everything in flight vanishes, nothing is sent, then the session resumes."""
        self.now += duration
        self.acks.clear()
        self.link_free = self.now
        self.ctrl.on_outage_end(now=self.now)
        for _pn, (_sent, state) in list(self.outstanding.items()):
            self.ctrl.on_packet_lost(now=self.now, size=SIZE, state=state, rtt=self.rtt)
        self.outstanding.clear()
        self.inflight = 0


def _after(tr: Trace, t0: float, values: list[float]) -> list[float]:
    return [v for t, v in zip(tr.times, values, strict=True) if t >= t0]


def _bulk(p: float, *, at_bottleneck: bool = True, seed: int = 1, secs: float = 20.0) -> Sim:
    sim = Sim(Link(C, int(2 * C * RTT), RTT, p, at_bottleneck, seed))
    sim.run(secs)
    return sim


# ----------------------------------------------------------------- convergence


def test_no_loss_converges_to_capacity_with_small_queue() -> None:
    sim = _bulk(0.0)
    tr = sim.trace
    pacing = _after(tr, 5.0, tr.pacing)
    assert 0.8 * C <= statistics.mean(pacing) <= 1.3 * C
    assert all(0.8 * C <= e <= 1.3 * C for e in _after(tr, 5.0, tr.estimate))
    assert statistics.median(_after(tr, 5.0, tr.queue_delay)) < 0.02
    assert max(_after(tr, 5.0, tr.queue_delay)) < RTT
    assert tr.delivered / 20.0 >= 0.85 * C
    assert [t for t in tr.drop_times if t > 5.0] == []
    assert sim.ctrl.state == "probe_bw"


@pytest.mark.parametrize("p", [0.3, 0.5, 0.9])
def test_random_loss_does_not_collapse_or_run_away(p: float) -> None:
    sim = _bulk(p)
    tr = sim.trace
    estimates = _after(tr, 5.0, tr.estimate)
    # Not (1 - p) * C (plain BBR) and not above C (loss read as "send more").
    assert min(estimates) >= 0.7 * C
    assert max(estimates) <= 1.4 * C
    assert sim.ctrl.loss_estimate == pytest.approx(p, abs=0.03)
    assert tr.delivered / 20.0 >= 0.7 * (1 - p) * C
    assert [t for t in tr.drop_times if t > 5.0] == []  # no self-inflicted tail drops


def test_loss_before_queue_finds_the_sustainable_send_rate() -> None:
    p, cap = 0.5, 1_250_000.0
    sim = Sim(Link(cap, int(2 * cap * RTT), RTT, p, loss_at_bottleneck=False, seed=3))
    tr = sim.run(20.0)
    target = cap / (1 - p)  # sending this fast delivers exactly the bottleneck rate
    assert all(0.7 * target <= e <= 1.4 * target for e in _after(tr, 5.0, tr.estimate))
    assert tr.delivered / 20.0 >= 0.7 * cap


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_without_correction_the_model_collapses(p: float) -> None:
    """Control: max_loss_estimate=0 is plain BBR, which the tests above would reject."""
    sim = Sim(Link(C, int(2 * C * RTT), RTT, p, seed=1), CongestionConfig(max_loss_estimate=0.0))
    tr = sim.run(20.0)
    assert max(_after(tr, 10.0, tr.estimate)) < 0.7 * C


def test_user_max_rate_is_never_exceeded() -> None:
    cap = 0.4 * C
    sim = Sim(Link(C, int(2 * C * RTT), RTT, 0.3, seed=2), CongestionConfig(max_rate=cap))
    tr = sim.run(15.0)
    assert sim.max_rate_seen <= cap
    assert max(tr.pacing) <= cap
    assert tr.sent * SIZE / 15.0 <= cap * 1.01 + 4 * SIZE / 15.0
    assert tr.sent * SIZE / 15.0 >= 0.8 * cap


def test_app_limited_period_does_not_lower_estimate() -> None:
    def has_data(now: float) -> bool:
        # Bulk, then 10 s of a trickle (one packet per 100 ms), then bulk again.
        return not 10.0 <= now < 20.0 or (now % 0.1) < 0.001

    sim = Sim(Link(C, int(2 * C * RTT), RTT, 0.3, seed=4), has_data=has_data)
    tr = sim.run(10.0)
    before = sim.ctrl.bandwidth_estimate
    assert before >= 0.7 * C
    tr = sim.run(20.0)
    during = [e for t, e in zip(tr.times, tr.estimate, strict=True) if 10.0 <= t < 20.0]
    assert min(during) >= 0.95 * before
    assert sim.trace.sent > 0


def test_outage_resumes_at_previous_estimate() -> None:
    p = 0.3
    sim = Sim(Link(C, int(2 * C * RTT), RTT, p, seed=5))
    sim.run(15.0)
    before = sim.ctrl.bandwidth_estimate
    loss_before = sim.ctrl.loss_estimate
    assert before >= 0.7 * C
    sim.silence(600.0)  # ten minutes; everything in flight is lost
    resumed = sim.now
    assert sim.ctrl.bandwidth_estimate == pytest.approx(before)
    assert sim.ctrl.pacing_rate >= 0.95 * before
    assert sim.ctrl.state == "probe_bw"
    delivered0 = sim.trace.delivered
    sim.run(resumed + 1.0)  # five RTTs
    assert (sim.trace.delivered - delivered0) / 1.0 >= 0.6 * (1 - p) * C
    # Packets that vanished in the outage were not counted as random loss.
    assert sim.ctrl.loss_estimate == pytest.approx(loss_before, abs=0.05)
    sim.run(resumed + 10.0)
    assert sim.ctrl.bandwidth_estimate >= 0.7 * C


def test_guard_caps_estimate_on_slower_path_after_outage() -> None:
    """Re-validation: if the path got slower during the outage, the old estimate goes."""
    sim = Sim(Link(C, int(2 * C * RTT), RTT, 0.0, seed=6))
    sim.run(10.0)
    sim.silence(600.0)
    sim.link.capacity = C / 4
    resumed = sim.now
    tr = sim.run(resumed + 10.0)
    assert _after(tr, resumed + 6.0, tr.estimate)[-1] <= 0.4 * C
    assert max(_after(tr, resumed + 6.0, tr.estimate)) <= 0.4 * C


# ----------------------------------------------------------------- unit behaviour


def test_initial_outputs_and_floors() -> None:
    cfg = CongestionConfig()
    ctrl = RateController(cfg)
    assert ctrl.state == "startup"
    assert ctrl.bandwidth_estimate == cfg.initial_rate
    assert ctrl.pacing_rate == pytest.approx(cfg.startup_gain * cfg.initial_rate)
    assert ctrl.cwnd == cfg.initial_cwnd
    assert ctrl.loss_estimate == 0.0
    slow = RateController(CongestionConfig(initial_rate=1000.0, startup_gain=1.0))
    assert slow.pacing_rate == CongestionConfig().min_rate


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        CongestionConfig(max_loss_estimate=1.0)
    with pytest.raises(ValueError):
        CongestionConfig(min_rate=0.0)
    with pytest.raises(ValueError):
        CongestionConfig(probe_gains=())


def test_send_state_snapshot_and_app_limited_flag() -> None:
    ctrl = RateController()
    rtt = RttEstimator()
    s0 = ctrl.on_packet_sent(now=1.0, size=SIZE, bytes_in_flight=0)
    assert s0 == SendState(0, 1.0, 1.0, 1.0, False, 0, sent_total=SIZE, first_sent_total=0)
    ctrl.on_app_limited()
    s1 = ctrl.on_packet_sent(now=1.1, size=SIZE, bytes_in_flight=SIZE)
    assert s1.is_app_limited
    rtt.update(0.2, ack_delay=0.0, now=1.2)
    ctrl.on_packet_acked(now=1.2, size=SIZE, state=s0, rtt=rtt)
    ctrl.on_packet_acked(now=1.3, size=SIZE, state=s1, rtt=rtt)
    s2 = ctrl.on_packet_sent(now=1.4, size=SIZE, bytes_in_flight=0)
    assert s2.delivered == 2 * SIZE
    assert not s2.is_app_limited  # the app-limited flight has been delivered


def test_loss_estimate_is_clamped() -> None:
    cfg = CongestionConfig(max_loss_estimate=0.8)
    ctrl = RateController(cfg)
    rtt = RttEstimator()
    now = 0.0
    for _ in range(50):  # rounds of one delivered and 20 lost packets, no queueing
        states = [ctrl.on_packet_sent(now=now, size=SIZE, bytes_in_flight=0) for _ in range(21)]
        now += 0.1
        rtt.update(0.1, ack_delay=0.0, now=now)
        for st in states[:20]:
            ctrl.on_packet_lost(now=now, size=SIZE, state=st, rtt=rtt)
        ctrl.on_packet_acked(now=now, size=SIZE, state=states[20], rtt=rtt)
    assert ctrl.loss_estimate == 0.8
    assert ctrl.cwnd >= cfg.min_cwnd
    assert ctrl.pacing_rate >= cfg.min_rate


# ----------------------------------------------------------------- pacer


def test_pacer_long_run_rate_matches_request() -> None:
    pacer = Pacer()
    rate, now, sent = 1_000_000.0, 0.0, 0
    while now < 10.0:
        t = pacer.next_send_time(now=now, rate=rate, size=SIZE)
        if t <= now:
            pacer.on_sent(now=now, rate=rate, size=SIZE)
            sent += SIZE
        else:
            now = t
    burst = max(4 * SIZE, rate * Pacer.BURST_TIME)
    assert rate * 10.0 <= sent <= rate * 10.0 + burst + SIZE


@pytest.mark.parametrize("rate", [50_000.0, 1_000_000.0, 50_000_000.0])
def test_pacer_bursts_are_bounded(rate: float) -> None:
    pacer = Pacer(burst_packets=4)
    rng = random.Random(7)
    now = 0.0
    sends: list[float] = []
    for _ in range(3000):
        t = pacer.next_send_time(now=now, rate=rate, size=SIZE)
        if t <= now:
            pacer.on_sent(now=now, rate=rate, size=SIZE)
            sends.append(now)
        # Wake up late or idle sometimes: a full bucket must still be all we may send at once.
        now = max(now, t) + (rng.random() * 0.05 if rng.random() < 0.05 else 0.0)
    burst = max(4 * SIZE, rate * Pacer.BURST_TIME)
    window = deque[float]()
    for t in sends:
        window.append(t)
        while window and window[0] < t - 0.01:
            window.popleft()
        # Bytes in any 10 ms stretch never exceed the bucket plus 10 ms of rate.
        assert len(window) * SIZE <= burst + rate * 0.01 + SIZE
    at_once = max(sends.count(t) for t in set(sends))
    assert at_once * SIZE <= burst + SIZE
    assert at_once >= 4  # the burst exists: after idle, 4 packets leave together


def test_pacer_rejects_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        Pacer().next_send_time(now=0.0, rate=0.0, size=SIZE)
    with pytest.raises(ValueError):
        Pacer(burst_packets=0)


def test_pacer_small_packets_do_not_shrink_the_burst() -> None:
    # Issue 16: the bucket was sized by the packet just sent, so after a run of small
    # packets a full one waited a whole packet time (96 ms at the 12.5 kB/s floor).
    pacer = Pacer(packet_size=SIZE)
    rate, now = 12_500.0, 0.0
    for _ in range(50):
        assert pacer.next_send_time(now=now, rate=rate, size=SIZE) <= now
        pacer.on_sent(now=now, rate=rate, size=56)
        now += 0.05
    assert pacer.next_send_time(now=now, rate=rate, size=SIZE) <= now

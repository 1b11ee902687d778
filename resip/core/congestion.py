"""Congestion control that does not read random loss as congestion, and a pacer. Sans-IO.

ResIP runs over links with 30-99 % random loss. Loss-based control (Reno, CUBIC) halves
its window on every loss and collapses there. BBR v1 (draft-cardwell-iccrg-bbr-congestion-
control-00) ignores loss but still collapses above ~20 % loss: its bandwidth estimate is the
delivery rate, which is ``(1 - p)`` times the sending rate, so pacing at
``gain * (1 - p) * rate`` shrinks whenever ``gain * (1 - p) < 1``.

:class:`RateController` is a BBR-style model with a *loss-corrected* bandwidth estimate:

- delivery-rate samples as in draft-cheng-iccrg-delivery-rate-estimation (§3);
- a smoothed estimate ``p`` of the *non-congestive* loss fraction, fed only by round trips
  that showed no queueing (their losses cannot be tail drops we caused);
- bandwidth sample = delivery rate / (1 - p); the estimate is a max filter over
  ``bw_window_rounds`` round trips (BBR §4.1.1);
- a queueing guard: two consecutive round trips whose minimum RTT is well above the
  windowed minimum mean we are overfilling a queue, so the estimate is capped at the
  round's measured delivery rate (corrected only with the frozen ``p``) and one round is
  paced at 0.75 to drain what we queued.

Contract with the session (per acknowledged or lost packet, in this order):

1. ``state = on_packet_sent(now=, size=, bytes_in_flight=)`` when a packet leaves, where
   ``bytes_in_flight`` excludes the packet itself; store ``state`` with the packet.
2. On an ACK, call ``RttEstimator.update`` first (if the ACK gives a sample), then
   ``on_packet_acked`` for each newly acknowledged packet and ``on_packet_lost`` for each
   packet declared lost.
3. ``on_app_limited()`` whenever the sender has nothing to send while the window is open.
4. ``on_outage_end(now=)`` when traffic resumes after a long silence, *before* feeding the
   first ACK after it; packets sent before that call no longer affect the model.

Invariants: ``min_rate <= pacing_rate`` unless ``max_rate < min_rate``;
``pacing_rate <= max_rate`` when a cap is set; ``min_cwnd <= cwnd``;
``0 <= loss_estimate <= max_loss_estimate < 1``; memory is bounded (the max filter holds at
most ``bw_window_rounds + 1`` entries; nothing grows with the number of packets).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Literal

from resip.core.recovery import RttEstimator

ControllerState = Literal["startup", "drain", "probe_bw"]

# Queue detection thresholds relative to the windowed minimum RTT. "No queue" is tighter than
# "queue" so that rounds in between neither feed the loss estimate nor trigger the guard.
_NO_QUEUE_ABS: Final = 0.005
_NO_QUEUE_REL: Final = 0.10
_QUEUE_ABS: Final = 0.010
_QUEUE_REL: Final = 0.25
_QUEUE_ROUNDS: Final = 2
_GUARD_DECREASE: Final = 0.85
_GUARD_COOLDOWN_ROUNDS: Final = 8
_DRAIN_GAIN_AFTER_GUARD: Final = 0.75
# RTT samples in a startup round before a queue may end startup early (RFC 9406 uses 8).
_STARTUP_QUEUE_SAMPLES: Final = 8


def _queue_threshold(wmin: float) -> float:
    """Round minimum RTT above which the round is counted as queueing."""
    return wmin + max(_QUEUE_ABS, _QUEUE_REL * wmin)


# Loss estimate memory. The estimate is the ratio of decayed packet counts (lost / resolved)
# rather than an EWMA of per-round fractions, so rounds weigh by their packet count. The
# precision of (1 - p) is what matters (the correction divides by it): its relative error is
# about sqrt(p / acked), so 256 acknowledged packets give ~6 % even at p = 0.99. History is
# therefore trimmed only while at least _LOSS_MEMORY_ACKED acked and _LOSS_MEMORY_PACKETS
# packets remain; a single round never weighs more than 1/_LOSS_MAX_ROUND_SHARE of the
# total; and every round decays the past by at least _LOSS_MIN_DECAY, so at low packet rates
# the memory is still ~32 round trips (the per-round EWMA weight is 1/32 .. 1/4).
_LOSS_MEMORY_PACKETS: Final = 2048
_LOSS_MEMORY_ACKED: Final = 256
_LOSS_MAX_ROUND_SHARE: Final = 4
_LOSS_MIN_DECAY: Final = 1 / 32
# Startup judges "no more growth" only once (1 - p) is known within ~25 % (sqrt(1/16)):
# before that, samples are corrected with a loss estimate that is still catching up.
_STARTUP_MIN_ACKED: Final = 16

# Shrink of each bandwidth sample, in standard deviations of its binomial noise.
_NOISE_Z: Final = 1.5

# Startup ends when the estimate has not grown by 25 % for 3 rounds (BBR §4.3.2.2).
_STARTUP_GROWTH: Final = 1.25
_STARTUP_FULL_ROUNDS: Final = 3
# Drain ends once in-flight falls to one BDP, or after this many rounds whatever happens.
_MAX_DRAIN_ROUNDS: Final = 3
# probe_bw starts in a cruising phase (gain 1) rather than probing right after a drain.
_PROBE_START_PHASE: Final = 2


@dataclass(frozen=True, slots=True)
class CongestionConfig:
    """Tuning of :class:`RateController`. Rates in bytes/s, windows in bytes."""

    initial_rate: float = 125_000.0
    min_rate: float = 12_500.0
    max_rate: float | None = None
    initial_cwnd: int = 64 * 1200
    min_cwnd: int = 8 * 1200
    bw_window_rounds: int = 10
    startup_gain: float = 2.885
    probe_gains: tuple[float, ...] = (1.25, 0.75, 1, 1, 1, 1, 1, 1)
    cwnd_gain: float = 2.0
    #: Seconds added to min RTT for the window: the peer's maximum ACK delay.
    ack_allowance: float = 0.025
    max_loss_estimate: float = 0.99

    def __post_init__(self) -> None:
        if not (self.initial_rate > 0 and self.min_rate > 0):
            raise ValueError("initial_rate and min_rate must be positive")
        if self.max_rate is not None and not self.max_rate > 0:
            raise ValueError("max_rate must be positive")
        if self.bw_window_rounds < 1 or not self.probe_gains:
            raise ValueError("bw_window_rounds and probe_gains must be non-empty")
        if not 0 <= self.max_loss_estimate < 1:
            raise ValueError("max_loss_estimate must be in [0, 1)")
        if self.min_cwnd <= 0 or self.initial_cwnd <= 0:
            raise ValueError("windows must be positive")


@dataclass(frozen=True, slots=True)
class SendState:
    """Snapshot taken when a packet is sent; the session stores it with the packet.

    Fields follow draft-cheng-iccrg-delivery-rate-estimation §3.2 (``P.delivered``,
    ``P.delivered_time``, ``P.first_sent_time``, ``P.is_app_limited``), plus the send time
    and the controller epoch (bumped by an outage so stale packets are ignored).
    """

    delivered: int
    delivered_time: float
    first_sent_time: float
    sent_time: float
    is_app_limited: bool
    epoch: int
    #: Bytes sent in total including this packet, and at ``first_sent_time``: their
    #: difference over the send interval is the rate we actually offered the path.
    sent_total: int = 0
    first_sent_total: int = 0


class _MaxFilter:
    """Max of (round, value) samples over the last ``window`` rounds (BBR §4.1.1).

    Monotone deque: rounds increase and values strictly decrease front to back, so the front
    is the maximum and there is at most one entry per round. Entries expire only when a new
    sample arrives, so the filter never empties.
    """

    __slots__ = ("_items", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._items: deque[tuple[int, float]] = deque()

    def update(self, round_count: int, value: float) -> None:
        items = self._items
        if items and items[-1][1] >= value and items[-1][0] == round_count:
            return
        while items and items[-1][1] <= value:
            items.pop()
        items.append((round_count, value))
        self.expire(round_count)

    def expire(self, round_count: int) -> None:
        # Like Linux's minmax, the newest entry always survives: without fresh samples (an
        # app-limited or silent period) the last known maximum is kept, not forgotten.
        items = self._items
        while len(items) > 1 and items[0][0] <= round_count - self._window:
            items.popleft()

    def cap(self, value: float) -> None:
        capped: deque[tuple[int, float]] = deque()
        for rnd, v in self._items:
            v = min(v, value)
            while capped and capped[-1][1] <= v:
                capped.pop()
            capped.append((rnd, v))
        self._items = capped

    def reset(self, round_count: int, value: float) -> None:
        self._items = deque([(round_count, value)])

    @property
    def best(self) -> float:
        return self._items[0][1]


class RateController:
    """Loss-tolerant BBR-style rate controller; see the module docstring for the contract."""

    def __init__(self, config: CongestionConfig = CongestionConfig()) -> None:
        """Start in ``startup`` pacing at ``startup_gain * initial_rate``."""
        self.config = config
        self.state: ControllerState = "startup"
        # Rate sampling (draft-cheng-iccrg-delivery-rate-estimation §3.1).
        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._sent_total = 0
        self._first_sent_total = 0
        self._app_limited_until = 0  # C.app_limited: delivered mark ending app-limited phase
        self._inflight_hint = 0
        self._epoch = 0
        # Round counting (BBR §4.1.1.3).
        self._round_count = 0
        self._next_round_delivered = 0
        self._round_start_time: float | None = None
        self._round_start_delivered = 0
        self._round_acked = 0
        self._round_lost = 0
        self._round_min_rtt = math.inf
        self._round_app_limited = False
        # Model.
        self._bw = _MaxFilter(config.bw_window_rounds)
        # Seed with initial_rate as if it were a sample: fresh samples replace it after
        # bw_window_rounds rounds, and the queueing guard caps it on a slower path.
        self._bw.reset(0, config.initial_rate)
        self._loss_acked = 0.0
        self._loss_lost = 0.0
        self.loss_estimate = 0.0
        self._queue_rounds = 0
        self._guard_cooldown = 0
        self._full_bw = 0.0
        self._full_bw_rounds = 0
        self._drain_rounds = 0
        self._phase = _PROBE_START_PHASE
        self._guard_drain = False
        self._min_rtt = math.inf  # windowed min RTT last seen, for the cwnd
        self.pacing_rate = 0.0
        self.cwnd = config.initial_cwnd
        self._update_outputs()

    # ----------------------------------------------------------------- outputs

    @property
    def bandwidth_estimate(self) -> float:
        """Loss-corrected bottleneck bandwidth estimate in bytes/s."""
        return self._bw.best

    @property
    def pacing_gain(self) -> float:
        """Gain currently applied to the estimate."""
        cfg = self.config
        if self.state == "startup":
            return cfg.startup_gain
        if self.state == "drain":
            return 1 / cfg.startup_gain
        if self._guard_drain:
            return _DRAIN_GAIN_AFTER_GUARD
        return float(cfg.probe_gains[self._phase])

    def _update_outputs(self) -> None:
        cfg = self.config
        est = self.bandwidth_estimate
        rate = max(self.pacing_gain * est, cfg.min_rate)
        if cfg.max_rate is not None:
            rate = min(rate, cfg.max_rate)
            est = min(est, cfg.max_rate)
        self.pacing_rate = rate
        if math.isinf(self._min_rtt):
            self.cwnd = max(cfg.initial_cwnd, cfg.min_cwnd)
            return
        gain = max(cfg.cwnd_gain, cfg.startup_gain) if self.state == "startup" else cfg.cwnd_gain
        # Lost packets not yet detected as lost still count as in flight: divide by (1 - p).
        # The feedback loop is longer than the path's RTT by the receiver's ACK delay
        # (and, on loopback or a LAN, by our own processing): without that allowance a
        # 0.2 ms loopback RTT gives an 8-packet window and 1 MB/s through a 10 ms loop.
        bdp = est * (self._min_rtt + cfg.ack_allowance) / (1 - self.loss_estimate)
        self.cwnd = max(cfg.min_cwnd, int(gain * bdp))

    # ------------------------------------------------------------------ events

    def on_packet_sent(self, *, now: float, size: int, bytes_in_flight: int) -> SendState:
        """Record a departure; ``bytes_in_flight`` excludes this packet. Returns its snapshot."""
        if bytes_in_flight <= 0:
            # Start of a new flight: sampling intervals must not span the idle period (§3.2).
            self._first_sent_time = now
            self._first_sent_total = self._sent_total
            self._delivered_time = now
        if self._round_start_time is None:
            self._round_start_time = now
        self._inflight_hint = max(bytes_in_flight, 0) + size
        self._sent_total += size
        return SendState(
            delivered=self._delivered,
            delivered_time=self._delivered_time,
            first_sent_time=self._first_sent_time,
            sent_total=self._sent_total,
            first_sent_total=self._first_sent_total,
            sent_time=now,
            is_app_limited=self._app_limited_until != 0,
            epoch=self._epoch,
        )

    def on_app_limited(self) -> None:
        """The sender ran out of data: samples until the current flight is acked are app-limited."""
        # Draft §3.4: mark the delivered count at which the app-limited phase ends.
        self._app_limited_until = max(self._delivered + self._inflight_hint, 1)

    def on_packet_acked(
        self, *, now: float, size: int, state: SendState, rtt: RttEstimator
    ) -> None:
        """A packet was acknowledged: take a delivery-rate sample and maybe end a round."""
        self._inflight_hint = max(self._inflight_hint - size, 0)
        self._delivered += size
        self._delivered_time = now
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0
        if state.epoch != self._epoch:
            return
        self._round_acked += 1
        if rtt.has_sample:
            self._min_rtt = rtt.windowed_min_rtt
            self._round_min_rtt = min(self._round_min_rtt, rtt.latest_adjusted)
        if state.is_app_limited:
            self._round_app_limited = True
        if state.sent_time > self._first_sent_time:
            self._first_sent_time = state.sent_time
            self._first_sent_total = state.sent_total
        self._rate_sample(state, size, rtt)
        if state.delivered >= self._next_round_delivered:
            self._end_round(now, rtt)
        elif (
            self.state == "startup"
            and self._round_acked >= _STARTUP_QUEUE_SAMPLES
            and rtt.has_sample
            and self._round_min_rtt > _queue_threshold(rtt.min_rtt)
        ):
            # Like HyStart++ (RFC 9406 §4.2), judge the RTT after a few samples instead of
            # at the round's end: with a queue building, a round lasts longer and longer.
            self._enter_drain()
        self._update_outputs()

    def on_packet_lost(self, *, now: float, size: int, state: SendState, rtt: RttEstimator) -> None:
        """A packet was declared lost. Loss alone never lowers the rate; it feeds ``p``."""
        self._inflight_hint = max(self._inflight_hint - size, 0)
        if state.epoch != self._epoch:
            return
        self._round_lost += 1

    def on_packet_forgotten(self, *, size: int) -> None:
        """A packet left flight without a verdict (probe timeout): not a loss sample."""
        self._inflight_hint = max(self._inflight_hint - size, 0)

    def on_outage_end(self, *, now: float) -> None:
        """Resume after a long silence at the last good estimate, and re-validate it.

        The estimate is kept as a single fresh sample: if the path no longer supports it,
        fresh samples replace it after ``bw_window_rounds`` rounds, or the queueing guard
        caps it sooner.
        Packets sent before this call are ignored for sampling and loss accounting, since
        their fate says something about the outage, not about random loss.
        """
        est = self.bandwidth_estimate
        self._epoch += 1
        self._round_count += 1
        self._bw.reset(self._round_count, est)
        self._next_round_delivered = self._delivered
        self._first_sent_time = now
        self._first_sent_total = self._sent_total
        self._delivered_time = now
        self._app_limited_until = 0
        self._reset_round(now)
        self._queue_rounds = 0
        self._full_bw = est
        self._full_bw_rounds = 0
        self._guard_drain = False
        if self.state != "probe_bw":
            self.state = "probe_bw"
        self._phase = _PROBE_START_PHASE
        self._update_outputs()

    # --------------------------------------------------------------- internals

    def _rate_sample(self, state: SendState, size: int, rtt: RttEstimator) -> None:
        # Draft §3.3: the interval is the longer of the send and ACK phases, which guards
        # against ACK compression inflating the rate.
        send_elapsed = state.sent_time - state.first_sent_time
        ack_elapsed = self._delivered_time - state.delivered_time
        interval = max(send_elapsed, ack_elapsed)
        # Intervals shorter than min RTT cannot be trusted (draft §3.3, "interval < MinRTT").
        if interval <= 0 or (rtt.has_sample and interval < rtt.min_rtt):
            return
        delivered = self._delivered - state.delivered
        p = self.loss_estimate
        # Random loss thins the delivered count binomially: over n delivered packets the
        # corrected sample has relative noise ~sqrt(p / n). A max filter over noisy samples
        # is biased upward by about NOISE_Z standard deviations (the expected maximum of the
        # ~20-30 nearly independent samples in the window), which at p = 0.9 would overshoot
        # the bottleneck by ~30 % and keep a standing queue. Shrinking every sample by that
        # margin makes the filtered maximum roughly unbiased; at p = 0 it is plain BBR.
        noise = math.sqrt(p * size / max(delivered, size))
        sample = delivered / interval / (1 - p) / (1 + _NOISE_Z * noise)
        if send_elapsed > 0:
            # The loss correction can never claim the path carried more than we offered
            # it: with p near 1 a few lucky ACKs (or ACK compression) would otherwise
            # multiply into a rate many times the bottleneck, and the queue overflow that
            # follows would feed the loss estimate further (a runaway).
            offered = (state.sent_total - state.first_sent_total) / send_elapsed
            sample = min(sample, offered)
        # App-limited samples may raise but never lower the estimate (BBR §4.1.1.5).
        if state.is_app_limited and sample <= self.bandwidth_estimate:
            return
        self._bw.update(self._round_count, sample)

    def _reset_round(self, now: float) -> None:
        self._round_start_time = now
        self._round_start_delivered = self._delivered
        self._round_acked = 0
        self._round_lost = 0
        self._round_min_rtt = math.inf
        self._round_app_limited = False

    def _end_round(self, now: float, rtt: RttEstimator) -> None:
        self._next_round_delivered = self._delivered
        self._round_count += 1
        start = self._round_start_time if self._round_start_time is not None else now
        duration = now - start
        delivered = self._delivered - self._round_start_delivered
        acked, lost, round_rtt = self._round_acked, self._round_lost, self._round_min_rtt
        app_limited = self._round_app_limited
        self._reset_round(now)
        queued = self._judge_queue(acked, lost, round_rtt, app_limited, rtt)
        guard_fired = self._queue_guard(delivered, duration)
        if self.state == "startup":
            self._end_startup_round(queued or guard_fired, app_limited)
        elif self.state == "drain":
            self._end_drain_round(queued, rtt.min_rtt)
        else:
            if self._guard_drain:
                self._guard_drain = False
            else:
                self._phase = (self._phase + 1) % len(self.config.probe_gains)
            if guard_fired:
                self._guard_drain = True

    def _judge_queue(
        self, acked: int, lost: int, round_rtt: float, app_limited: bool, rtt: RttEstimator
    ) -> bool:
        """Whether the round showed queueing; a clean one feeds the loss estimate."""
        # Queueing is judged against the smallest RTT ever seen on this path, not the
        # 10-second window: a queue we keep full for 10 s would otherwise become the new
        # baseline, and the loss correction would then read our own tail drops as random
        # loss and run away (BBR needs ProbeRTT for the same reason).
        wmin = rtt.min_rtt
        queued = False
        if rtt.has_sample and math.isfinite(round_rtt):
            if round_rtt <= wmin + max(_NO_QUEUE_ABS, _NO_QUEUE_REL * wmin):
                self._fold_loss(acked, lost)
            queued = round_rtt > _queue_threshold(wmin)
            # An app-limited round neither proves nor disproves a queue of ours, and its
            # delivery rate is what the application offered, not what the path passes:
            # letting the guard cap the estimate with it decays an interactive session to
            # min_rate, where one packet waits ~100 ms for the pacer.
            if not app_limited:
                self._queue_rounds = self._queue_rounds + 1 if queued else 0
        return queued

    def _queue_guard(self, delivered: int, duration: float) -> bool:
        """Cap the estimate after persistent queueing; returns whether it fired."""
        if self._guard_cooldown:
            self._guard_cooldown -= 1
            return False
        if self._queue_rounds < _QUEUE_ROUNDS or duration <= 0:
            return False
        # We are overfilling a queue. The round's delivery rate is what the bottleneck
        # really passes; correct it only with the loss estimate frozen before queueing.
        # That estimate may itself be inflated (tail drops from an earlier overshoot
        # look like random loss), so also shrink by a fixed factor: persistent
        # queueing then always ends, and clean rounds re-learn the true loss rate.
        self._bw.cap(
            min(
                delivered / duration / (1 - self.loss_estimate),
                self.bandwidth_estimate * _GUARD_DECREASE,
            )
        )
        self._queue_rounds = 0
        # Let the drain take effect before judging again: on a 1 ms loopback round
        # the guard would otherwise cut 15 % every 2 ms and collapse the rate.
        self._guard_cooldown = _GUARD_COOLDOWN_ROUNDS
        return True

    def _end_startup_round(self, queue_seen: bool, app_limited: bool) -> None:
        if queue_seen:
            # In startup one queued round suffices: we pace at ~2.9x the estimate, so a
            # queue means the pipe is full, and waiting for the 2-round guard or 3 flat
            # rounds (BBR §4.3.2.2) costs seconds of tail drops on long-RTT paths. RTT
            # growth as a slow-start exit signal is HyStart++ (RFC 9406 §4.2).
            self._enter_drain()
        elif not app_limited and self._loss_acked >= _STARTUP_MIN_ACKED:
            est = self.bandwidth_estimate
            if est >= self._full_bw * _STARTUP_GROWTH:
                self._full_bw = est
                self._full_bw_rounds = 0
            else:
                self._full_bw_rounds += 1
                if self._full_bw_rounds >= _STARTUP_FULL_ROUNDS:
                    self._enter_drain()

    def _end_drain_round(self, queued: bool, wmin: float) -> None:
        self._drain_rounds += 1
        bdp = self.bandwidth_estimate * wmin
        # A round without queueing has nothing left to drain (startup may have ended on
        # flat growth with no queue at all, e.g. when the initial rate was already high).
        if not queued or self._inflight_hint <= bdp or self._drain_rounds >= _MAX_DRAIN_ROUNDS:
            self.state = "probe_bw"
            self._phase = _PROBE_START_PHASE

    def _enter_drain(self) -> None:
        self.state = "drain"
        self._drain_rounds = 0

    def _fold_loss(self, acked: int, lost: int) -> None:
        n = acked + lost
        if n <= 0:
            return
        keep = 1 - _LOSS_MIN_DECAY
        old_acked = self._loss_acked * keep
        old_total = (self._loss_acked + self._loss_lost) * keep
        if old_total > _LOSS_MEMORY_PACKETS and old_acked > _LOSS_MEMORY_ACKED:
            trim = max(
                _LOSS_MEMORY_PACKETS / old_total,
                _LOSS_MEMORY_ACKED / old_acked,
                (_LOSS_MAX_ROUND_SHARE - 1) * n / old_total,
            )
            keep *= min(trim, 1.0)
        self._loss_acked = self._loss_acked * keep + acked
        self._loss_lost = self._loss_lost * keep + lost
        p = self._loss_lost / (self._loss_acked + self._loss_lost)
        self.loss_estimate = min(p, self.config.max_loss_estimate)


class Pacer:
    """Token bucket with a small burst (``burst_packets`` full packets or 2 ms worth, the larger).

    ``next_send_time`` does not change state; ``on_sent`` spends tokens. The bucket's size
    is fixed by ``packet_size`` (the largest packet the caller sends), never by the size of
    the packet asked about: a run of small packets must not shrink the burst until a full
    one can never leave on time. Tokens may go negative when a packet larger than the
    credit left is sent (the caller asks about the smallest packet it could send, so
    pacing never delays a packet that fits), and the debt is repaid before the next one,
    so the long-run rate still equals the requested rate.
    """

    BURST_TIME: Final = 0.002

    __slots__ = ("_burst_bytes", "_last", "_tokens")

    def __init__(self, *, burst_packets: int = 4, packet_size: int = 1200) -> None:
        """Start with a full bucket."""
        if burst_packets < 1 or packet_size < 1:
            raise ValueError("burst_packets and packet_size must be at least 1")
        self._burst_bytes = burst_packets * packet_size
        self._tokens: float | None = None  # None: full bucket
        self._last = 0.0

    def _burst(self, rate: float) -> float:
        return max(self._burst_bytes, rate * self.BURST_TIME)

    def _available(self, now: float, rate: float) -> float:
        burst = self._burst(rate)
        if self._tokens is None:
            return burst
        return min(burst, self._tokens + max(now - self._last, 0.0) * rate)

    def next_send_time(self, *, now: float, rate: float, size: int) -> float:
        """Earliest time a packet of ``size`` bytes may leave; ``<= now`` means send now."""
        if not rate > 0:
            raise ValueError("rate must be positive")
        tokens = self._available(now, rate)
        if tokens >= size:
            return now
        return now + (size - tokens) / rate

    def on_sent(self, *, now: float, rate: float, size: int) -> None:
        """Spend ``size`` bytes of tokens for a packet sent at ``now``."""
        if not rate > 0:
            raise ValueError("rate must be positive")
        self._tokens = self._available(now, rate) - size
        self._last = max(now, self._last)

"""RTT estimation and probe-timeout arithmetic (RFC 9002 §5 and §6.2), sans-IO.

Contract:

- The caller measures ``latest_rtt`` (time from sending the largest newly acknowledged
  ack-eliciting packet to receiving its ACK) and passes the peer's reported ACK delay,
  already clamped to the peer's ``max_ack_delay`` once the handshake is confirmed
  (RFC 9002 §5.3). Every time is a ``now: float`` in seconds; nothing here reads a clock.
- Before the first sample ``smoothed``, ``latest``, ``min_rtt`` and ``windowed_min_rtt``
  equal ``initial_rtt`` and ``rttvar`` is ``initial_rtt / 2`` (RFC 9002 §5.3 / §6.2.2),
  so every derived timer is defined from the start.

Invariants: ``min_rtt <= windowed_min_rtt`` after the first sample; all values are
finite and positive; the windowed-minimum deque holds at most about
``WINDOW_BUCKETS + 1`` entries whatever the sample rate.
"""

from __future__ import annotations

import math
from collections import deque

INITIAL_RTT = 0.333
"""RFC 9002 §6.2.2: RTT assumed before any sample (seconds)."""
GRANULARITY = 0.001
"""RFC 9002 §6.1.2 kGranularity: timer granularity (seconds)."""
PACKET_THRESHOLD = 3
"""RFC 9002 §6.1.1 kPacketThreshold: reordering tolerated before declaring loss."""
TIME_THRESHOLD = 9 / 8
"""RFC 9002 §6.1.2 kTimeThreshold: multiple of the RTT tolerated before declaring loss."""
MIN_RTT_WINDOW = 10.0
"""Length of the windowed minimum used by congestion control (seconds), as in BBR."""
WINDOW_BUCKETS = 64
"""Resolution of the windowed minimum: samples closer together than window/64 coalesce."""


class RttEstimator:
    """Smoothed RTT, RTT variation and minimum RTT per RFC 9002 §5, plus a windowed minimum.

    ``min_rtt`` is the all-time minimum (RFC 9002 uses it to judge ACK delays);
    ``windowed_min_rtt`` forgets samples older than ``min_rtt_window`` so congestion
    control notices when a route change makes the path longer.
    """

    __slots__ = (
        "_bucket",
        "_window",
        "_wmin",
        "has_sample",
        "latest",
        "latest_adjusted",
        "min_rtt",
        "rttvar",
        "smoothed",
    )

    def __init__(
        self, initial_rtt: float = INITIAL_RTT, *, min_rtt_window: float = MIN_RTT_WINDOW
    ) -> None:
        """Start with no sample; ``initial_rtt`` must be positive."""
        if not initial_rtt > 0 or not min_rtt_window > 0:
            raise ValueError("initial_rtt and min_rtt_window must be positive")
        self.has_sample = False
        self.latest = initial_rtt
        #: ``latest`` less the peer's ACK delay (when that stays above ``min_rtt``): what
        #: the path itself took, for judging queueing. A delayed ACK is not a queue.
        self.latest_adjusted = initial_rtt
        self.smoothed = initial_rtt
        self.rttvar = initial_rtt / 2
        self.min_rtt = initial_rtt
        self._window = min_rtt_window
        self._bucket = min_rtt_window / WINDOW_BUCKETS
        # Monotone deque of (time, rtt): times and rtts both strictly increase from
        # front to back, so the front is the minimum of the window.
        self._wmin: deque[tuple[float, float]] = deque()

    @property
    def windowed_min_rtt(self) -> float:
        """Minimum RTT sample of the last ``min_rtt_window`` seconds (``initial_rtt`` before any).

        Approximation: a sample that arrives less than window/64 after an equal or smaller
        one is not stored, so it may be forgotten up to window/64 early; this bounds memory.
        """
        if self._wmin:
            return self._wmin[0][1]
        return self.min_rtt

    def update(self, latest_rtt: float, *, ack_delay: float, now: float) -> None:
        """Fold one RTT sample in (RFC 9002 §5.3); non-positive or non-finite ones are ignored."""
        if not (latest_rtt > 0 and math.isfinite(latest_rtt)):
            return
        ack_delay = max(ack_delay, 0.0) if math.isfinite(ack_delay) else 0.0
        self.latest = latest_rtt
        self._update_windowed(latest_rtt, now)
        if not self.has_sample:
            # RFC 9002 §5.3: the first sample initialises everything; ack_delay is ignored.
            self.has_sample = True
            self.latest_adjusted = latest_rtt
            self.min_rtt = latest_rtt
            self.smoothed = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        # min_rtt uses the raw sample, never adjusted for ACK delay (RFC 9002 §5.2).
        self.min_rtt = min(self.min_rtt, latest_rtt)
        adjusted = latest_rtt
        # Subtract the peer's delay only if that does not go below min_rtt: a peer that
        # over-reports its delay must not drive smoothed_rtt under the path's RTT (§5.3).
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted = latest_rtt - ack_delay
        self.latest_adjusted = adjusted
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed - adjusted)
        self.smoothed = 0.875 * self.smoothed + 0.125 * adjusted

    def _update_windowed(self, rtt: float, now: float) -> None:
        wmin = self._wmin
        # A larger-or-equal sample right after a smaller one adds little information:
        # skipping it keeps the deque at most WINDOW_BUCKETS + 1 long.
        if wmin and wmin[-1][1] <= rtt and now - wmin[-1][0] < self._bucket:
            pass
        else:
            while wmin and wmin[-1][1] >= rtt:
                wmin.pop()
            wmin.append((now, rtt))
        # The newest entry is never older than one bucket, so the deque never empties here.
        horizon = now - self._window
        while len(wmin) > 1 and wmin[0][0] < horizon:
            wmin.popleft()

    def pto(self, *, max_ack_delay: float) -> float:
        """Probe timeout duration before backoff (RFC 9002 §6.2.1)."""
        return self.smoothed + max(4 * self.rttvar, GRANULARITY) + max_ack_delay

    def loss_delay(self) -> float:
        """Time threshold for declaring a packet lost (RFC 9002 §6.1.2)."""
        return max(TIME_THRESHOLD * max(self.smoothed, self.latest), GRANULARITY)


def backoff(base: float, count: int, *, cap: float) -> float:
    """``base * 2**count`` capped at ``cap`` (RFC 9002 §6.2.1 exponential PTO backoff).

    Never overflows, whatever ``count`` is. Raises ``ValueError`` for a negative count.
    """
    if count < 0:
        raise ValueError("count must be non-negative")
    if base >= cap:
        return cap
    if base <= 0:
        return base
    # Compare exponents instead of computing 2**count, which overflows a float at 1024.
    if count >= math.log2(cap / base):
        return cap
    return min(math.ldexp(base, count), cap)

"""RttEstimator and backoff: RFC 9002 §5 arithmetic, ACK-delay handling, windowed minimum."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.recovery import (
    GRANULARITY,
    INITIAL_RTT,
    TIME_THRESHOLD,
    RttEstimator,
    backoff,
)


def test_initial_values_follow_rfc9002() -> None:
    rtt = RttEstimator()
    assert not rtt.has_sample
    assert rtt.smoothed == INITIAL_RTT
    assert rtt.rttvar == INITIAL_RTT / 2
    # RFC 9002 §6.2.2: initial PTO = smoothed + 4 * rttvar (+ max_ack_delay) = 3 * initial.
    assert rtt.pto(max_ack_delay=0.0) == pytest.approx(3 * INITIAL_RTT)
    assert rtt.windowed_min_rtt == INITIAL_RTT


def test_first_sample_ignores_ack_delay() -> None:
    rtt = RttEstimator()
    rtt.update(0.100, ack_delay=0.050, now=1.0)
    assert rtt.has_sample
    assert rtt.latest == 0.100
    assert rtt.min_rtt == 0.100
    assert rtt.smoothed == 0.100
    assert rtt.rttvar == 0.050
    assert rtt.pto(max_ack_delay=0.025) == pytest.approx(0.100 + 4 * 0.050 + 0.025)


def test_second_sample_ewma_and_ack_delay_subtracted() -> None:
    rtt = RttEstimator()
    rtt.update(0.100, ack_delay=0.0, now=1.0)
    rtt.update(0.140, ack_delay=0.020, now=2.0)
    adjusted = 0.120  # 0.140 - 0.020 stays >= min_rtt, so the delay is subtracted
    assert rtt.min_rtt == 0.100
    assert rtt.rttvar == pytest.approx(0.75 * 0.050 + 0.25 * abs(0.100 - adjusted))
    assert rtt.smoothed == pytest.approx(0.875 * 0.100 + 0.125 * adjusted)
    assert rtt.latest == 0.140


def test_ack_delay_not_subtracted_below_min_rtt() -> None:
    rtt = RttEstimator()
    rtt.update(0.100, ack_delay=0.0, now=1.0)
    rtt.update(0.110, ack_delay=0.050, now=2.0)  # 0.110 - 0.050 < min_rtt: use 0.110
    assert rtt.smoothed == pytest.approx(0.875 * 0.100 + 0.125 * 0.110)
    assert rtt.rttvar == pytest.approx(0.75 * 0.050 + 0.25 * 0.010)


def test_min_rtt_is_raw_sample() -> None:
    rtt = RttEstimator()
    rtt.update(0.100, ack_delay=0.0, now=1.0)
    rtt.update(0.090, ack_delay=0.030, now=2.0)
    assert rtt.min_rtt == 0.090


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_non_positive_samples_ignored(bad: float) -> None:
    rtt = RttEstimator()
    rtt.update(bad, ack_delay=0.0, now=1.0)
    assert not rtt.has_sample
    rtt.update(0.2, ack_delay=0.0, now=1.0)
    rtt.update(bad, ack_delay=0.0, now=2.0)
    assert rtt.latest == 0.2
    assert rtt.smoothed == 0.2


def test_loss_delay() -> None:
    rtt = RttEstimator()
    rtt.update(0.200, ack_delay=0.0, now=1.0)
    rtt.update(0.400, ack_delay=0.0, now=2.0)
    assert rtt.loss_delay() == pytest.approx(TIME_THRESHOLD * 0.400)  # latest > smoothed
    tiny = RttEstimator(initial_rtt=1e-6)
    tiny.update(1e-6, ack_delay=0.0, now=0.0)
    assert tiny.loss_delay() == GRANULARITY


def test_pto_uses_granularity_floor() -> None:
    rtt = RttEstimator()
    for i in range(200):
        rtt.update(0.05, ack_delay=0.0, now=float(i))
    assert rtt.rttvar < GRANULARITY / 4
    assert rtt.pto(max_ack_delay=0.0) == pytest.approx(rtt.smoothed + GRANULARITY)


def test_windowed_min_expires_so_route_change_upward_is_seen() -> None:
    rtt = RttEstimator(min_rtt_window=10.0)
    rtt.update(0.050, ack_delay=0.0, now=0.0)
    for i in range(1, 200):
        rtt.update(0.300, ack_delay=0.0, now=i * 0.1)
        if i * 0.1 < 10.0:
            assert rtt.windowed_min_rtt == 0.050
    assert rtt.windowed_min_rtt == 0.300
    assert rtt.min_rtt == 0.050  # the all-time minimum is kept for ACK-delay checks


def test_windowed_min_tracks_decreasing_then_increasing() -> None:
    rtt = RttEstimator(min_rtt_window=1.0)
    samples = [(0.0, 0.5), (0.2, 0.4), (0.4, 0.6), (0.6, 0.45), (1.3, 0.7), (1.7, 0.8)]
    for now, sample in samples:
        rtt.update(sample, ack_delay=0.0, now=now)
    # At 1.7 the window is [0.7, 1.7]: samples 0.7 and 0.8 remain.
    assert rtt.windowed_min_rtt == 0.7


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=0.5), st.floats(min_value=0.001, max_value=2.0)
        ),
        min_size=1,
        max_size=200,
    )
)
def test_windowed_min_matches_brute_force(steps: list[tuple[float, float]]) -> None:
    window = 3.0
    rtt = RttEstimator(min_rtt_window=window)
    now = 0.0
    history: list[tuple[float, float]] = []
    for dt, sample in steps:
        now += dt
        rtt.update(sample, ack_delay=0.0, now=now)
        history.append((now, sample))
        exact = min(s for t, s in history if t >= now - window)
        # Coalescing within window/64 may forget a sample at most window/64 early, and
        # may keep a smaller one at most that much longer; never beyond.
        slack = window / 64
        loose_low = min(s for t, s in history if t >= now - window - slack)
        loose_high = (
            min(s for t, s in history if t >= now - window + slack)
            if any(t >= now - window + slack for t, _ in history)
            else exact
        )
        assert loose_low <= rtt.windowed_min_rtt <= max(exact, loose_high)
        assert rtt.min_rtt == min(s for _, s in history)
        assert rtt.min_rtt <= rtt.windowed_min_rtt
    assert len(rtt._wmin) <= 66  # bounded memory


def test_backoff() -> None:
    assert backoff(1.0, 0, cap=60.0) == 1.0
    assert backoff(1.0, 3, cap=60.0) == 8.0
    assert backoff(1.0, 6, cap=60.0) == 60.0
    assert backoff(0.3, 10_000, cap=60.0) == 60.0
    assert backoff(100.0, 0, cap=60.0) == 60.0
    with pytest.raises(ValueError):
        backoff(1.0, -1, cap=60.0)


@settings(max_examples=200, deadline=None)
@given(
    st.floats(min_value=1e-6, max_value=100.0),
    st.integers(min_value=0, max_value=100_000),
    st.floats(min_value=1e-3, max_value=1e6),
)
def test_backoff_monotone_and_capped(base: float, count: int, cap: float) -> None:
    value = backoff(base, count, cap=cap)
    assert value <= cap
    assert math.isfinite(value)
    assert value >= min(base, cap)
    assert backoff(base, count + 1, cap=cap) >= value

"""The numbers and formulas of the client's transport rules (docs/ARCHITECTURE.md §8).

Pure functions of the session statistics (:class:`SessionView`); the state machine
that applies them is :mod:`resip_proxy.transport_policy`. Every constant was tuned by a
lab test (``tests/lab``: UDP blocked mid-download -> TCP within 5 s, address changes,
bouncing, UDP restored -> back to UDP, server restart -> new session).
"""

from __future__ import annotations

from .transport_events import SessionView, Via

__all__ = ["probe_wait", "race_grace", "recheck_in"]

#: UDP silent this long while data waits: look for another way (seconds). With a
#: 0.75-second probe and a fresh socket racing TCP this moves a blocked session to the
#: fallback in about 2.5 s, inside the 5 s promise even on a loaded machine.
UDP_SILENCE = 1.5
#: The UDP patience never exceeds this, however lossy the link.
UDP_SILENCE_CAP = 10.0
#: Loss above this does not stretch the patience further (1 / (1 - 0.85) ~ 6.7x).
LOSS_STRETCH_CAP = 0.85
#: How long a probe (same socket, then a fresh one) gets to be answered, at least.
PROBE_WAIT_MIN = 0.75
#: In the race, UDP keeps at least this long (or 3 RTT) once TCP is connected, so a
#: working UDP path is not given up for a TCP handshake that merely finished first.
RACE_GRACE_MIN = 0.3
#: The TCP fallback silent this long while data waits: its connection is probably dead
#: (our address changed); TCP's own retransmissions may take this long on a bad link.
TCP_SILENCE = 5.0
#: How long a TCP fallback connection may take to be established.
TCP_CONNECT_TIMEOUT = 10.0
#: A channel active this shortly before the path went quiet makes silence suspicious (a
#: download's client sends little of its own, so bytes in flight alone miss it).
BUSY_WINDOW = 5.0
#: Healthy states look at the statistics at least this often: they change without any
#: input, and the time to notice a blocked port adds straight to the time to fall back.
RECHECK_MAX = 1.0
#: ... and at most this often.
RECHECK_MIN = 0.02
#: First wait before re-creating a session again, and the cap of its doubling.
RECREATE_BACKOFF_FIRST = 1.0
RECREATE_BACKOFF_CAP = 30.0


def probe_wait(view: SessionView) -> float:
    """How long a probe gets to be answered: three round trips, at least 0.75 s."""
    return max(PROBE_WAIT_MIN, 3 * view.srtt)


def race_grace(view: SessionView) -> float:
    """How long UDP keeps its chance in the race once TCP is up (never over probe_wait)."""
    return max(RACE_GRACE_MIN, 3 * view.srtt)


def recheck_in(via: Via, heard: float | None, view: SessionView, now: float) -> float | None:
    """Seconds until ``via`` is worth looking at again; None: it is silent while data waits.

    The session declares an outage only after 10 s of silence (a lossy link has quiet
    spells); a blocked UDP port, or a TCP connection whose local address vanished (TCP
    would retry for minutes), should be left sooner than that.
    """
    if view.in_outage:
        return None
    if heard is None:
        return RECHECK_MAX
    if via is Via.UDP:
        # Quiet spells are normal on a lossy link: stretch the patience with the measured
        # loss, so 90 % loss is not mistaken for a blocked port; and never judge faster
        # than a few round trips (a slow or loaded path).
        patience = max(UDP_SILENCE, 4 * view.srtt)
        patience = min(UDP_SILENCE_CAP, patience / (1 - min(view.loss, LOSS_STRETCH_CAP)))
    else:
        # TCP hides loss behind its own retransmissions, which back off: allow those.
        patience = max(TCP_SILENCE, 8 * view.srtt)
    left = heard + patience - now
    if left > 0:
        return min(RECHECK_MAX, max(RECHECK_MIN, left))
    if view.bytes_in_flight > 0:
        return None
    # Receiving a download leaves nothing of ours in flight: a channel busy when the path
    # went quiet counts too. Idle channels (an ssh session waiting for a key) cause no
    # probes. The window is counted back from the last packet heard, not from now: TCP's
    # patience (>= 5 s) is as long as the window, and a download stalled on a dead
    # connection would never count (the simulator found it).
    return None if heard - view.last_activity < BUSY_WINDOW else RECHECK_MAX

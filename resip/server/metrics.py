"""Prometheus text-format metrics of the server (``GET /metrics``), written by hand.

Contract:

- :class:`ServerMetrics` keeps the totals of sessions that have ended
  (:meth:`ServerMetrics.retire`), so counters never go backwards when a session goes
  away; live sessions are added at scrape time.
- :func:`render_metrics` returns the exposition text (format 0.0.4): for every family a
  ``# HELP`` and ``# TYPE`` line, then ``name{labels} value`` lines. Families:

  ========================================  =======  ===========================================
  ``resip_sessions``                        gauge    live sessions
  ``resip_channels``                        gauge    open channels over all live sessions
  ``resip_bytes_total{direction}``          counter  packet bytes, ``sent`` / ``received``
  ``resip_retransmissions_total``           counter  records retransmitted
  ``resip_invalid_packets_total``           counter  dropped: failed authentication in a
                                                     session, or unroutable at the endpoint
  ``resip_address_changes_total``           counter  client address changes (roaming)
  ``resip_outages_total``                   counter  outages the server saw
  ========================================  =======  ===========================================

No label value comes from the network, so no escaping is needed beyond the fixed set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from resip.core.session import SessionStats
from resip.server.endpoint import EndpointStats

__all__ = ["CONTENT_TYPE", "ServerMetrics", "render_metrics"]

#: The Content-Type Prometheus expects for the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class ServerMetrics:
    """Counter totals of sessions that have ended."""

    bytes_sent: int = 0
    bytes_received: int = 0
    retransmissions: int = 0
    invalid_packets: int = 0
    address_changes: int = 0
    outages: int = 0

    def retire(self, stats: SessionStats) -> None:
        """Fold an ending session's counters into the totals (call once per session)."""
        self.bytes_sent += stats.bytes_sent
        self.bytes_received += stats.bytes_received
        self.retransmissions += stats.retransmissions
        self.invalid_packets += stats.invalid_dropped
        self.address_changes += stats.path_changes
        self.outages += stats.outages


def render_metrics(
    retired: ServerMetrics, live: Iterable[SessionStats], endpoint: EndpointStats
) -> str:
    """The exposition text for the retired totals plus the ``live`` sessions."""
    total = replace(retired)
    sessions = channels = 0
    for stats in live:
        sessions += 1
        channels += len(stats.channels)
        total.retire(stats)
    total.invalid_packets += endpoint.dropped
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, int]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    family("resip_sessions", "gauge", "Live sessions.", [("", sessions)])
    family("resip_channels", "gauge", "Open channels over all live sessions.", [("", channels)])
    family(
        "resip_bytes_total",
        "counter",
        "Packet bytes sent to and received from clients.",
        [
            ('{direction="sent"}', total.bytes_sent),
            ('{direction="received"}', total.bytes_received),
        ],
    )
    family(
        "resip_retransmissions_total",
        "counter",
        "Records retransmitted.",
        [("", total.retransmissions)],
    )
    family(
        "resip_invalid_packets_total",
        "counter",
        "Packets dropped as unauthentic, malformed or for no known session.",
        [("", total.invalid_packets)],
    )
    family(
        "resip_address_changes_total",
        "counter",
        "Client address changes (roaming).",
        [("", total.address_changes)],
    )
    family("resip_outages_total", "counter", "Outages seen by sessions.", [("", total.outages)])
    return "\n".join(lines) + "\n"

"""Server administration: ``GET /v1/admin/status``, ``GET /metrics`` and their client.

Contract:

- :func:`add_admin_routes` adds both routes to the session API application. Each needs
  ``Authorization: Bearer ADMIN_KEY`` (constant-time compare; the ordinary API key is
  not enough), except that a request from a loopback address (127.0.0.0/8, ::1) is let
  in without a key while ``loopback_exempt`` is true (the default; operators on the
  host). Wrong keys count against the API's :class:`~resip.server.http_api.FailureLimiter`.
- ``/v1/admin/status`` is the JSON document of :func:`admin_snapshot` (documented in
  docs/STATUS.md); ``/metrics`` is Prometheus text (:mod:`resip.server.metrics`).
- :func:`fetch_admin_status` reads the endpoint with the certificate pinned and raises
  :class:`AdminError` (one line) on any failure; ``resip-server status`` draws the
  document with :mod:`resip.ui.server_view`.
- Neither document holds keys or session secrets.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import time
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from resip import __version__
from resip.core.channel_table import ChannelStats
from resip.core.errors import ResipError
from resip.core.paths import TcpPath, UdpPath
from resip.core.session import Session
from resip.server.endpoint import Endpoint
from resip.server.http_api import FailureLimiter
from resip.server.metrics import CONTENT_TYPE, ServerMetrics, render_metrics

__all__ = [
    "AdminError",
    "AdminSource",
    "add_admin_routes",
    "admin_snapshot",
    "fetch_admin_status",
]

SCHEMA_VERSION = 1


class AdminError(ResipError):
    """The admin endpoint could not be read; the message is one line."""


class AdminSource(Protocol):
    """What the admin routes need from the server."""

    @property
    def server_start(self) -> str:
        """The restart token of the session API."""
        ...

    @property
    def endpoint(self) -> Endpoint[Any]:
        """The session registry."""
        ...

    @property
    def metrics(self) -> ServerMetrics:
        """Totals of ended sessions."""
        ...


def _path_text(path: object) -> tuple[str, str]:
    """``(transport, address)`` of a session path, as the status document shows it."""
    if isinstance(path, UdpPath):
        return "udp", str(path)
    if isinstance(path, TcpPath):
        return "tcp", path.peer or str(path)
    if path is None:
        return "-", "-"
    return "?", str(path)


def _live_sessions(source: AdminSource) -> list[Session]:
    return [s for s in source.endpoint.sessions() if not s.terminated]


def _channel_doc(ch: ChannelStats, now: float) -> dict[str, Any]:
    return {
        "id": ch.channel_id,
        "kind": ch.proto,
        "target": ch.target,
        "state": ch.state,
        "bytes_sent": ch.bytes_sent,
        "bytes_received": ch.bytes_received,
        "in_flight": ch.in_flight,
        "age_s": round(max(0.0, now - ch.opened_at), 3),
        "idle_s": round(max(0.0, now - ch.last_activity), 3),
    }


def admin_snapshot(source: AdminSource, *, now: float, uptime: float) -> dict[str, Any]:
    """The ``/v1/admin/status`` document. ``now`` is the sessions' clock (loop time)."""
    sessions = []
    for session in _live_sessions(source):
        stats = session.stats(now=now)
        transport, address = _path_text(session.peer)
        last = stats.last_received_at
        sessions.append(
            {
                "id": stats.session_id,
                "client_addresses": [address],
                "transport": transport,
                "state": stats.state,
                "address_changes": stats.path_changes,
                "rtt_ms": {
                    "smoothed": round(stats.rtt_smoothed * 1000, 3),
                    "min": round(stats.rtt_min * 1000, 3),
                },
                "loss": round(stats.loss_estimate, 6),
                "loss_in": round(stats.receive_loss, 6),
                "last_packet_age_s": None if last is None else round(max(0.0, now - last), 3),
                "bytes": {"sent": stats.bytes_sent, "received": stats.bytes_received},
                "packets": {"sent": stats.packets_sent, "received": stats.packets_received},
                "retransmissions": stats.retransmissions,
                "outages": stats.outages,
                "channels": [_channel_doc(ch, now) for ch in stats.channels],
            }
        )
    endpoint = source.endpoint.stats
    return {
        "version": SCHEMA_VERSION,
        "resip_version": __version__,
        "server_start": source.server_start,
        "uptime_s": round(uptime, 3),
        "sessions": sessions,
        "dropped_packets": {
            "malformed": endpoint.malformed,
            "unknown_session": endpoint.unknown_session,
            "wrong_direction": endpoint.wrong_direction,
        },
    }


def _is_loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def add_admin_routes(
    app: web.Application,
    source: AdminSource,
    *,
    admin_key: str,
    loopback_exempt: bool = True,
    limiter: FailureLimiter | None = None,
) -> None:
    """Add ``GET /v1/admin/status`` and ``GET /metrics`` to ``app`` (before it starts)."""
    key = admin_key.encode()
    failures = limiter if limiter is not None else FailureLimiter()
    started = time.monotonic()

    def denied(request: web.Request) -> web.Response | None:
        if loopback_exempt and _is_loopback(request.remote):
            return None
        source_ip = request.remote or "unknown"
        wait = failures.retry_after(source_ip)
        if wait is not None:
            return web.json_response(
                {"error": "too many failed authentications from this address; try again later"},
                status=429,
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip().encode("utf-8", "surrogateescape")
        if key and scheme.lower() == "bearer" and hmac.compare_digest(given, key):
            return None
        failures.failed(source_ip)
        return web.json_response(
            {"error": "admin endpoints need 'Authorization: Bearer ADMIN_KEY'"},
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def status(request: web.Request) -> web.Response:
        if (refusal := denied(request)) is not None:
            return refusal
        now = asyncio.get_running_loop().time()
        doc = admin_snapshot(source, now=now, uptime=time.monotonic() - started)
        return web.json_response(doc)

    async def metrics(request: web.Request) -> web.Response:
        if (refusal := denied(request)) is not None:
            return refusal
        now = asyncio.get_running_loop().time()
        live = [s.stats(now=now) for s in _live_sessions(source)]
        text = render_metrics(source.metrics, live, source.endpoint.stats)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/v1/admin/status", status)
    app.router.add_get("/metrics", metrics)


# -- reading and showing it (resip-server status) ----------------------------------------------


async def fetch_admin_status(
    url: str,
    *,
    admin_key: str,
    fingerprint: str,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """``GET url`` (the admin status) with the server certificate pinned to ``fingerprint``."""
    pin = aiohttp.Fingerprint(bytes.fromhex(fingerprint))
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
            http.get(url, headers=headers, ssl=pin) as resp,
        ):
            if resp.status != 200:
                raise AdminError(f"{url} answered HTTP {resp.status}")
            doc = await resp.json(content_type=None)
    except aiohttp.ServerFingerprintMismatch:
        raise AdminError(f"{url}: the server certificate is not the configured one") from None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise AdminError(f"cannot reach the server at {url}: {exc or type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise AdminError(f"{url} answered with something other than a JSON object")
    return doc

"""Server administration: ``GET /v1/admin/status``, ``GET /metrics`` and the status view.

Contract:

- :func:`add_admin_routes` adds both routes to the session API application. Each needs
  ``Authorization: Bearer ADMIN_KEY`` (constant-time compare; the ordinary API key is
  not enough), except that a request from a loopback address (127.0.0.0/8, ::1) is let
  in without a key while ``loopback_exempt`` is true (the default; operators on the
  host). Wrong keys count against the API's :class:`~resip.server.http_api.FailureLimiter`.
- ``/v1/admin/status`` is the JSON document of :func:`admin_snapshot` (documented in
  docs/STATUS.md); ``/metrics`` is Prometheus text (:mod:`resip.server.metrics`).
- :func:`render_admin` is a pure function snapshot -> rich renderable for
  ``resip-server status``; :func:`fetch_admin_status` reads the endpoint with the
  certificate pinned and raises :class:`AdminError` (one line) on any failure.
- Neither document holds keys or session secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from resip import __version__
from resip.errors import ResipError
from resip.server.endpoint import Endpoint
from resip.server.http_api import FailureLimiter
from resip.server.metrics import CONTENT_TYPE, ServerMetrics, render_metrics
from resip.session import Session
from resip.terminal import watch_quit_key

__all__ = [
    "AdminError",
    "AdminSource",
    "add_admin_routes",
    "admin_snapshot",
    "fetch_admin_status",
    "render_admin",
    "run_admin_live",
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
    def endpoint(self) -> Endpoint:
        """The session registry."""
        ...

    @property
    def metrics(self) -> ServerMetrics:
        """Totals of ended sessions."""
        ...


def _path_text(path: object) -> tuple[str, str]:
    """``(transport, address)`` of a session path (UDP address tuple or TCP fallback)."""
    if isinstance(path, tuple) and len(path) >= 2:
        host = str(path[0])
        return "udp", f"[{host}]:{path[1]}" if ":" in host else f"{host}:{path[1]}"
    if path is None:
        return "-", "-"
    text = str(path)
    peer = getattr(path, "peer", "")
    if text.startswith("tcp#"):
        return "tcp", str(peer) or text
    return "?", text


def _live_sessions(source: AdminSource) -> list[Session]:
    return [s for s in source.endpoint.sessions() if not s.terminated]


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
                "retransmissions": stats.retransmissions,
                "outages": stats.outages,
                "channels": [
                    {
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
                    for ch in stats.channels
                ],
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


def _bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def render_admin(
    snapshot: Mapping[str, Any], *, height: int = 40, error: str | None = None
) -> RenderableType:
    """One frame of ``resip-server status``: totals, sessions, busiest channels."""
    sessions: Sequence[Mapping[str, Any]] = snapshot.get("sessions") or []
    channels = [(s, ch) for s in sessions for ch in s["channels"]]
    sent = sum(int(s["bytes"]["sent"]) for s in sessions)
    received = sum(int(s["bytes"]["received"]) for s in sessions)
    header = Text(
        f"{len(sessions):,} sessions, {len(channels):,} channels, "
        f"sent {_bytes(sent)}, received {_bytes(received)}, "
        f"up {float(snapshot.get('uptime_s', 0)):.0f} s"
    )
    body: RenderableType = header
    if error:
        body = Group(header, Text(error, style="bold red"))
    room = max(2, height - 16)
    session_rows = max(1, room // 2)
    table = Table(title="sessions", expand=True, show_edge=False)
    for name in ("id", "client", "transport", "state", "RTT ms", "loss", "sent", "recv", "chans"):
        table.add_column(name, no_wrap=True, overflow="ellipsis")
    ordered = sorted(sessions, key=lambda s: float(s["last_packet_age_s"] or math.inf))
    for s in ordered[:session_rows]:
        table.add_row(
            str(s["id"]),
            Text(", ".join(s["client_addresses"])),
            str(s["transport"]),
            str(s["state"]),
            f"{float(s['rtt_ms']['smoothed']):.1f}",
            f"{float(s['loss']):.1%}",
            _bytes(s["bytes"]["sent"]),
            _bytes(s["bytes"]["received"]),
            str(len(s["channels"])),
        )
    table.caption = f"{min(len(sessions), session_rows):,} of {len(sessions):,} sessions shown"
    chans = Table(title="channels (most recently active)", expand=True, show_edge=False)
    for name in ("session", "id", "kind", "target", "state", "sent", "recv", "idle"):
        chans.add_column(name, no_wrap=True, overflow="ellipsis")
    busiest = sorted(channels, key=lambda p: float(p[1]["idle_s"]))[: room - session_rows]
    for s, ch in busiest:
        chans.add_row(
            str(s["id"]),
            str(ch["id"]),
            str(ch["kind"]),
            Text(str(ch["target"])),
            str(ch["state"]),
            _bytes(ch["bytes_sent"]),
            _bytes(ch["bytes_received"]),
            f"{float(ch['idle_s']):.1f}s",
        )
    chans.caption = f"{len(busiest):,} of {len(channels):,} channels shown"
    title = f"resip-server {snapshot.get('resip_version', '')}".strip()
    return Group(Panel(body, title=title), table, chans)


async def run_admin_live(
    fetch: Callable[[], Any], console: Console, *, interval: float = 0.25
) -> None:
    """Redraw :func:`render_admin` 4 times a second until ``q``; ``fetch`` is awaited."""
    snapshot = await fetch()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    restore = watch_quit_key(loop, stop)
    try:
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while not stop.is_set():
                error = None
                try:
                    snapshot = await fetch()
                except AdminError as exc:
                    error = str(exc)
                live.update(
                    render_admin(snapshot, height=console.size.height, error=error), refresh=True
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        restore()

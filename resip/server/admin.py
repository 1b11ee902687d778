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
  ``resip-server status`` that fits the terminal as the client's view does
  (:mod:`resip.terminal`); :func:`fetch_admin_status` reads the endpoint with the
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
from rich.text import Text

from resip import __version__
from resip.channel_table import ChannelStats
from resip.errors import ResipError
from resip.paths import TcpPath, UdpPath
from resip.server.endpoint import Endpoint
from resip.server.http_api import FailureLimiter
from resip.server.metrics import CONTENT_TYPE, ServerMetrics, render_metrics
from resip.session import Session
from resip.terminal import (
    ALWAYS,
    Column,
    Field,
    by_relevance,
    channel_rank,
    fit_table,
    more_text,
    pack_fields,
    watch_quit_key,
)

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


def _bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


_SESSION_COLUMNS: tuple[Column, ...] = (
    Column("id", 90, min_width=8, shrink_keep=45),
    Column("client", 80, min_width=12, shrink_keep=35),
    Column("transport", 10),
    Column("state", ALWAYS),
    Column("RTT ms", 60, "right"),
    # Measured: the share of the client's packets that never arrived.
    Column("loss in", 50, "right"),
    # Records the server sent again (spurious ones included): not loss.
    Column("retx", 40, "right"),
    Column("sent", 70, "right"),
    Column("recv", 70, "right"),
    Column("chans", 30, "right"),
)
_CHANNEL_COLUMNS: tuple[Column, ...] = (
    Column("session", 50, min_width=8, shrink_keep=40),
    Column("id", 60, "right"),
    Column("kind", 20),
    Column("target", 90, min_width=12, shrink_keep=45),
    Column("state", ALWAYS),
    Column("sent", 70, "right"),
    Column("recv", 70, "right"),
    Column("idle", 65, "right"),
)


def _session_rank(session: Mapping[str, Any]) -> tuple[bool, float]:
    """Connected sessions first, then by how recently the client was heard from."""
    age = session.get("last_packet_age_s")
    return (session["state"] != "connected", math.inf if age is None else float(age))


def _session_cells(s: Mapping[str, Any]) -> dict[str, RenderableType]:
    return {
        "id": str(s["id"]),
        "client": Text(", ".join(s["client_addresses"])),
        "transport": str(s["transport"]),
        "state": str(s["state"]),
        "RTT ms": f"{float(s['rtt_ms']['smoothed']):.1f}",
        "loss in": f"{float(s.get('loss_in', 0.0)):.1%}",
        "retx": f"{int(s['retransmissions']):,}",
        "sent": _bytes(s["bytes"]["sent"]),
        "recv": _bytes(s["bytes"]["received"]),
        "chans": str(len(s["channels"])),
    }


def _channel_cells(session: Mapping[str, Any], ch: Mapping[str, Any]) -> dict[str, RenderableType]:
    return {
        "session": str(session["id"]),
        "id": str(ch["id"]),
        "kind": str(ch["kind"]),
        "target": Text(str(ch["target"])),
        "state": str(ch["state"]),
        "sent": _bytes(ch["bytes_sent"]),
        "recv": _bytes(ch["bytes_received"]),
        "idle": f"{float(ch['idle_s']):.1f}s",
    }


def _totals(snapshot: Mapping[str, Any], width: int, error: str | None) -> Panel:
    sessions: Sequence[Mapping[str, Any]] = snapshot.get("sessions") or []
    channels = [ch for s in sessions for ch in s["channels"]]
    dropped = snapshot.get("dropped_packets") or {}
    fields = [
        Field(f"{len(sessions):,} sessions, {len(channels):,} channels", ALWAYS),
        Field(f"{sum(1 for ch in channels if channel_rank(ch) == 0):,} active", 80),
        Field(f"sent {_bytes(sum(int(s['bytes']['sent']) for s in sessions))}", 70),
        Field(f"received {_bytes(sum(int(s['bytes']['received']) for s in sessions))}", 70),
        Field(f"up {float(snapshot.get('uptime_s', 0)):.0f} s", 60),
        Field(f"dropped packets {sum(int(n) for n in dropped.values()):,}", 50),
    ]
    lines = pack_fields(fields, width - 4, 2)  # inside the panel's borders and padding
    if error:
        lines.append(Text(error, style="bold red", no_wrap=True, overflow="ellipsis"))
    title = f"resip-server {snapshot.get('resip_version', '')}".strip()
    return Panel(Group(*lines), title=title)


def render_admin(
    snapshot: Mapping[str, Any], *, height: int = 40, width: int = 120, error: str | None = None
) -> RenderableType:
    """One frame of ``resip-server status`` for a ``height`` x ``width`` terminal.

    Totals, then sessions (connected first) and channels (active, then idle, then
    closing), each cut to the rows that fit with a ``+N more`` line.
    """
    sessions: Sequence[Mapping[str, Any]] = snapshot.get("sessions") or []
    ordered = sorted(sessions, key=_session_rank)
    # Totals panel (4 lines), then per table its title, column names, rule and last line.
    room = max(2, height - 4 - 2 * 4 - (1 if error else 0))
    session_rows = min(len(ordered), max(1, room // 3))
    shown = ordered[:session_rows]
    table = fit_table(_SESSION_COLUMNS, [_session_cells(s) for s in shown], width, title="sessions")
    hidden = len(ordered) - len(shown)
    session_line = f"+{hidden:,} more" if hidden else f"{len(shown):,} shown"
    pairs = [(s, ch) for s in sessions for ch in s["channels"]]
    pairs.sort(key=lambda pair: by_relevance(pair[1]))
    rows = pairs[: max(1, room - session_rows)]
    chans = fit_table(
        _CHANNEL_COLUMNS,
        [_channel_cells(s, ch) for s, ch in rows],
        width,
        title="channels (active first)",
    )
    channel_line = more_text([ch for _, ch in pairs[len(rows) :]]) or f"{len(rows):,} shown"
    return Group(
        _totals(snapshot, width, error),
        table,
        Text(session_line, no_wrap=True, overflow="ellipsis"),
        chans,
        Text(channel_line, no_wrap=True, overflow="ellipsis"),
    )


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
                size = console.size
                frame = render_admin(snapshot, height=size.height, width=size.width, error=error)
                live.update(frame, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        restore()

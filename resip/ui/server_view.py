"""The server's status view: an admin snapshot drawn as one rich frame, and the live loop.

:func:`render_admin` is a pure function (snapshot -> renderable) so tests can check
frames at any size; :func:`run_admin_live` redraws it until the user presses ``q``.
The snapshot itself is built by :func:`resip.server.admin.admin_snapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from resip.core.errors import ResipError
from resip.ui.terminal import (
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

__all__ = ["render_admin", "run_admin_live"]


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
                except ResipError as exc:  # AdminError: the server did not answer
                    error = str(exc)
                size = console.size
                frame = render_admin(snapshot, height=size.height, width=size.width, error=error)
                live.update(frame, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        restore()

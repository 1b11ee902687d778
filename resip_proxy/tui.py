"""Rendering of the client status document (docs/STATUS.md) for ``resip-proxy status``.

Contract
--------
- :func:`render_status` is a pure function: status snapshot (+ rate history, height)
  -> rich renderable. Nothing here does I/O, so tests render it with
  ``Console(record=True, width=...)`` and assert on the text.
- The view: a header panel (state, server, transport, RTT, measured loss,
  retransmissions, rates), throughput sparklines (unicode blocks), the channel table
  (active, then idle, then closing; :func:`resip.ui.terminal.by_relevance`) cut to the rows
  that fit ``height`` with a ``+N more`` and totals line, and the newest events. It fits
  ``width`` x ``height`` (80x24 included): header items and cells never wrap, the least
  important are left out first, the state never. Text from the network (targets,
  reasons) is never parsed as markup.
- :class:`RateHistory` turns successive snapshots into up/down byte rates for the
  sparklines (the only stateful helper; it is fed by the caller).
- Cost is linear in the number of channels with one sort: a 10,000-channel frame
  renders in well under a second.
- :func:`run_live` is the only I/O here: it polls the control socket 4 times a second
  and redraws with ``rich.live.Live`` (alternate screen; rich follows resizes). ``q``
  quits; stdin is read in cbreak mode when it is a terminal and restored afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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

__all__ = [
    "RateHistory",
    "format_bytes",
    "format_rate",
    "render_status",
    "run_live",
    "sparkline",
]

_BLOCKS = " ▁▂▃▄▅▆▇█"
#: Lines of the sparkline panel (4) and the channel table's title, column names, rule
#: and "+N more" line (4): all but the header, the channel rows and the events.
_FIXED_LINES = 8
_HEADER_LINES = 4
_EVENT_LINES = 6
_MAX_CHANNEL_ROWS = 50
_STATE_STYLES = {
    "connected": "bold green",
    "roaming": "bold cyan",
    "tcp-fallback": "bold yellow",
    "connecting": "bold blue",
    "outage": "bold red",
}


def format_bytes(n: float) -> str:
    """``1.5 MiB`` style."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def format_rate(bps: float) -> str:
    """Bits per second as ``12.3 Mbit/s``."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} bit/s"


def sparkline(values: Sequence[float], width: int) -> str:
    """The last ``width`` values as unicode blocks, scaled to their maximum."""
    tail = list(values)[-width:] if width > 0 else []
    top = max(tail, default=0.0)
    if top <= 0:
        return " " * len(tail)
    return "".join(_BLOCKS[min(8, max(0, round(v / top * 8)))] for v in tail)


class RateHistory:
    """Up/down rates (bit/s) derived from successive snapshots' byte counters."""

    def __init__(self, size: int = 120) -> None:
        self.up: deque[float] = deque(maxlen=size)
        self.down: deque[float] = deque(maxlen=size)
        self._last: tuple[float, int, int, str] | None = None

    def add(self, snapshot: Mapping[str, Any]) -> None:
        """Feed one snapshot (its ``uptime_s`` is the clock)."""
        session = snapshot.get("session")
        if not isinstance(session, Mapping):
            return
        t = float(snapshot.get("uptime_s", 0.0))
        sent = int(session["bytes"]["sent"])
        received = int(session["bytes"]["received"])
        sid = str(session.get("session_id", ""))
        last = self._last
        self._last = (t, sent, received, sid)
        if last is None or last[3] != sid or t <= last[0]:
            return  # first sample, or a new session whose counters restarted
        dt = t - last[0]
        self.up.append(max(0, sent - last[1]) * 8 / dt)
        self.down.append(max(0, received - last[2]) * 8 / dt)


def _session_fields(session: Mapping[str, Any], history: RateHistory | None) -> list[Field]:
    """The header's items in reading order; ``keep`` says which go last on a narrow terminal."""
    state = str(session["state"])
    rtt = session["rtt_ms"]
    up = history.up[-1] if history is not None and history.up else 0.0
    down = history.down[-1] if history is not None and history.down else 0.0
    age = session.get("last_packet_age_s")
    retx = int(session["retransmissions"])
    packets = int(session.get("packets", {}).get("sent", 0))
    # Retransmissions are what the sender did, not what the path lost (an ACK later than
    # the loss timer causes a spurious one), so they are never called loss.
    share = f" ({retx / packets:.1%} of packets)" if packets else ""
    return [
        Field(Text(state.upper(), style=_STATE_STYLES.get(state, "bold")), ALWAYS),
        Field(f"server {session['server']}", 90),
        Field(f"transport {str(session['transport']).upper()}", 80),
        Field(f"RTT {rtt['smoothed']:.1f} ms (min {rtt['min']:.1f})", 85),
        Field(f"up {format_rate(up)}", 75),
        Field(f"down {format_rate(down)}", 75),
        # The share of the server's packets that never arrived: measured, not estimated.
        Field(f"loss in {float(session.get('loss_in', 0.0)):.1%} (measured)", 70),
        Field(f"retransmitted {retx:,} records{share}", 65),
        Field(
            f"sent {format_bytes(session['bytes']['sent'])}  "
            f"received {format_bytes(session['bytes']['received'])}",
            60,
        ),
        Field("last packet " + ("never" if age is None else f"{float(age):.1f} s ago"), 55),
        Field(f"local {session.get('local_address') or '-'}", 45),
        Field(f"pacing {format_rate(session['send_rate_bps'])}", 40),
        Field(f"dup {session['duplicates']}", 35),
        Field(f"session {session['session_id']}", 30),
        Field(f"uptime {float(session['uptime_s']):.0f} s", 25),
        Field(f"key epoch {session['key_epoch']}", 20),
    ]


def _header(
    snapshot: Mapping[str, Any], history: RateHistory | None, error: str | None, width: int
) -> tuple[Panel, int]:
    """The header panel and its height in lines."""
    session = snapshot.get("session")
    if isinstance(session, Mapping):
        # Panel borders and padding take 4 cells.
        lines = pack_fields(_session_fields(session, history), width - 4, _HEADER_LINES)
    else:
        lines = [Text("no session yet", style="bold blue")]
    if error:
        lines.append(Text(error, style="bold red", no_wrap=True, overflow="ellipsis"))
    title = f"resip-proxy {snapshot.get('resip_version', '')}".strip()
    return Panel(Group(*lines), title=title), len(lines) + 2


def _sparklines(history: RateHistory | None, width: int) -> Panel:
    spark_width = max(10, width - 30)
    up = list(history.up) if history is not None else []
    down = list(history.down) if history is not None else []
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=4)
    grid.add_column(width=spark_width, no_wrap=True)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_row(
        "up", Text(sparkline(up, spark_width), style="green"), format_rate(max(up, default=0))
    )
    grid.add_row(
        "down", Text(sparkline(down, spark_width), style="cyan"), format_rate(max(down, default=0))
    )
    return Panel(grid, title="throughput (peak at right)")


_COLUMNS: tuple[Column, ...] = (
    # Narrow terminals drop the least important columns rather than truncate them all.
    Column("id", 58, "right"),
    Column("kind", 20),
    Column("local peer", 15, min_width=9),
    Column("target", 95, min_width=12, shrink_keep=55),
    Column("state", ALWAYS),
    Column("sent", 70, "right"),
    Column("received", 70, "right"),
    Column("in flight", 25, "right"),
    Column("retx", 30, "right"),
    Column("age", 10, "right"),
    Column("idle", 60, "right"),
)


def _cells(ch: Mapping[str, Any]) -> dict[str, RenderableType]:
    return {
        "id": str(ch["id"]),
        "kind": str(ch["kind"]),
        "local peer": Text(str(ch.get("local_peer") or "-")),
        "target": Text(str(ch["target"])),
        "state": str(ch["state"]),
        "sent": format_bytes(ch["bytes_sent"]),
        "received": format_bytes(ch["bytes_received"]),
        "in flight": format_bytes(ch["in_flight"]),
        "retx": str(ch["retransmissions"]),
        "age": f"{float(ch['age_s']):.0f}s",
        "idle": f"{float(ch['idle_s']):.1f}s",
    }


def _channels(channels: Sequence[Mapping[str, Any]], rows: int, width: int) -> Group:
    ordered = sorted(channels, key=by_relevance)
    rows = max(1, min(rows, _MAX_CHANNEL_ROWS))
    shown, hidden = ordered[:rows], ordered[rows:]
    active = sum(1 for ch in channels if channel_rank(ch) == 0)
    title = f"channels ({len(channels):,}, {active:,} active)"
    table = fit_table(_COLUMNS, [_cells(ch) for ch in shown], width, title=title)
    total_sent = sum(int(ch["bytes_sent"]) for ch in channels)
    total_received = sum(int(ch["bytes_received"]) for ch in channels)
    total_flight = sum(int(ch["in_flight"]) for ch in channels)
    fields = [
        Field(more_text(hidden) or f"{len(shown):,} shown", ALWAYS),
        Field(f"total sent {format_bytes(total_sent)}", 50),
        Field(f"received {format_bytes(total_received)}", 40),
        Field(f"in flight {format_bytes(total_flight)}", 30),
    ]
    return Group(table, *pack_fields(fields, width, 1))


def _events(events: Sequence[Mapping[str, Any]], now: float, lines: int) -> Panel:
    newest = list(events)[-lines:][::-1] if lines > 0 else []
    rows: list[Text] = []
    for event in newest:
        ago = max(0.0, now - float(event["t"]))
        # One line each (cut with an ellipsis): a wrapped event would push the frame
        # past the terminal's height.
        row = Text(no_wrap=True, overflow="ellipsis")
        row.append(f"{ago:7.1f}s ago ", style="dim")
        # A space after the padded kind: "channel-failed" is as long as the padding.
        row.append(f"{event['kind']:<14} ", style="bold")
        row.append(str(event["text"]))
        rows.append(row)
    if not rows:
        rows.append(Text("no events yet", style="dim"))
    return Panel(Group(*rows), title=f"events ({len(events)})")


def render_status(
    snapshot: Mapping[str, Any],
    *,
    history: RateHistory | None = None,
    height: int = 40,
    width: int = 120,
    error: str | None = None,
) -> RenderableType:
    """One frame of the status view for a terminal of ``height`` x ``width``.

    ``error`` (e.g. the proxy stopped answering) is shown in the header.
    """
    channels = snapshot.get("channels") or []
    events = snapshot.get("events") or []
    header, header_lines = _header(snapshot, history, error, width)
    # Fewer events on a short terminal; the channel rows take what is left.
    event_lines = min(_EVENT_LINES, max(1, (height - 18) // 2))  # 3 at 24 lines, 6 from 30
    rows = height - _FIXED_LINES - header_lines - 2 - event_lines
    return Group(
        header,
        _sparklines(history, width),
        _channels(channels, rows, width),
        _events(events, float(snapshot.get("uptime_s", 0.0)), event_lines),
    )


# -- the live loop (I/O) ---------------------------------------------------------------------


async def run_live(path: Path, console: Console, *, interval: float = 0.25) -> None:
    """Show the status of the proxy at ``path`` until ``q`` (or EOF on stdin, or Ctrl-C).

    Raises :class:`~resip_proxy.control.ControlError` if the first read fails; later
    failures are shown in the header while polling continues.
    """
    from .control import ControlError, fetch_status

    snapshot = await fetch_status(path)
    history = RateHistory()
    history.add(snapshot)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    restore = watch_quit_key(loop, stop)
    try:
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while not stop.is_set():
                error = None
                try:
                    snapshot = await fetch_status(path)
                    history.add(snapshot)
                except ControlError as exc:
                    error = str(exc)
                size = console.size
                frame = render_status(
                    snapshot, history=history, height=size.height, width=size.width, error=error
                )
                live.update(frame, refresh=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        restore()

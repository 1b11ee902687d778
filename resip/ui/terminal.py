"""Terminal helpers shared by the status views (``resip-proxy status``, ``resip-server status``).

- :func:`watch_quit_key`: ``q`` on a terminal stdin ends a live view.
- :func:`pack_fields` and :func:`fit_table` lay a frame out for the terminal's width
  without wrapping a field or a cell: the least important fields and columns are left
  out first, the state never.
- :func:`by_relevance` and :func:`more_text` order channels (active, then idle, then
  closing) and summarise the ones a frame has no room for.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from rich.console import RenderableType


def watch_quit_key(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> Callable[[], None]:
    """Watch a terminal stdin (cbreak mode) for ``q``; returns the undo function.

    ``stop`` is set when ``q`` (or end of input) arrives. Without a terminal this does
    nothing, so ``--once``/``--json`` and pipes behave.
    """
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return lambda: None
    if not os.isatty(fd):
        return lambda: None
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)  # keys arrive one by one, without echo; Ctrl-C still signals

    def on_key() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data or b"q" in data.lower():
            stop.set()

    loop.add_reader(fd, on_key)

    def restore() -> None:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


# -- layout helpers for frames that must fit the terminal (80x24 included) ---------------------

#: ``Field.keep`` / ``Column.keep`` of what is never dropped (the state).
ALWAYS = 1_000
#: A channel with activity this recent (or bytes in flight) counts as active.
ACTIVE_IDLE_S = 5.0
_SEPARATOR = "   "


@dataclass(frozen=True, slots=True)
class Field:
    """One header item, shown whole or not at all; lower ``keep`` is dropped first."""

    text: Text | str
    keep: int = 0


def _flow(fields: Sequence[Field], width: int) -> list[Text]:
    lines: list[Text] = []
    line: Text | None = None
    for field in fields:
        text = Text(field.text) if isinstance(field.text, str) else field.text
        if line is not None and line.cell_len + len(_SEPARATOR) + text.cell_len <= width:
            line.append(_SEPARATOR)
            line.append_text(text)
            continue
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append_text(text)
        lines.append(line)
    return lines


def pack_fields(fields: Sequence[Field], width: int, max_lines: int) -> list[Text]:
    """Lay ``fields`` out left to right in at most ``max_lines`` lines of ``width`` cells.

    A field never wraps in the middle (a header that wraps mid-field is unreadable):
    when they do not fit, the least important (lowest ``keep``, then the rightmost) go.
    """
    shown = list(fields)
    while True:
        lines = _flow(shown, width)
        if len(lines) <= max_lines or len(shown) <= 1:
            return lines
        drop = min(range(len(shown)), key=lambda i: (shown[i].keep, -i))
        if shown[drop].keep >= ALWAYS:
            return lines
        del shown[drop]


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; lower ``keep`` goes first when the table is too wide.

    ``min_width`` makes it shrinkable (down to that, with an ellipsis) when the columns
    below ``shrink_keep`` (default: ``keep``) are gone, so a long target gives way
    before the byte counters do, but after the columns that matter less.
    """

    name: str
    keep: int = 0
    justify: Literal["left", "right"] = "left"
    min_width: int | None = None
    shrink_keep: int | None = None


def _cell_width(cell: RenderableType) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return cell_len(str(cell))


def _fit_widths(
    columns: Sequence[Column], rows: Sequence[Mapping[str, RenderableType]], width: int
) -> dict[str, int]:
    """The columns that fit in ``width`` cells, with their widths (table order)."""
    widths = {
        c.name: max([cell_len(c.name), *(_cell_width(row[c.name]) for row in rows)])
        for c in columns
    }
    # Every gap between columns costs 3 cells: padding, a rule, padding.
    excess = sum(widths.values()) + 3 * (len(columns) - 1) - width
    steps: list[tuple[int, int, int, Column]] = []  # (level, shrink before drop, -index, col)
    for i, c in enumerate(columns):
        if c.min_width is not None:
            steps.append((c.keep if c.shrink_keep is None else c.shrink_keep, 0, -i, c))
        if c.keep < ALWAYS:
            steps.append((c.keep, 1, -i, c))
    for _, drop, _, c in sorted(steps, key=lambda step: step[:3]):
        if excess <= 0:
            break
        if c.name not in widths:
            continue
        if drop:
            excess -= widths.pop(c.name) + 3
        elif c.min_width is not None and widths[c.name] > c.min_width:
            cut = min(excess, widths[c.name] - c.min_width)
            widths[c.name] -= cut
            excess -= cut
    return widths


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, RenderableType]],
    width: int,
    *,
    title: str | None = None,
) -> Table:
    """A table of ``rows`` (column name -> cell) no wider than ``width``.

    Columns are dropped least important first rather than all truncated: the state
    column (``keep=ALWAYS``) stays whatever the width.
    """
    widths = _fit_widths(columns, rows, width)
    table = Table(title=title, expand=True, show_edge=False, pad_edge=False)
    shown = [c for c in columns if c.name in widths]
    for c in shown:
        table.add_column(
            c.name, justify=c.justify, width=widths[c.name], no_wrap=True, overflow="ellipsis"
        )
    for row in rows:
        table.add_row(*(row[c.name] for c in shown))
    return table


def channel_rank(channel: Mapping[str, Any]) -> int:
    """0: active (recent activity or bytes in flight), 1: open but idle, 2: closing.

    Half-closed and closing channels that stay idle are finished or stuck: they go last so
    they never push the channels that move data out of the view.
    """
    if float(channel["idle_s"]) < ACTIVE_IDLE_S or int(channel.get("in_flight", 0)) > 0:
        return 0
    return 1 if channel["state"] in ("opening", "open") else 2


def by_relevance(channel: Mapping[str, Any]) -> tuple[int, float, int]:
    """Sort key: active first, then idle, then closing; most recent, then busiest, first."""
    moved = int(channel["bytes_sent"]) + int(channel["bytes_received"])
    return (channel_rank(channel), float(channel["idle_s"]), -moved)


def more_text(hidden: Sequence[Mapping[str, Any]]) -> str:
    """``+N more (a active, b idle, c closing)`` for channels left out of a view, or ``""``."""
    if not hidden:
        return ""
    counts = dict.fromkeys(("active", "idle", "closing"), 0)
    names = list(counts)
    for channel in hidden:
        counts[names[channel_rank(channel)]] += 1
    parts = [f"{n:,} {name}" for name, n in counts.items() if n]
    return f"+{len(hidden):,} more ({', '.join(parts)})"

"""Terminal helpers shared by the live status views (client and server)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable


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

"""``resip-proxy status`` in a real terminal (tmux): it redraws while data moves, q quits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from .conftest import Stack

TMUX = "/usr/bin/tmux"

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(
        not os.path.exists(TMUX), reason=f"{TMUX} is not installed: no real terminal to test in"
    ),
]

SENT = re.compile(r"sent ([0-9.]+ [KMGT]?i?B)\s+received ([0-9.]+ [KMGT]?i?B)")


def read(path: Path) -> str:
    """A small local file's text, or "" while it does not exist."""
    return path.read_text() if path.exists() else ""


async def tmux(sock: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        TMUX, "-S", str(sock), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, f"tmux {args[0]} failed: {err.decode()}"
    return out.decode()


async def until(
    what: str, check: Callable[[], Awaitable[str | None]], seconds: float, sock: Path, err: Path
) -> str:
    """Poll ``check`` (a terminal has no events to await) until it returns text."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if (found := await check()) is not None:
            return found
        await asyncio.sleep(0.1)
    screen = await tmux(sock, "capture-pane", "-p", "-t", "status")
    stderr = read(err)
    raise AssertionError(f"{what}\n--- screen ---\n{screen}\n--- stderr ---\n{stderr}")


async def keep_transferring(stack: Stack, stop: asyncio.Event) -> None:
    reader, writer = await stack.socks_connect()
    chunk = os.urandom(32 * 1024)
    try:
        while not stop.is_set():
            writer.write(chunk)
            await writer.drain()
            await reader.readexactly(len(chunk))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_status_view_in_tmux_updates_and_quits_on_q(stack: Stack, short_dir: Path) -> None:
    assert shutil.which(TMUX)
    sock, rc, err = short_dir / "tmux", short_dir / "rc", short_dir / "err"
    command = (
        # Without COLUMNS/LINES from this process: rich must size itself from the terminal.
        f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m resip_proxy.cli status "
        f"--control-socket {shlex.quote(str(stack.control.path))} 2> {shlex.quote(str(err))}; "
        f"echo $? > {shlex.quote(str(rc))}"
    )
    stop = asyncio.Event()
    transfer = asyncio.create_task(keep_transferring(stack, stop))
    await tmux(sock, "new-session", "-d", "-x", "120", "-y", "40", "-s", "status", command)
    try:

        async def counters() -> str | None:
            screen = await tmux(sock, "capture-pane", "-p", "-t", "status")
            match = SENT.search(screen)
            return match.group(0) if match and "CONNECTED" in screen else None

        first = await until("the status view never drew a frame", counters, 15, sock, err)

        async def changed() -> str | None:
            now = await counters()
            return now if now is not None and now != first else None

        second = await until(f"byte counters stuck at {first!r}", changed, 10, sock, err)
        assert second != first
        screen = await tmux(sock, "capture-pane", "-p", "-t", "status")
        assert f"127.0.0.1:{stack.echo_port}" in screen  # the channel row
        assert "throughput" in screen

        await tmux(sock, "send-keys", "-t", "status", "q")

        async def exited() -> str | None:
            return read(rc).strip() or None

        assert await until("q did not quit the status view", exited, 10, sock, err) == "0"
    finally:
        stop.set()
        await transfer
        if not read(rc):
            with contextlib.suppress(AssertionError):
                await tmux(sock, "kill-server")

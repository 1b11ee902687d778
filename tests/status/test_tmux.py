"""``resip-proxy status`` in a real terminal (tmux): it redraws while data moves, q quits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import socket
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


async def open_idle_channels(stack: Stack, n: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(n):
        _, writer = await stack.socks_connect()
        writers.append(writer)
    return writers


async def refused_channel(stack: Stack) -> int:
    """A SOCKS5 CONNECT to a port nobody listens on: the proxy logs a channel-failed event."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    host, proxy_port = stack.frontend.address
    reader, writer = await asyncio.open_connection(host, proxy_port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + port.to_bytes(2, "big"))
    reply = await asyncio.wait_for(reader.readexactly(10), 10)
    assert reply[1] != 0, "a CONNECT to a closed port succeeded"
    writer.close()
    return port


RTT = re.compile(r"RTT [0-9.]+ ms \(min [0-9.]+\)")


def check_80x24_frame(screen: str, echo_port: int, failed_port: int) -> None:
    lines = screen.rstrip("\n").split("\n")
    assert lines[0].startswith("╭") and "resip-proxy" in lines[0], screen  # nothing scrolled
    assert any(line.startswith("╰") for line in lines[-3:]), screen  # the events panel ends
    assert RTT.search(screen), screen  # header fields whole, not wrapped mid-field
    assert any("loss in" in line and "(measured)" in line for line in lines), screen
    [names] = [line for line in lines if "target" in line and "┃" in line]
    assert "state" in names, screen
    first_row = lines[lines.index(names) + 2]  # below the column names and their rule
    assert f"127.0.0.1:{echo_port}" in first_row and " open " in first_row, screen
    assert re.search(r"\+\d+ more \(", screen), screen
    assert f"channel-failed 127.0.0.1:{failed_port}: " in screen, screen


async def test_80x24_frame_fits_with_every_field_whole_and_the_state_column(
    stack: Stack, short_dir: Path
) -> None:
    sock, rc, err = short_dir / "tmux", short_dir / "rc", short_dir / "err"
    conf = short_dir / "tmux.conf"
    conf.write_text("set -g status off\n")  # the whole 80x24 window is the pane
    failed_port = await refused_channel(stack)
    idle = await open_idle_channels(stack, 10)
    stop = asyncio.Event()
    transfer = asyncio.create_task(keep_transferring(stack, stop))
    command = (
        f"env -u COLUMNS -u LINES {shlex.quote(sys.executable)} -m resip_proxy.cli status "
        f"--control-socket {shlex.quote(str(stack.control.path))} 2> {shlex.quote(str(err))}; "
        f"echo $? > {shlex.quote(str(rc))}"
    )
    await tmux(sock, "-f", str(conf), "new-session", "-d", "-x", "80", "-y", "24",
               "-s", "status", command)  # fmt: skip
    try:
        size = await tmux(sock, "display", "-p", "-t", "status", "#{pane_width}x#{pane_height}")
        assert size.strip() == "80x24"

        async def full_frame() -> str | None:
            screen = await tmux(sock, "capture-pane", "-p", "-t", "status")
            done = "CONNECTED" in screen and SENT.search(screen) and "more (" in screen
            return screen if done and "channel-failed" in screen else None

        screen = await until("no complete frame", full_frame, 15, sock, err)
        check_80x24_frame(screen, stack.echo_port, failed_port)
        await tmux(sock, "send-keys", "-t", "status", "q")

        async def exited() -> str | None:
            return read(rc).strip() or None

        assert await until("q did not quit the status view", exited, 10, sock, err) == "0"
    finally:
        stop.set()
        await transfer
        for writer in idle:
            writer.close()
        if not read(rc):
            with contextlib.suppress(AssertionError):
                await tmux(sock, "kill-server")

"""``resip-proxy connect`` as a real subprocess: any stdin/stdout, signals, a running proxy.

The server side is the in-process fixture server behind the stub session API
(``fixture.py``): its ``drivers`` are exactly the sessions it holds, and the target is a
loopback echo server that counts its open connections. ``RESIP_CONTROL_SOCKET`` points
each ``connect`` at a socket of the test's own, so a proxy running on the machine cannot
change what is tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import socket
import sys
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from resip_proxy.client import SessionManager
from resip_proxy.config import init_client, load_client_config
from resip_proxy.control import ControlServer
from resip_proxy.frontend import ProxyFrontend

from .fixture import FixtureServer, StubApi
from .test_cli import KEY, uri

pytestmark = pytest.mark.timeout(40)
STEP = 15.0


class Target:
    """A loopback echo server that knows how many connections it has open."""

    def __init__(self) -> None:
        self.open = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass
        finally:
            writer.close()
            self.open -= 1

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._echo, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def stub(server: FixtureServer, tmp_path: Path) -> AsyncIterator[StubApi]:
    api = StubApi(server, tmp_path, KEY)
    await api.start()
    yield api
    await api.close()


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    t = Target()
    await t.start()
    yield t
    await t.close()


@pytest.fixture
def config(stub: StubApi, tmp_path: Path) -> Path:
    path = tmp_path / "proxy.toml"
    init_client(uri(stub), path)
    return path


async def until(condition: Callable[[], bool], what: str, timeout: float = STEP) -> None:  # noqa: ASYNC109
    """Poll ``condition`` (state in other processes) until true, or fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


async def spawn(
    config: Path, port: int, tmp_path: Path, *args: str, stdin: Any, stdout: Any
) -> asyncio.subprocess.Process:
    env = dict(os.environ, RESIP_CONTROL_SOCKET=str(tmp_path / "no-proxy.sock"))
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resip_proxy.cli", "connect", "127.0.0.1", str(port),
        "--config", str(config), *args,
        stdin=stdin, stdout=stdout, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    try:
        _, err = await asyncio.wait_for(proc.communicate(), STEP)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


# -- stdin and stdout of every kind ------------------------------------------------------------


async def test_regular_files_in_and_out(
    config: Path, target: Target, server: FixtureServer, tmp_path: Path
) -> None:
    payload = os.urandom(3 << 20)
    source, sink = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(payload)
    with source.open("rb") as stdin, sink.open("wb") as stdout:
        proc = await spawn(config, target.port, tmp_path, stdin=stdin, stdout=stdout)
        code, err = await finish(proc)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert sink.read_bytes() == payload
    await until(lambda: not server.drivers, "the session closed")


async def test_dev_null_in_and_out(config: Path, target: Target, tmp_path: Path) -> None:
    with open(os.devnull, "rb") as stdin, open(os.devnull, "wb") as stdout:  # noqa: ASYNC230
        proc = await spawn(config, target.port, tmp_path, stdin=stdin, stdout=stdout)
        code, err = await finish(proc)
    assert code == 0, err[-3000:]


async def test_one_socket_as_stdin_and_stdout(config: Path, target: Target, tmp_path: Path) -> None:
    """inetd / socat style: both ends are one stream socket; half-close must carry over."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        proc = await spawn(config, target.port, tmp_path, stdin=theirs, stdout=theirs)
        theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        payload = os.urandom(500_000)
        writer.write(payload)
        writer.write_eof()
        received = await asyncio.wait_for(reader.read(-1), STEP)
        writer.close()
        code, err = await finish(proc)
    assert code == 0, err[-3000:]
    assert received == payload


async def _read_until(fd: int, want: bytes) -> bytes:
    """Bytes from a non-blocking ``fd`` until ``want`` is among them."""
    loop = asyncio.get_running_loop()
    got = b""
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while want not in got:
            await asyncio.wait_for(ready.wait(), STEP)
            ready.clear()
            with contextlib.suppress(BlockingIOError):  # woken, but someone else read it
                got += os.read(fd, 4096)
    finally:
        loop.remove_reader(fd)
    return got


async def test_a_terminal_is_left_blocking_after_sighup(
    config: Path, target: Target, tmp_path: Path
) -> None:
    """The terminal's O_NONBLOCK is shared with the shell: connect must put it back."""
    master, slave = pty.openpty()
    try:
        tty.setraw(slave)
        os.set_blocking(master, False)
        before = fcntl.fcntl(slave, fcntl.F_GETFL)
        proc = await spawn(config, target.port, tmp_path, stdin=slave, stdout=slave)
        os.write(master, b"ping over a tty")
        assert b"ping over a tty" in await _read_until(master, b"ping over a tty")
        proc.send_signal(signal.SIGHUP)
        code, err = await finish(proc)
        assert code == 128 + signal.SIGHUP, err[-3000:]
        assert fcntl.fcntl(slave, fcntl.F_GETFL) == before
    finally:
        os.close(master)
        os.close(slave)


# -- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
async def test_a_signal_closes_the_session_and_the_target_connection(
    config: Path, target: Target, server: FixtureServer, tmp_path: Path, sig: signal.Signals
) -> None:
    """What ssh does to its ProxyCommand: the server must not keep the session (96 h)."""
    proc = await spawn(
        config, target.port, tmp_path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello\n")
    assert await asyncio.wait_for(proc.stdout.readline(), STEP) == b"hello\n"
    assert len(server.drivers) == 1
    assert target.open == 1
    proc.send_signal(sig)
    code, err = await finish(proc)
    assert code == 128 + sig, err[-3000:]
    await until(lambda: not server.drivers, "the server's session closed")
    await until(lambda: target.open == 0, "the target connection closed")


def holds_pipe(pid: int, inode: int) -> bool:
    """Whether process ``pid`` has a descriptor on the pipe ``inode``."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fds):
        with contextlib.suppress(FileNotFoundError):  # closed since listdir
            if os.readlink(fds / fd) == f"pipe:[{inode}]":
                return True
    return False


async def test_stdout_ends_when_the_remote_closes_while_stdin_is_open(
    config: Path, server: FixtureServer, tmp_path: Path
) -> None:
    """sshd went away: ssh must see EOF from its ProxyCommand, though ssh's stdin is open."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-bye\r\n")
        writer.close()

    origin = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = origin.sockets[0].getsockname()[1]
    try:
        proc = await spawn(
            config, port, tmp_path, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.read(), STEP) == b"SSH-2.0-bye\r\n"
        assert proc.returncode is None  # stdin is still open: connect is still there
        proc.send_signal(signal.SIGHUP)
        code, err = await finish(proc)
        assert code == 128 + signal.SIGHUP, err[-3000:]
        await until(lambda: not server.drivers, "the server's session closed")
    finally:
        origin.close()
        await origin.wait_closed()


async def test_sighup_after_the_reader_of_stdout_went_away(
    config: Path, target: Target, server: FixtureServer, tmp_path: Path
) -> None:
    """ssh's order at exit: close its end of the pipes, then SIGHUP. No traceback."""
    out_r, out_w = os.pipe()
    try:
        os.set_blocking(out_r, False)
        proc = await spawn(
            config, target.port, tmp_path, stdin=asyncio.subprocess.PIPE, stdout=out_w
        )
        os.close(out_w)
        out_w = -1
        assert proc.stdin is not None
        proc.stdin.write(b"hello\n")
        assert b"hello\n" in await _read_until(out_r, b"hello\n")
        pipe = os.fstat(out_r).st_ino
        os.close(out_r)
        out_r = -1
        # asyncio's pipe transport notices the reader is gone and closes stdout by itself.
        await until(lambda: not holds_pipe(proc.pid, pipe), "connect let go of its stdout")
        proc.send_signal(signal.SIGHUP)
        code, err = await finish(proc)
        assert code == 128 + signal.SIGHUP, err[-3000:]
        assert "Traceback" not in err
        await until(lambda: not server.drivers, "the server's session closed")
    finally:
        for fd in (out_r, out_w):
            if fd >= 0:
                os.close(fd)


# -- through a running proxy -------------------------------------------------------------------


async def test_connect_uses_the_running_proxy(
    config: Path, stub: StubApi, target: Target, tmp_path: Path
) -> None:
    """With `run` up (its control socket), connect is one more channel of its session."""
    cfg = load_client_config(config)
    manager = SessionManager(cfg.enrolment)
    await manager.start()
    frontend = ProxyFrontend(manager, listen=("127.0.0.1", 0))
    await frontend.start()
    control = ControlServer(manager, tmp_path / "ctl" / "proxy.sock", listen=frontend.address)
    await control.start()
    try:
        assert stub.posts == 1
        proc = await spawn(
            config, target.port, tmp_path, "--control-socket", str(control.path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"through the proxy\n")
        line = await asyncio.wait_for(proc.stdout.readline(), STEP)
        assert line == b"through the proxy\n"
        channels = control.snapshot()["channels"]
        assert [c["target"] for c in channels] == [f"127.0.0.1:{target.port}"]
        assert channels[0]["local_peer"] is not None
        assert stub.posts == 1, "connect created a session of its own"
        proc.send_signal(signal.SIGHUP)
        code, err = await finish(proc)
        assert code == 128 + signal.SIGHUP, err[-3000:]
        # The connection to the proxy was reset: the proxy aborts the channel at once.
        await until(lambda: not control.snapshot()["channels"], "the proxy's channel ended")
        await until(lambda: target.open == 0, "the target connection closed")
    finally:
        await control.close()
        await frontend.close()
        await manager.close()

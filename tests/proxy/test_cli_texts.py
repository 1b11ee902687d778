"""What the programs say and set up: help texts, the demo's config file and logs, the backlog."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from resip_proxy.config import load_client_config
from resip_proxy.control import ControlError, fetch_status

from .test_frontend import free_port

pytestmark = pytest.mark.timeout(60)

COMMANDS = {
    "resip_proxy.cli": ["init", "run", "connect", "demo", "status", "simulate", "version"],
    "resip.server.cli": ["init", "run", "status", "version"],
}
#: A word, then a space and a lone dot: what rich leaves of "text [default: x]." (the
#: bracket is eaten as markup).
DANGLING_DOT = re.compile(r"\S +\.(\s|$)")


def help_text(module: str, command: str) -> str:
    env = dict(os.environ, COLUMNS="250", TERM="dumb")
    result = subprocess.run(
        [sys.executable, "-m", module, command, "--help"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("module", "command"), [(m, c) for m, commands in COMMANDS.items() for c in commands]
)
def test_help_has_no_dangling_dots(module: str, command: str) -> None:
    text = help_text(module, command)
    bad = [line.strip() for line in text.splitlines() if DANGLING_DOT.search(line)]
    assert bad == [], f"{module} {command} --help:\n{text}"


def test_help_shows_the_defaults_of_config_and_listen() -> None:
    text = help_text("resip_proxy.cli", "run")
    assert "(default: ~/.config/resip/proxy.toml)" in text
    assert "(default: 127.0.0.1:1080)" in text


class Demo:
    """``resip-proxy demo`` as a subprocess; stderr is collected while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process, banner: str) -> None:
        self.proc = proc
        self.banner = banner
        self.stderr: list[str] = []
        assert proc.stderr is not None
        self._reader = asyncio.create_task(self._collect(proc.stderr))

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.stderr.append(line.decode(errors="replace"))

    async def until_logged(self, check: Callable[[str], bool], seconds: float) -> str:
        """Poll the collected stderr for a line (a log has no event to await)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if found := next((line for line in self.stderr if check(line)), None):
                return found
            await asyncio.sleep(0.05)
        raise AssertionError("not logged; stderr:\n" + "".join(self.stderr))

    async def stop(self) -> str:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(self.proc.wait(), 15)
        await self._reader
        return "".join(self.stderr)


async def until_answering(path: Path, seconds: float) -> None:
    """Poll the status socket: once it answers, the demo handles SIGINT (it stops cleanly)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        try:
            await fetch_status(path, timeout=1.0)
            return
        except ControlError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def demo() -> AsyncIterator[Demo]:
    # A short path: unix socket paths are limited to ~100 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="rdm-"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resip_proxy.cli", "demo", "--listen", "127.0.0.1:0",
        "--control-socket", str(tmp / "p.sock"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running: Demo | None = None
    try:
        assert proc.stdout is not None
        lines = []
        while not (lines and lines[-1].startswith("Ctrl-C")):
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "demo exited early"
            lines.append(line)
        running = Demo(proc, "".join(lines))
        await until_answering(tmp / "p.sock", 10)
        yield running
        err = await running.stop()
        assert proc.returncode == 0, err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if running is not None:
            await running.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_demo_config_file_names_the_address_the_demo_listens_on() -> None:
    async with demo() as running:
        proxy = re.search(r"proxy on (127\.0\.0\.1):(\d+)", running.banner)
        config = re.search(r"--config (\S+proxy\.toml)", running.banner)
        assert proxy is not None and config is not None, running.banner
        cfg = load_client_config(Path(config[1]))
        assert cfg.listen == (proxy[1], int(proxy[2]))
        assert cfg.listen[1] != 1080


async def test_demo_logs_a_failed_channel_at_info_like_run() -> None:
    port = await free_port()  # nothing listens there: the server's connect is refused
    async with demo() as running:
        proxy = re.search(r"proxy on (127\.0\.0\.1:\d+)", running.banner)
        assert proxy is not None
        with pytest.raises(ProxyError):
            await Proxy.from_url(f"socks5://{proxy[1]}", rdns=True).connect("127.0.0.1", port)
        line = await running.until_logged(lambda s: f"127.0.0.1:{port} failed" in s, 10)
        assert " INFO " in line


def listen_backlog(port: int) -> int:
    """The accept-queue limit of the TCP listener on ``port`` (``ss``: Send-Q)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    [line] = out.strip().splitlines()
    return int(line.split()[2])


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) is not installed")
async def test_proxy_listen_backlog_is_the_system_maximum() -> None:
    async with demo() as running:
        proxy = re.search(r"proxy on 127\.0\.0\.1:(\d+)", running.banner)
        assert proxy is not None
        assert listen_backlog(int(proxy[1])) == somaxconn()

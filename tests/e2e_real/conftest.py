"""End-to-end fixtures: a real ``resip-server run`` process and ``resip-proxy`` processes.

Everything here goes through the command lines a user types, as separate processes:

- :func:`resip_server` (session scope): ``resip-server init`` into a temporary directory on
  free loopback ports, the config's ``[acl] rules`` edited to allow ``127.0.0.0/8`` (the
  tests' targets are local) and ``allow_internet`` turned off, then ``resip-server run``;
  ready once both of its TCP ports accept connections. ``resip-proxy init URI`` writes the
  client config from the enrolment URI that ``init`` printed last.
- :func:`resip_proxy` (session scope): ``resip-proxy run --listen 127.0.0.1:0``; its port is
  read from the "proxy ready on HOST:PORT" line.

Readiness is polled with a deadline (never a fixed sleep). Every process is stopped in a
``finally``: SIGTERM, a bounded wait, then SIGKILL. Each process's output goes to a log
file in the temporary directory, quoted in assertion messages when something fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from resip.server.admin import fetch_admin_status
from resip.server.certs import cert_fingerprint
from resip.server.config import load_server_config
from tests.sshd_support import sshd_argv, write_sshd_config

#: The tests' targets are on loopback, which the server's ACL refuses by default.
ACL_RULE = "allow 127.0.0.0/8"
READY_TIMEOUT = 15.0
POLL_INTERVAL = 0.05


def cli(module: str) -> list[str]:
    """argv prefix running a ResIP command line with this interpreter.

    ``python -m`` rather than the console script: it works wherever ``import resip``
    does (venv, pyenv, editable install), without depending on what is on PATH.
    """
    return [sys.executable, "-m", module]


RESIP_SERVER = cli("resip.server.cli")
RESIP_PROXY = cli("resip_proxy.cli")


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_udp_port() -> int:
    """A port number free for both TCP and UDP on 127.0.0.1 (the ResIP port uses both)."""
    for _ in range(50):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both TCP and UDP on 127.0.0.1")


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port right now."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


class Process:
    """A child process whose stdout and stderr go to ``log``; stopped by :meth:`stop`."""

    def __init__(self, argv: Sequence[str], log: Path, *, what: str) -> None:
        self.what = what
        self.log = log
        self._file: IO[bytes] = log.open("wb")
        try:
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=self._file,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        except BaseException:
            self._file.close()
            raise

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def output(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace")

    def describe(self) -> str:
        """The process's state and output, for assertion messages."""
        status = self.popen.poll()
        state = "running" if status is None else f"exited with {status}"
        return f"{self.what} ({state}); its output:\n{self.output()}"

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` until true; fail if the process exits or 15 s pass."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not condition():
            if self.popen.poll() is not None:
                raise AssertionError(f"waiting for {what}: {self.describe()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"waiting for {what}: not within {READY_TIMEOUT} s; {self.describe()}"
                )
            time.sleep(POLL_INTERVAL)  # readiness polling with a deadline, not synchronisation

    def stop(self) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL; always reaps and closes the log."""
        try:
            if self.popen.poll() is None:
                self.popen.terminate()
                try:
                    self.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(timeout=10)
        finally:
            self._file.close()


@contextlib.contextmanager
def running(argv: Sequence[str], log: Path, *, what: str) -> Iterator[Process]:
    """Start a :class:`Process`; it is stopped however the block ends."""
    proc = Process(argv, log, what=what)
    try:
        yield proc
    finally:
        proc.stop()


def run_cli(argv: Sequence[str], *, timeout: float = 30.0) -> str:
    """Run a short command to completion; its stdout, or an assertion with its output."""
    result = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@dataclass(frozen=True)
class ServerHandle:
    """A running ``resip-server`` and the client config enrolled with it."""

    process: Process
    directory: Path
    api_port: int
    resip_port: int
    #: Written by ``resip-proxy init URI --config``; what ``connect`` and ``run`` read.
    client_config: Path


@pytest.fixture(scope="session")
def resip_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """``resip-server init`` + ``run`` on free loopback ports, allowing loopback targets."""
    with start_resip_server(tmp_path_factory.mktemp("e2e-server")) as handle:
        yield handle


@contextlib.contextmanager
def start_resip_server(base: Path) -> Iterator[ServerHandle]:
    """What :func:`resip_server` runs, in ``base``: for tests that need a server to themselves."""
    directory = base / "server"
    api_port = free_tcp_port()
    resip_port = free_tcp_udp_port()
    out = run_cli(
        [
            *RESIP_SERVER,
            "init",
            "--dir",
            str(directory),
            "--public-host",
            "127.0.0.1",
            "--listen-host",
            "127.0.0.1",
            "--api-port",
            str(api_port),
            "--resip-port",
            str(resip_port),
        ]
    )
    uri = out.strip().splitlines()[-1]
    assert uri.startswith("resip://"), f"last line of resip-server init is not a URI:\n{out}"

    config = directory / "config.toml"
    text = config.read_text()
    layout = ("rules = []", "allow_internet = true")
    assert all(text.count(s) == 1 for s in layout), f"unexpected [acl] in {config}:\n{text}"
    # Only loopback: nothing a test (or a browser's background chatter) asks for may leave
    # the machine, even on a CI runner with internet access.
    text = text.replace("rules = []", f'rules = ["{ACL_RULE}"]')
    config.write_text(text.replace("allow_internet = true", "allow_internet = false"))
    # The edits must be what the server will actually load.
    loaded = load_server_config(config)
    assert loaded.acl == (ACL_RULE,) and not loaded.allow_internet

    with running(
        [*RESIP_SERVER, "run", "--config", str(config)], base / "server.log", what="resip-server"
    ) as proc:
        proc.wait_for(lambda: accepts(api_port), f"resip-server API on port {api_port}")
        proc.wait_for(lambda: accepts(resip_port), f"resip-server TCP fallback on {resip_port}")
        client_config = base / "proxy.toml"
        run_cli([*RESIP_PROXY, "init", uri, "--config", str(client_config)])
        yield ServerHandle(proc, directory, api_port, resip_port, client_config)


def admin_status(server: ServerHandle) -> dict[str, Any]:
    """The server's ``/v1/admin/status`` document, as ``resip-server status --json`` reads it."""
    cfg = load_server_config(server.directory / "config.toml")
    fingerprint = cert_fingerprint(cfg.tls_cert.read_bytes())
    url = f"https://127.0.0.1:{server.api_port}/v1/admin/status"
    return asyncio.run(fetch_admin_status(url, admin_key=cfg.admin_key, fingerprint=fingerprint))


def held(server: ServerHandle) -> tuple[int, int]:
    """``(sessions, channels)`` the server holds right now."""
    sessions = admin_status(server)["sessions"]
    return len(sessions), sum(len(s["channels"]) for s in sessions)


@dataclass(frozen=True)
class ProxyHandle:
    """A running ``resip-proxy run`` (SOCKS5 and HTTP proxy on one port)."""

    process: Process
    port: int


_READY = re.compile(r"proxy ready on 127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="session")
def resip_proxy(
    resip_server: ServerHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyHandle]:
    """``resip-proxy run`` on an ephemeral loopback port, connected to :func:`resip_server`."""
    log = tmp_path_factory.mktemp("e2e-proxy") / "proxy.log"
    argv = [
        *RESIP_PROXY,
        "run",
        "--config",
        str(resip_server.client_config),
        "--listen",
        "127.0.0.1:0",
    ]
    with running(argv, log, what="resip-proxy run") as proc:
        proc.wait_for(lambda: _READY.search(proc.output()) is not None, "proxy ready line")
        match = _READY.search(proc.output())
        assert match is not None
        port = int(match.group(1))
        proc.wait_for(lambda: accepts(port), f"resip-proxy on port {port}")
        yield ProxyHandle(proc, port)


def _banner(port: int) -> bool:
    """Whether an SSH server answers on 127.0.0.1:port (not just anything listening)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@dataclass(frozen=True)
class Sshd:
    """A private sshd accepting ``key`` for root on 127.0.0.1:``port``."""

    process: Process
    port: int
    key: Path


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """sshd -D -e with a throwaway config, host key and authorized user key (needs root)."""
    port = free_tcp_port()
    config, user_key = write_sshd_config(tmp_path / "sshd", f"127.0.0.1:{port}")
    argv = sshd_argv(config)
    with running(argv, tmp_path / "sshd.log", what="sshd") as proc:
        proc.wait_for(lambda: _banner(port), f"sshd banner on port {port}")
        yield Sshd(proc, port, user_key)

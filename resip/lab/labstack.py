"""Real ResIP processes inside the impaired-link lab (``scripts/netlab``).

Contract
--------
Helpers to start a real ``resip-server``, ``resip-proxy`` and a plain HTTP server in the
lab's network namespaces, the way ``tests/lab/conftest.py`` does, for the lab benchmark
(``scripts/bench_lab.py``). Nothing here builds the lab itself: every function takes an
object with the ``Lab`` methods it uses (:class:`LabLike`), and every process is started
through ``lab.popen`` so the lab terminates it when it closes.

- :func:`init_server` runs ``resip-server init`` (in the root namespace: it only writes
  files) and opens the ACL to the given networks; it returns the config path and the
  enrolment URI.
- :func:`start_server` / :func:`start_proxy` start the processes and wait until they are
  usable (API port reachable from the client namespace / "proxy ready" on stderr); they
  raise :class:`LabStackError` with the log tail otherwise. :func:`start_server_process`
  also returns the server's process (the benchmarks read its CPU time from /proc). Any
  object with the :class:`LabLike` methods will do, so the loopback benchmark runs the
  same functions without namespaces.
- :func:`start_http_server` serves a directory with ``python -m http.server``.
- :class:`LogTail` collects a process's stderr lines with arrival times.
- :class:`CurlDownload` runs curl in the client namespace and records when each byte
  arrived (``wait_bytes``, ``bytes_at``), so goodput windows and resume times can be
  measured without polling a file.

Nothing here prints: diagnostics go to the ``resip.lab.labstack`` logger.
"""

from __future__ import annotations

import bisect
import contextlib
import importlib.machinery
import importlib.util
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Protocol

__all__ = [
    "API_PORT",
    "CurlDownload",
    "LabLike",
    "LabStackError",
    "LogTail",
    "Proxy",
    "ServerSetup",
    "init_server",
    "load_netlab",
    "start_http_server",
    "start_proxy",
    "start_server",
    "start_server_process",
    "stop_process",
    "wait_tcp",
    "write_random_file",
]

log = logging.getLogger(__name__)

#: The HTTPS API port ``resip-server init`` writes into the config by default.
API_PORT = 31265


def load_netlab(path: Path) -> ModuleType:
    """``scripts/netlab`` (at ``path``) as a module: it has no .py suffix, being a command."""
    loader = importlib.machinery.SourceFileLoader("resip_netlab", str(path))
    spec = importlib.util.spec_from_loader("resip_netlab", loader)
    if spec is None:
        raise LabStackError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["resip_netlab"] = module
    loader.exec_module(module)
    return module


class LabStackError(RuntimeError):
    """A lab process did not start (the message carries its log tail)."""


class LabLike(Protocol):
    """The parts of ``scripts/netlab``'s ``Lab`` used here."""

    server_addr: str

    def popen(self, where: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` in namespace ``where``; the lab terminates it when it closes."""
        ...

    def run_in(
        self, where: str, cmd: Sequence[str], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` to completion in namespace ``where``."""
        ...


class LogTail:
    """Collects a text stream's lines with arrival times (a daemon thread reads it)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed under us
            for line in self._stream:
                with self._cond:
                    self.lines.append((time.monotonic(), line.rstrip("\n")))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float, after: float = 0.0) -> float | None:
        """Arrival time of the first line matching ``pattern`` at or after ``after``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, line in self.lines:
                    if at >= after and regex.search(line):
                        return at
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return None
                self._cond.wait(remaining)

    def text(self) -> str:
        """Everything read so far."""
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def close(self) -> None:
        """Wait briefly for EOF (the process should be gone) and close the stream."""
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._stream.close()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; idempotent."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_tcp(lab: LabLike, where: str, host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` accepts TCP connections from namespace ``where`` in time."""
    code = (
        "import socket, sys, time\n"
        f"deadline = time.monotonic() + {timeout!r}\n"
        "while True:\n"
        "    try:\n"
        f"        socket.create_connection(({host!r}, {port}), 1).close(); break\n"
        "    except OSError:\n"
        "        if time.monotonic() > deadline: sys.exit(1)\n"
        "        time.sleep(0.1)\n"
    )
    result = lab.run_in(where, [sys.executable, "-c", code], check=False, timeout=timeout + 10)
    return result.returncode == 0


def write_random_file(path: Path, size: int) -> None:
    """``size`` random bytes at ``path`` (incompressible, so no tunnel can shortcut it)."""
    chunk = 4 << 20
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


@dataclass(frozen=True)
class ServerSetup:
    """What ``resip-server init`` produced."""

    config: Path
    uri: str


def init_server(
    workdir: Path,
    public_host: str,
    allow: Sequence[str],
    *,
    listen_host: str | None = None,
    api_port: int | None = None,
    resip_port: int | None = None,
    allow_internet: bool | None = None,
) -> ServerSetup:
    """``resip-server init`` into ``workdir/srv`` with ``allow`` rules added to the ACL.

    ``listen_host``, ``api_port`` and ``resip_port`` go to ``init`` when given (else its
    defaults); ``allow_internet`` replaces the config's ``[acl] allow_internet`` when given.
    """
    options = {"--listen-host": listen_host, "--api-port": api_port, "--resip-port": resip_port}
    extra = [x for key, value in options.items() if value is not None for x in (key, str(value))]
    init = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "resip.server.cli", "init", "--dir", str(workdir / "srv"),
         "--public-host", public_host, *extra],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if init.returncode != 0:
        raise LabStackError(f"resip-server init failed: {init.stderr.strip()}")
    uri = init.stdout.strip().splitlines()[-1]
    config = workdir / "srv" / "config.toml"
    text = config.read_text()
    rules = ", ".join(f'"allow {net}"' for net in allow)
    if "rules = []" not in text:
        raise LabStackError(f"no 'rules = []' line to open the ACL in {config}")
    text = text.replace("rules = []", f"rules = [{rules}]", 1)
    if allow_internet is not None:
        value = "true" if allow_internet else "false"
        text, n = re.subn(r"(?m)^allow_internet = \w+$", f"allow_internet = {value}", text)
        if n != 1:
            raise LabStackError(f"no single 'allow_internet' line in {config}")
    config.write_text(text)
    return ServerSetup(config, uri)


def start_server(lab: LabLike, config: Path, timeout: float = 30.0) -> LogTail:
    """``resip-server run`` in the server namespace; its stderr once the API answers."""
    return start_server_process(lab, config, timeout=timeout)[1]


def start_server_process(
    lab: LabLike, config: Path, *, api_port: int = API_PORT, timeout: float = 30.0
) -> tuple[subprocess.Popen[Any], LogTail]:
    """:func:`start_server` returning the process too (for its pid), API on ``api_port``."""
    proc = lab.popen(
        "server", [sys.executable, "-m", "resip.server.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    tail = LogTail(proc.stderr)
    if not wait_tcp(lab, "client", lab.server_addr, api_port, timeout):
        stop_process(proc)
        tail.close()
        raise LabStackError(f"resip-server did not start:\n{tail.text()[-3000:]}")
    log.info("resip-server up in the server namespace")
    return proc, tail


def start_http_server(
    lab: LabLike, directory: Path, *, bind: str, port: int, timeout: float = 15.0
) -> subprocess.Popen[Any]:
    """``python -m http.server`` in the server namespace, once it accepts connections."""
    proc = lab.popen(
        "server",
        [sys.executable, "-m", "http.server", "--bind", bind, "--directory", str(directory),
         str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    probe = "127.0.0.1" if bind in ("0.0.0.0", "") else bind  # noqa: S104 - inside a lab netns
    if not wait_tcp(lab, "server", probe, port, timeout):
        stop_process(proc)
        raise LabStackError(f"http.server on {bind}:{port} did not start")
    return proc


@dataclass
class Proxy:
    """A running ``resip-proxy run`` and its stderr."""

    proc: subprocess.Popen[Any]
    log: LogTail
    started: float
    ready: float

    def stop(self) -> None:
        """Terminate the proxy and close its log."""
        stop_process(self.proc)
        self.log.close()


def start_proxy(
    lab: LabLike,
    workdir: Path,
    uri: str,
    *,
    listen: str = "127.0.0.1:1080",
    control_socket: Path | None = None,
    timeout: float = 30.0,
    verbose: bool = False,
) -> Proxy:
    """``resip-proxy init`` (once per ``workdir``) + ``run`` in the client namespace.

    Returns when the proxy printed "proxy ready" (its session exists by then).
    ``verbose`` turns on its debug log (every transport decision).
    """
    config = workdir / "proxy.toml"
    if not config.exists():
        init = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "resip_proxy.cli", "init", uri, "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if init.returncode != 0:
            raise LabStackError(f"resip-proxy init failed: {init.stderr.strip()}")
    cmd = [sys.executable, "-m", "resip_proxy.cli", "run", "--config", str(config),
           "--listen", listen, *(["--verbose"] if verbose else [])]  # fmt: skip
    if control_socket is not None:
        with contextlib.suppress(FileNotFoundError):
            control_socket.unlink()
        cmd += ["--control-socket", str(control_socket)]
    started = time.monotonic()
    proc = lab.popen("client", cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    tail = LogTail(proc.stderr)
    ready = tail.wait_for("proxy ready", timeout)
    if ready is None:
        stop_process(proc)
        tail.close()
        raise LabStackError(f"resip-proxy did not start:\n{tail.text()[-3000:]}")
    log.info("resip-proxy ready after %.1f s", ready - started)
    return Proxy(proc, tail, started, ready)


class CurlDownload:
    """curl in the client namespace writing to a pipe; a thread counts what arrives, when.

    ``args`` are curl's (URL, proxy options); the body goes nowhere but the byte count.
    """

    def __init__(self, lab: LabLike, args: Sequence[str], max_time: float) -> None:
        self.proc: subprocess.Popen[bytes] = lab.popen(
            "client",
            ["curl", "-sS", "--max-time", str(math.ceil(max_time)), *args, "-o", "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started = time.monotonic()
        self.total = 0
        #: (monotonic time, cumulative bytes) after every read.
        self.arrivals: list[tuple[float, int]] = []
        self.ended: float | None = None
        self._outcome: str | None = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        fd = stream.fileno()
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                data = b""
            now = time.monotonic()
            with self._cond:
                if not data:
                    self.ended = now
                    self._cond.notify_all()
                    return
                self.total += len(data)
                self.arrivals.append((now, self.total))
                self._cond.notify_all()

    def wait_bytes(self, nbytes: int, timeout: float) -> float | None:
        """When the total reached ``nbytes`` (arrival time), or None: timeout or curl ended."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self.total >= nbytes:
                    return next(t for t, n in self.arrivals if n >= nbytes)
                remaining = deadline - time.monotonic()
                if self.ended is not None or remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 1.0))

    def bytes_at(self, when: float) -> int:
        """Cumulative bytes received up to ``when``."""
        with self._cond:
            i = bisect.bisect_right(self.arrivals, when, key=lambda a: a[0])
            return self.arrivals[i - 1][1] if i else 0

    def outcome(self) -> str:
        """How curl is doing: running, finished, or its exit status and error message."""
        if self._outcome is not None:
            return self._outcome
        if self.ended is None or self.proc.poll() is None:
            return "running"
        rc = self.proc.returncode
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
        self._outcome = "finished" if rc == 0 else f"curl exit {rc}: {err[-200:]}"
        return self._outcome

    def stop(self) -> None:
        """Stop curl (if still running) and the reader."""
        stop_process(self.proc, 3)
        self._thread.join(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

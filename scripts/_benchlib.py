"""Helpers shared by the benchmark scripts in this directory (not part of the package).

- :func:`use_project_venv`: re-run the calling script with ``./.venv/bin/python`` (where
  ResIP's dependencies live) when it was started by another interpreter, e.g. through
  ``sudo`` or its ``#!/usr/bin/env python3`` line. Importing this module puts this
  checkout first on ``sys.path`` (:func:`project_on_path`), so the scripts import its
  ``resip`` whichever interpreter runs them and whoever imports them.
- :func:`cpu_seconds` / :func:`cpu_snapshot` / :func:`cpu_per_gib` / :func:`cpu_cores`:
  user + system CPU time of processes, read from ``/proc/PID/stat`` (fields 14 and 15,
  ``utime`` and ``stime``, all threads of the process), and what it comes to per GiB
  moved, or per second, between two snapshots.
  A process that is gone (or a system without ``/proc``) reads as ``None``.
- :func:`stop_gently`: SIGINT (what Ctrl-C sends, so the process shuts down as a user
  would see it), then SIGKILL after a timeout; always reaps.
- :func:`free_tcp_port` / :func:`free_tcp_udp_port`: ephemeral ports on 127.0.0.1.
- :class:`LocalLab`: ``resip.lab.labstack``'s :class:`~resip.lab.labstack.LabLike`
  on this machine's loopback, without namespaces: the same ``init_server`` /
  ``start_server_process`` / ``start_proxy`` that the lab uses start ResIP here too, and
  every process it started is stopped (:func:`stop_gently`) when it closes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
GIB = float(1 << 30)
LOOPBACK = "127.0.0.1"


def use_project_venv(script: str) -> None:
    """Re-exec ``script`` under ``./.venv/bin/python`` unless already there (or no venv)."""
    if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parents[1].resolve():
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), script, *sys.argv[1:]])
    project_on_path()


def project_on_path() -> None:
    """Make this checkout's ``resip`` importable (ahead of any installed copy)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


project_on_path()


# -- CPU accounting -------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of process ``pid`` in seconds, or None when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_snapshot(pids: Mapping[str, int]) -> dict[str, float | None]:
    """:func:`cpu_seconds` of every named process."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_per_gib(
    before: Mapping[str, float | None], after: Mapping[str, float | None], nbytes: int
) -> dict[str, float | None]:
    """CPU seconds per GiB of ``nbytes`` moved between two snapshots, per process."""
    out: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        if start is None or end is None or nbytes <= 0:
            out[name] = None
        else:
            out[name] = round((end - start) / (nbytes / GIB), 3)
    return out


def cpu_cores(
    before: Mapping[str, float | None], after: Mapping[str, float | None], seconds: float
) -> dict[str, float | None]:
    """Cores used (CPU seconds per second) between two snapshots ``seconds`` apart."""
    out: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        if start is None or end is None or seconds <= 0:
            out[name] = None
        else:
            out[name] = round((end - start) / seconds, 3)
    return out


def process_name(pid: int) -> str:
    """``/proc/PID/comm`` (what the pid actually runs), or "?"."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# -- processes and ports --------------------------------------------------------------------


def stop_gently(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGINT, wait up to ``timeout`` s, then SIGKILL; idempotent, always reaps."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def free_tcp_udp_port() -> int:
    """A port number free for both TCP and UDP on 127.0.0.1 (the ResIP port uses both)."""
    for _ in range(50):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        ):
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1")


class LocalLab:
    """``labstack.LabLike`` on loopback: "client" and "server" are both this machine."""

    server_addr = LOOPBACK

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        #: Called (last registered first) after every process has stopped.
        self.on_close: list[Callable[[], None]] = []

    def popen(self, where: str, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``cmd`` here (``where`` is ignored); it is stopped by :meth:`close`."""
        proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, **kwargs)
        self.procs.append(proc)
        return proc

    def run_in(
        self, where: str, cmd: Sequence[str], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` to completion here; output captured as text."""
        return subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=check
        )

    def close(self) -> None:
        """Stop every process (SIGINT, then SIGKILL), then run the ``on_close`` hooks."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            stop_gently(proc)
        self.procs.clear()
        while self.on_close:
            self.on_close.pop()()

    def __enter__(self) -> LocalLab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

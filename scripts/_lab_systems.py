"""The systems ``scripts/bench_lab.py`` compares, and the lab settings they share.

Each :class:`System` moves the file from the server namespace to curl in the client one
(see bench_lab's docstring for how each is set up) and names its user processes
(:meth:`System.pids`) so the benchmark can read their CPU time from /proc: resip-server
and resip-proxy, kcptun-server and kcptun-client; kernel TCP has none. ``ip netns exec``
execs the command in place, so a ``Popen`` pid is the process itself.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resip.lab import labstack

HTTP_PORT = 8080
PROXY_LISTEN = "127.0.0.1:1080"
KCP_LOCAL_PORT = 12948
KCP_SERVER_PORT = 29900
KCP_MTU = 1350
ALL_SYSTEMS = ("resip", "tcp-cubic", "tcp-bbr", "kcptun")
#: How long a cell or scenario waits for curl's first byte on the clean link.
FIRST_BYTE_TIMEOUT = 30.0
#: What the CPU columns say for a system without user processes.
NO_PROCESS = "kernel TCP: no user process"


@dataclass
class Bench:
    """The lab, the long-lived processes in it, and the run's settings."""

    lab: Any
    workdir: Path
    #: The bottleneck queue, in ms of the link rate.
    queue_ms: float
    file_name: str = "blob"
    #: The rate the link was last set to (:meth:`link`).
    rate_bps: float = 20e6

    @property
    def queue_bytes(self) -> int:
        """The queue at the current rate."""
        return int(self.rate_bps / 8 * self.queue_ms / 1000)

    def link(self, *, rate_bps: float, rtt_ms: float, loss: float) -> None:
        """Both directions: rate C, the queue, loss, one-way delay RTT/2, no events."""
        self.rate_bps = rate_bps
        self.lab.reset()
        self.lab.set(
            loss=loss, delay=rtt_ms / 2000, rate_bps=rate_bps, queue_bytes=self.queue_bytes
        )

    def sysctl(self, where: str, key: str, value: str) -> None:
        done = self.lab.run_in(where, ["sysctl", "-q", "-w", f"{key}={value}"], check=False)
        if done.returncode != 0:
            raise RuntimeError(f"sysctl {key}={value} in the {where} netns: {done.stderr.strip()}")


ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


@contextlib.contextmanager
def allow_congestion_controls(names: Sequence[str]) -> Iterator[None]:
    """Let the lab's namespaces pick ``names`` as their default congestion control.

    Outside the initial namespace, ``net.ipv4.tcp_congestion_control`` only accepts what the
    (global) ``tcp_allowed_congestion_control`` lists; that list is extended for the run and
    restored afterwards. It only widens what may be chosen: nothing's default changes.
    """
    before = ALLOWED_CC.read_text().split()
    missing = [n for n in names if n not in before]
    if missing:
        print(
            f"bench_lab: adding {', '.join(missing)} to {ALLOWED_CC} for the run", file=sys.stderr
        )
        ALLOWED_CC.write_text(" ".join([*before, *missing]) + "\n")
    try:
        yield
    finally:
        if missing:
            ALLOWED_CC.write_text(" ".join(before) + "\n")


class System:
    """One way of moving the file from the server namespace to curl in the client one."""

    name = ""

    def unavailable(self) -> str | None:
        """Why this system cannot run here, or None."""
        return None

    def setup(self, bench: Bench) -> None:
        """Once per run: long-lived server-side processes."""

    def start(self, bench: Bench, rtt_ms: float) -> None:
        """Per cell, on a clean link (``bench.rate_bps`` set): fresh client-side state."""

    def curl_args(self, bench: Bench) -> list[str]:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """The system's running user processes by name (for CPU accounting)."""
        return {}

    def stop(self, bench: Bench) -> None:
        """Per cell: stop what ``start`` started."""

    def close(self, bench: Bench) -> None:
        """Once per run, at the end: save logs (the lab stops the processes)."""


class Resip(System):
    name = "resip"

    def __init__(self) -> None:
        self.uri = ""
        self.proxy: labstack.Proxy | None = None
        self.server: subprocess.Popen[Any] | None = None
        self.server_log: labstack.LogTail | None = None
        self.sessions = 0

    def setup(self, bench: Bench) -> None:
        server = labstack.init_server(
            bench.workdir,
            bench.lab.server_addr,
            ["127.0.0.0/8", f"{bench.lab.server_addr}/32"],
        )
        self.uri = server.uri
        self.server, self.server_log = labstack.start_server_process(bench.lab, server.config)

    def start(self, bench: Bench, rtt_ms: float) -> None:
        self.proxy = labstack.start_proxy(
            bench.lab,
            bench.workdir,
            self.uri,
            listen=PROXY_LISTEN,
            control_socket=bench.workdir / "proxy.sock",
            timeout=60,
            verbose=os.environ.get("RESIP_LAB_VERBOSE") == "1",
        )
        self.sessions += 1

    def curl_args(self, bench: Bench) -> list[str]:
        return [
            "--socks5-hostname",
            PROXY_LISTEN,
            f"http://127.0.0.1:{HTTP_PORT}/{bench.file_name}",
        ]

    def pids(self) -> dict[str, int]:
        out = {}
        if self.server is not None:
            out["resip-server"] = self.server.pid
        if self.proxy is not None:
            out["resip-proxy"] = self.proxy.proc.pid
        return out

    def stop(self, bench: Bench) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            with (bench.workdir / "resip-proxy.log").open("a") as f:
                f.write(f"--- proxy {self.sessions}\n{self.proxy.log.text()}\n")
            self.proxy = None

    def close(self, bench: Bench) -> None:
        if self.server is not None:
            labstack.stop_process(self.server)
        if self.server_log is not None:
            self.server_log.close()
            (bench.workdir / "resip-server.log").write_text(self.server_log.text())


class KernelTcp(System):
    def __init__(self, cc: str) -> None:
        self.cc = cc
        self.name = f"tcp-{cc}"

    def unavailable(self) -> str | None:
        available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
        if self.cc in available.read_text().split():
            return None
        subprocess.run(["modprobe", f"tcp_{self.cc}"], capture_output=True, check=False)
        if self.cc in available.read_text().split():
            return None
        return f"congestion control {self.cc!r} is not available in this kernel"

    def start(self, bench: Bench, rtt_ms: float) -> None:
        bench.sysctl("server", "net.ipv4.tcp_congestion_control", self.cc)
        got = bench.lab.run_in("server", ["sysctl", "-n", "net.ipv4.tcp_congestion_control"])
        if got.stdout.strip() != self.cc:
            raise RuntimeError(f"server netns congestion control is {got.stdout.strip()!r}")

    def curl_args(self, bench: Bench) -> list[str]:
        return [f"http://{bench.lab.server_addr}:{HTTP_PORT}/{bench.file_name}"]


class Kcptun(System):
    name = "kcptun"

    def __init__(self, window: int = 0) -> None:
        self.key = secrets.token_hex(16)
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        #: Fixed --sndwnd/--rcvwnd, or 0: sized per cell (see bench_lab's docstring).
        self.fixed_window = window
        self.window = 0

    def unavailable(self) -> str | None:
        missing = [b for b in ("kcptun-server", "kcptun-client") if shutil.which(b) is None]
        if missing:
            return f"{' and '.join(missing)} not found (scripts/install-bench-deps installs kcptun)"
        return None

    def options(self, bench: Bench, rtt_ms: float) -> list[str]:
        """Both ends' options: windows of BDP + queue at the current rate (or fixed)."""
        bdp = bench.rate_bps / 8 * rtt_ms / 1000
        self.window = self.fixed_window or max(128, math.ceil((bdp + bench.queue_bytes) / KCP_MTU))
        options = {
            "--key": self.key,
            "--crypt": "aes",
            "--mode": "fast",
            "--mtu": str(KCP_MTU),
            "--sndwnd": str(self.window),
            "--rcvwnd": str(self.window),
        }
        return [*(x for pair in options.items() for x in pair), "--nocomp", "--quiet"]

    def start(self, bench: Bench, rtt_ms: float) -> None:
        common = self.options(bench, rtt_ms)
        server = f"{bench.lab.server_addr}:{KCP_SERVER_PORT}"
        logs = bench.workdir / "kcptun.log"
        with logs.open("a") as log:
            for name, where, cmd in (
                ("kcptun-server", "server",
                 ["kcptun-server", "-l", f":{KCP_SERVER_PORT}", "-t", f"127.0.0.1:{HTTP_PORT}"]),
                ("kcptun-client", "client",
                 ["kcptun-client", "-l", f"127.0.0.1:{KCP_LOCAL_PORT}", "-r", server]),
            ):  # fmt: skip
                self.procs[name] = bench.lab.popen(where, [*cmd, *common], stdout=log, stderr=log)
        if not labstack.wait_tcp(bench.lab, "client", "127.0.0.1", KCP_LOCAL_PORT, 15):
            raise RuntimeError(f"kcptun-client is not listening (see {logs})")

    def curl_args(self, bench: Bench) -> list[str]:
        return [f"http://127.0.0.1:{KCP_LOCAL_PORT}/{bench.file_name}"]

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def stop(self, bench: Bench) -> None:
        for proc in self.procs.values():
            labstack.stop_process(proc)
        self.procs.clear()


def make_system(name: str, args: argparse.Namespace) -> System:
    if name == "resip":
        return Resip()
    if name == "kcptun":
        return Kcptun(args.kcptun_window)
    return KernelTcp(name.removeprefix("tcp-"))


@contextlib.contextmanager
def cell(bench: Bench, system: System, rtt_ms: float) -> Iterator[None]:
    system.start(bench, rtt_ms)
    try:
        yield
    finally:
        system.stop(bench)

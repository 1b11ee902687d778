#!/usr/bin/env python3
"""ResIP against kernel TCP (cubic, bbr) and kcptun on the impaired-link lab (needs root).

Everything runs over the same ``scripts/netlab`` link: two network namespaces, "client"
(10.200.1.2) and "server" (10.200.2.1), joined by a userspace relay that imposes, each way,
a C = 20 Mbit/s bottleneck behind a tail-drop queue, random loss p (before the queue) and
a one-way delay of RTT/2. The server namespace runs ``python -m http.server`` on
0.0.0.0:8080 serving one random (incompressible) file; every system downloads it with
curl in the client namespace:

- ``resip``: curl --socks5-hostname through ``resip-proxy`` (client netns) ->
  ``resip-server`` (server netns) -> 127.0.0.1:8080.
- ``tcp-cubic`` / ``tcp-bbr``: curl straight to 10.200.2.1:8080, with the server
  namespace's ``net.ipv4.tcp_congestion_control`` (the sender's, for a download) set to
  cubic / bbr; ``tcp_no_metrics_save=1`` in both namespaces so no cell inherits cached
  ssthresh/RTT from an earlier one.
- ``kcptun``: Debian's kcptun-client (client netns, 127.0.0.1:12948) -> kcptun-server
  (server netns) -> 127.0.0.1:8080, ``--mode fast --crypt aes`` with the same key on both
  ends, ``--nocomp`` (the payload is random), default FEC (10 data + 3 parity shards) and
  ``--mtu 1350``: kcptun's MTU is the UDP payload, so packets are 1378 bytes on the wire,
  under the lab's 1400-byte TUN MTU. Fast mode has no congestion control, so the window
  is what paces it: both ends get ``--sndwnd/--rcvwnd`` = ceil((C x RTT / 8 + queue) /
  1350), i.e. the path's BDP plus its queue, as a careful user would tune it (the client
  default rcvwnd of 512 would cap a download at ~9 Mbit/s at 600 ms); ``--kcptun-window
  N`` fixes both instead. kcptun sends its window in bursts, so at 600 ms RTT much of it
  overflows the 100 ms queue (relay stats show the drops as "queue", not "loss").

Queue: 100 ms of the bottleneck (250,000 bytes at 20 Mbit/s), the same as
``scripts/bench_sim.py`` so lab and simulator numbers line up. A router does not know the
RTT of the flows through it: 100 ms is 2 x BDP at 50 ms RTT and 1/6 BDP at 600 ms (a
BDP-sized queue at 600 ms would add up to 600 ms of queueing delay). ``--queue-ms``
changes it.

Goodput sweep (one cell = system x loss x RTT; the systems take turns within each
(loss, RTT) so slow drifts in CPU load hit all of them alike):

1. The link is set to the cell's RTT and rate with NO loss, the system's client side is
   started fresh (a new resip-proxy and so a new session, new kcptun processes, the cell's
   congestion control), and curl starts; the cell waits (up to 30 s) for the first byte.
   So no system pays for its connection set-up (TCP or TLS handshakes) at 90 % loss: the
   sweep measures steady-state transfer, not connection establishment.
2. Loss p is switched on (both directions); after a warm-up the bytes curl receives during
   a fixed window are counted: goodput = bytes x 8 / window. Windows: 4 s warm-up + 10 s
   at 50 ms RTT, 10 s + 12 s at 600 ms (``--quick``: 3 s + 6 s, 6 s + 8 s); other RTTs
   get max(4, 16 RTT) s + max(10, 20 RTT) s; at 90 % loss the warm-up is at least 60 s
   for every system (learning a loss rate that high takes many round trips; bench_sim
   measures after 80 s). ``--warmup`` / ``--window`` override. A
   transfer that makes no progress in the window reports 0.
3. efficiency eta = goodput / ((1 - p) x C). The relay drops before the queue (a lossy
   radio hop in front of the bottleneck), so a sender that pushes more than C into the
   link still gets up to C through: eta can exceed 1, up to 1 / (1 - p).

Scenarios, per system, on a 20 Mbit/s, 5 % loss, 100 ms RTT link (same queue), each with
a fresh client side; once data flows and 5 s have passed:

- ``blackhole``: every packet is dropped for 60 s (``--blackhole S``); reported: the time
  from the end of the blackhole until the first new byte reaches curl (and the goodput of
  the 5 s after that), or "never" if none arrives within ``--recovery-limit`` s (default
  120) or curl gave up;
- ``address_change``: ``lab.move_client(drop_old=True)`` (the client's address is
  replaced, like a laptop changing networks); the transfer survives if 256 KiB more
  arrive within ``--move-limit`` s (default 45); reported: yes/no and the time until then.

``--quick`` shortens these to a 10 s blackhole, 30 s recovery limit and 20 s move limit.

Output: Markdown tables on stdout (goodput and eta per cell, the ratio ResIP / best other
system per cell, the scenarios), JSON (``--json``, default ./bench-lab.json) shaped
``{"rows": [{"system", "loss", "rtt_ms", "goodput_mbit", "efficiency"}], "scenarios":
[{"system", "scenario", ...}]}`` with loss as a fraction, and a PNG (``--plot``, default
./bench-lab.png) of goodput against loss, one line per system, one panel per RTT.
The full run takes about 30 minutes; ``--quick`` (p in {0, 10, 50} %, RTT 50 ms, short
windows, short scenarios) about 6. All processes share the machine's cores with the relay
(Python, as are resip-server and resip-proxy), so ResIP's goodput is partly CPU-bound:
a busy machine lowers it, and only ResIP's.

``RESIP_LAB_VERBOSE=1`` makes resip-proxy log every transport decision (see ``--logs``).

Usage::

    sudo scripts/install-bench-deps      # kcptun, iperf3, curl (apt) + matplotlib (.venv)
    sudo scripts/bench_lab.py [--quick] [--systems resip,tcp-bbr] [--loss 0,10] [--rtt 50]
                              [--blackhole 60] [--no-sweep] [--no-scenarios] [--logs DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
if __name__ == "__main__" and VENV_PYTHON.exists() and Path(sys.prefix) != VENV_PYTHON.parents[1]:
    # `sudo scripts/bench_lab.py` starts the system Python: use the project's venv, where
    # resip's dependencies (and matplotlib, from the `bench` extra) live.
    os.execv(VENV_PYTHON, [str(VENV_PYTHON), __file__, *sys.argv[1:]])
sys.path.insert(0, str(ROOT))

from resip.testing import labstack  # noqa: E402

NETLAB = ROOT / "scripts" / "netlab"
RATE_BPS = 20e6
HTTP_PORT = 8080
PROXY_LISTEN = "127.0.0.1:1080"
KCP_LOCAL_PORT = 12948
KCP_SERVER_PORT = 29900
KCP_MTU = 1350
ALL_SYSTEMS = ("resip", "tcp-cubic", "tcp-bbr", "kcptun")
SWEEP_LOSS = (0.0, 0.01, 0.05, 0.10, 0.20, 0.30, 0.50, 0.90)
SWEEP_RTT = (50, 600)
QUICK_LOSS = (0.0, 0.10, 0.50)
QUICK_RTT = (50,)
SCENARIO_LOSS = 0.05
SCENARIO_RTT = 100
#: Seconds of steady transfer before a scenario's event.
SCENARIO_LEAD = 5.0
#: New bytes after an address change that count as "the transfer goes on".
ADDRESS_CHANGE_BYTES = 256 << 10
FIRST_BYTE_TIMEOUT = 30.0


netlab = labstack.load_netlab(NETLAB)


# -- the systems -----------------------------------------------------------------------------


@dataclass
class Bench:
    """The lab, the long-lived processes in it, and the run's settings."""

    lab: Any
    workdir: Path
    queue_bytes: int
    file_name: str = "blob"

    def link(self, *, rtt_ms: float, loss: float) -> None:
        """Both directions: rate C, the queue, loss, one-way delay RTT/2, no events."""
        self.lab.reset()
        self.lab.set(
            loss=loss, delay=rtt_ms / 2000, rate_bps=RATE_BPS, queue_bytes=self.queue_bytes
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
        """Per cell, on a clean link: fresh client-side state."""

    def curl_args(self, bench: Bench) -> list[str]:
        raise NotImplementedError

    def stop(self, bench: Bench) -> None:
        """Per cell: stop what ``start`` started."""


class Resip(System):
    name = "resip"

    def __init__(self) -> None:
        self.uri = ""
        self.proxy: labstack.Proxy | None = None
        self.server_log: labstack.LogTail | None = None
        self.sessions = 0

    def setup(self, bench: Bench) -> None:
        server = labstack.init_server(
            bench.workdir,
            bench.lab.server_addr,
            ["127.0.0.0/8", f"{bench.lab.server_addr}/32"],
        )
        self.uri = server.uri
        self.server_log = labstack.start_server(bench.lab, server.config)

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

    def stop(self, bench: Bench) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            with (bench.workdir / "resip-proxy.log").open("a") as f:
                f.write(f"--- proxy {self.sessions}\n{self.proxy.log.text()}\n")
            self.proxy = None


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
        self.procs: list[subprocess.Popen[Any]] = []
        #: Fixed --sndwnd/--rcvwnd, or 0: sized per cell (see the module docstring).
        self.fixed_window = window
        self.window = 0

    def unavailable(self) -> str | None:
        missing = [b for b in ("kcptun-server", "kcptun-client") if shutil.which(b) is None]
        if missing:
            return f"{' and '.join(missing)} not found (scripts/install-bench-deps installs kcptun)"
        return None

    def start(self, bench: Bench, rtt_ms: float) -> None:
        bdp = RATE_BPS / 8 * rtt_ms / 1000
        self.window = self.fixed_window or max(128, math.ceil((bdp + bench.queue_bytes) / KCP_MTU))
        options = {
            "--key": self.key,
            "--crypt": "aes",
            "--mode": "fast",
            "--mtu": str(KCP_MTU),
            "--sndwnd": str(self.window),
            "--rcvwnd": str(self.window),
        }
        common = [*(x for pair in options.items() for x in pair), "--nocomp", "--quiet"]
        server = f"{bench.lab.server_addr}:{KCP_SERVER_PORT}"
        logs = bench.workdir / "kcptun.log"
        with logs.open("a") as log:
            for where, cmd in (
                (
                    "server",
                    ["kcptun-server", "-l", f":{KCP_SERVER_PORT}", "-t", f"127.0.0.1:{HTTP_PORT}"],
                ),
                ("client", ["kcptun-client", "-l", f"127.0.0.1:{KCP_LOCAL_PORT}", "-r", server]),
            ):
                self.procs.append(bench.lab.popen(where, [*cmd, *common], stdout=log, stderr=log))
        if not labstack.wait_tcp(bench.lab, "client", "127.0.0.1", KCP_LOCAL_PORT, 15):
            raise RuntimeError(f"kcptun-client is not listening (see {logs})")

    def curl_args(self, bench: Bench) -> list[str]:
        return [f"http://127.0.0.1:{KCP_LOCAL_PORT}/{bench.file_name}"]

    def stop(self, bench: Bench) -> None:
        for proc in self.procs:
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


# -- sweep ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    warmup: float
    window: float


#: Warm-up at 90 % loss and above: a loss-based controller needs many round trips of
#: samples before it trusts a loss rate that high (bench_sim measures after 80 s).
HEAVY_LOSS = 0.9
HEAVY_LOSS_WARMUP = 60.0


def windows_for(rtt_ms: int, args: argparse.Namespace, loss: float = 0.0) -> Windows:
    if args.quick:
        warm, win = {50: (3.0, 6.0), 600: (6.0, 8.0)}.get(rtt_ms, (4.0, 8.0))
    else:
        default = (max(4.0, round(16 * rtt_ms / 1000)), max(10.0, round(20 * rtt_ms / 1000)))
        warm, win = {50: (4.0, 10.0), 600: (10.0, 12.0)}.get(rtt_ms, default)
        if loss >= HEAVY_LOSS:
            warm = max(warm, HEAVY_LOSS_WARMUP)
    return Windows(
        args.warmup if args.warmup is not None else warm,
        args.window if args.window is not None else win,
    )


@dataclass
class Report:
    rows: list[dict[str, Any]] = field(default_factory=list)
    scenarios: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def measure_cell(
    bench: Bench, system: System, loss: float, rtt_ms: int, win: Windows, report: Report
) -> float:
    """Goodput in Mbit/s of one cell (0 when nothing moved); see the module docstring."""
    bench.link(rtt_ms=rtt_ms, loss=0.0)
    with cell(bench, system, rtt_ms):
        dl = labstack.CurlDownload(
            bench.lab, system.curl_args(bench), FIRST_BYTE_TIMEOUT + 60 + win.warmup + win.window
        )
        try:
            if dl.wait_bytes(1, FIRST_BYTE_TIMEOUT) is None:
                report.problems.append(
                    f"{system.name} loss={loss:.0%} rtt={rtt_ms}: no byte on the clean link "
                    f"within {FIRST_BYTE_TIMEOUT:.0f} s ({dl.outcome()})"
                )
                return 0.0
            bench.lab.set(loss=loss)
            time.sleep(win.warmup)
            t0, b0 = time.monotonic(), dl.total
            time.sleep(win.window)
            t1, b1 = time.monotonic(), dl.total
            if dl.ended is not None and dl.ended < t1:
                report.problems.append(
                    f"{system.name} loss={loss:.0%} rtt={rtt_ms}: transfer ended inside the "
                    f"window ({dl.outcome()}); goodput is a lower bound"
                )
            return (b1 - b0) * 8 / (t1 - t0) / 1e6
        finally:
            dl.stop()


def run_sweep(
    bench: Bench,
    systems: list[System],
    losses: Sequence[float],
    rtts: Sequence[int],
    args: argparse.Namespace,
    report: Report,
) -> None:
    total = len(systems) * len(losses) * len(rtts)
    n = 0
    for rtt in rtts:
        for loss in losses:
            win = windows_for(rtt, args, loss)
            for system in systems:
                n += 1
                started = time.monotonic()
                try:
                    goodput = measure_cell(bench, system, loss, rtt, win, report)
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    report.problems.append(f"{system.name} loss={loss:.0%} rtt={rtt}: {exc}")
                    goodput = 0.0
                eff = goodput / ((1 - loss) * RATE_BPS / 1e6) if loss < 1 else 0.0
                report.rows.append(
                    {
                        "system": system.name,
                        "loss": loss,
                        "rtt_ms": rtt,
                        "goodput_mbit": round(goodput, 3),
                        "efficiency": round(eff, 3),
                    }
                )
                print(
                    f"[{n}/{total}] {system.name:<9} rtt {rtt:>4} ms loss {loss:>4.0%}: "
                    f"{goodput:6.2f} Mbit/s, eta {eff:.2f}  ({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )


# -- scenarios -------------------------------------------------------------------------------


def scenario_blackhole(bench: Bench, system: System, hole: float, limit: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system.name,
        "scenario": "blackhole",
        "blackhole_s": hole,
        "loss": SCENARIO_LOSS,
        "rtt_ms": SCENARIO_RTT,
        "limit_s": limit,
    }
    bench.link(rtt_ms=SCENARIO_RTT, loss=SCENARIO_LOSS)
    with cell(bench, system, SCENARIO_RTT):
        dl = labstack.CurlDownload(
            bench.lab, system.curl_args(bench), 60 + SCENARIO_LEAD + hole + limit
        )
        try:
            if dl.wait_bytes(1, FIRST_BYTE_TIMEOUT) is None:
                return {
                    **result,
                    "resumed": False,
                    "resumed_after_s": None,
                    "note": f"no data before the blackhole ({dl.outcome()})",
                }
            time.sleep(SCENARIO_LEAD)
            bench.lab.set(blackhole=True)
            began = time.monotonic()
            time.sleep(hole)
            bench.lab.set(blackhole=False)
            ended = time.monotonic()
            at_end = dl.total
            # Packets already past the relay's decision still arrive in the first moments.
            leaked = at_end - dl.bytes_at(began + min(1.0, hole / 2))
            back = dl.wait_bytes(at_end + 1, limit)
            if back is None:
                return {
                    **result,
                    "resumed": False,
                    "resumed_after_s": None,
                    "leaked_bytes": leaked,
                    "note": dl.outcome(),
                }
            # How fast it goes once back: the 5 s after the first new byte.
            time.sleep(max(0.0, back + 5 - time.monotonic()))
            after = (dl.bytes_at(back + 5) - dl.bytes_at(back)) * 8 / 5 / 1e6
            return {
                **result,
                "resumed": True,
                "resumed_after_s": round(back - ended, 2),
                "goodput_after_mbit": round(after, 2),
                "leaked_bytes": leaked,
                "note": dl.outcome(),
            }
        finally:
            dl.stop()


def scenario_address_change(bench: Bench, system: System, limit: float) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": system.name,
        "scenario": "address_change",
        "loss": SCENARIO_LOSS,
        "rtt_ms": SCENARIO_RTT,
        "limit_s": limit,
    }
    lab = bench.lab
    bench.link(rtt_ms=SCENARIO_RTT, loss=SCENARIO_LOSS)
    with cell(bench, system, SCENARIO_RTT):
        dl = labstack.CurlDownload(lab, system.curl_args(bench), 60 + SCENARIO_LEAD + limit)
        try:
            if dl.wait_bytes(1, FIRST_BYTE_TIMEOUT) is None:
                return {
                    **result,
                    "survived": False,
                    "resumed_after_s": None,
                    "note": f"no data before the move ({dl.outcome()})",
                }
            time.sleep(SCENARIO_LEAD)
            at = dl.total
            moved = time.monotonic()
            lab.move_client(netlab.CLIENT_ADDR2, drop_old=True)
            back = dl.wait_bytes(at + ADDRESS_CHANGE_BYTES, limit)
            if back is None:
                return {**result, "survived": False, "resumed_after_s": None, "note": dl.outcome()}
            return {
                **result,
                "survived": True,
                "resumed_after_s": round(back - moved, 2),
                "note": dl.outcome(),
            }
        finally:
            dl.stop()
            if lab.client_addrs[0] != netlab.CLIENT_ADDR:
                lab.move_client(netlab.CLIENT_ADDR, drop_old=True)


def run_scenarios(
    bench: Bench, systems: list[System], args: argparse.Namespace, report: Report
) -> None:
    for system in systems:
        for name in ("blackhole", "address_change"):
            started = time.monotonic()
            try:
                if name == "blackhole":
                    row = scenario_blackhole(bench, system, args.blackhole, args.recovery_limit)
                else:
                    row = scenario_address_change(bench, system, args.move_limit)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report.problems.append(f"{system.name} {name}: {exc}")
                row = {"system": system.name, "scenario": name, "error": str(exc)}
            report.scenarios.append(row)
            print(
                f"[scenario] {system.name:<9} {name}: {scenario_summary(row)}  "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


def scenario_summary(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"error: {row['error']}"
    if row["scenario"] == "blackhole":
        if row["resumed"]:
            return f"data again {row['resumed_after_s']:.1f} s after the link returned"
        return f"never (within {row['limit_s']:.0f} s): {row.get('note', '')}"
    if row["survived"]:
        return f"yes, data again after {row['resumed_after_s']:.1f} s"
    return f"no (nothing within {row['limit_s']:.0f} s): {row.get('note', '')}"


# -- output ----------------------------------------------------------------------------------


def markdown(report: Report, losses: Sequence[float], rtts: Sequence[int], args: Any) -> str:
    out: list[str] = []
    systems = list(dict.fromkeys(r["system"] for r in report.rows))
    cells = {(r["system"], r["rtt_ms"], r["loss"]): r for r in report.rows}
    if report.rows:
        wins = ", ".join(
            f"{rtt} ms: {w.warmup:g} s warm-up + {w.window:g} s window"
            for rtt in rtts
            for w in [windows_for(rtt, args)]
        )
        out.append(
            f"Goodput Mbit/s (efficiency eta = goodput / ((1 - p) x C)), C = "
            f"{RATE_BPS / 1e6:g} Mbit/s each way, queue {args.queue_ms:g} ms; measured after "
            f"the loss was switched on: {wins}"
            + (
                " (warm-up 60 s at 90 % loss)"
                if not args.quick and max(losses) >= HEAVY_LOSS
                else ""
            )
            + ". Loss is applied before the queue, so eta "
            "can exceed 1 (a sender pushing more than C still gets up to C through)\n"
        )
        out.append("| system | RTT ms | " + " | ".join(f"{p:.0%}" for p in losses) + " |")
        out.append("|---|---:|" + "---:|" * len(losses))
        for system in systems:
            for rtt in rtts:
                vals = []
                for p in losses:
                    r = cells.get((system, rtt, p))
                    vals.append(
                        "-" if r is None else f"{r['goodput_mbit']:.2f} ({r['efficiency']:.2f})"
                    )
                out.append(f"| {system} | {rtt} | " + " | ".join(vals) + " |")
        others = [s for s in systems if s != "resip"]
        if "resip" in systems and others:
            out.append("\nResIP goodput / best other system's goodput (which one)\n")
            out.append("| RTT ms | " + " | ".join(f"{p:.0%}" for p in losses) + " |")
            out.append("|---:|" + "---:|" * len(losses))
            for rtt in rtts:
                vals = []
                for p in losses:
                    ours = cells.get(("resip", rtt, p))
                    theirs = [cells[(s, rtt, p)] for s in others if (s, rtt, p) in cells]
                    if ours is None or not theirs:
                        vals.append("-")
                        continue
                    best = max(theirs, key=lambda r: r["goodput_mbit"])
                    if best["goodput_mbit"] > 0:
                        ratio = f"{ours['goodput_mbit'] / best['goodput_mbit']:.2f}x"
                    else:
                        ratio = "inf" if ours["goodput_mbit"] > 0 else "0/0"
                    vals.append(f"{ratio} ({best['system']})")
                out.append(f"| {rtt} | " + " | ".join(vals) + " |")
    if report.scenarios:
        out.append(
            f"\nScenarios ({RATE_BPS / 1e6:g} Mbit/s, {SCENARIO_LOSS:.0%} loss, "
            f"{SCENARIO_RTT} ms RTT; events {SCENARIO_LEAD:g} s into a download)\n"
        )
        out.append(
            f"| system | blackhole {args.blackhole:g} s: data again after | "
            "rate 5 s later | address change: survives | resumed after |"
        )
        out.append("|---|---:|---:|---|---:|")
        by = {(r["system"], r["scenario"]): r for r in report.scenarios}
        for system in dict.fromkeys(r["system"] for r in report.scenarios):
            bh = by.get((system, "blackhole"))
            ac = by.get((system, "address_change"))
            bh_rate = "-"
            if bh is None:
                bh_text = "-"
            elif "error" in bh:
                bh_text = f"error: {bh['error'][:60]}"
            elif bh["resumed"]:
                bh_text = f"{bh['resumed_after_s']:.1f} s"
                bh_rate = f"{bh['goodput_after_mbit']:.2f} Mbit/s"
            else:
                bh_text = f"never (> {bh['limit_s']:g} s)"
            if ac is None:
                ac_text, ac_time = "-", "-"
            elif "error" in ac:
                ac_text, ac_time = f"error: {ac['error'][:60]}", "-"
            elif ac["survived"]:
                ac_text, ac_time = "yes", f"{ac['resumed_after_s']:.1f} s"
            else:
                ac_text, ac_time = "no", f"never (> {ac['limit_s']:g} s)"
            out.append(f"| {system} | {bh_text} | {bh_rate} | {ac_text} | {ac_time} |")
    return "\n".join(out)


def plot(report: Report, path: Path, rtts: Sequence[int]) -> str | None:
    """Draw the PNG; return why not, or None."""
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (scripts/install-bench-deps): no plot"
    rtts = [r for r in rtts if any(row["rtt_ms"] == r for row in report.rows)]
    if not rtts:
        return "no sweep rows: no plot"
    fig, axes = plt.subplots(1, len(rtts), figsize=(6 * len(rtts), 4.5), squeeze=False)
    for ax, rtt in zip(axes[0], rtts, strict=True):
        rows = [r for r in report.rows if r["rtt_ms"] == rtt]
        losses = sorted({r["loss"] for r in rows})
        ax.plot(
            [p * 100 for p in losses],
            [(1 - p) * RATE_BPS / 1e6 for p in losses],
            color="grey",
            linestyle=":",
            label="(1 - p) x C",
        )
        for system in dict.fromkeys(r["system"] for r in rows):
            pts = sorted((r["loss"], r["goodput_mbit"]) for r in rows if r["system"] == system)
            ax.plot([p * 100 for p, _ in pts], [g for _, g in pts], marker="o", label=system)
        ax.set_title(f"RTT {rtt} ms, {RATE_BPS / 1e6:g} Mbit/s bottleneck")
        ax.set_xlabel("random loss each way, %")
        ax.set_ylabel("goodput, Mbit/s")
        ax.set_ylim(bottom=0)
        ax.grid(visible=True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# -- main ------------------------------------------------------------------------------------


def parse_list(text: str, kind: type[float] | type[int] | type[str]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="The module docstring (scripts/bench_lab.py) explains the method.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="p in {0,10,50} %%, RTT 50 ms, short windows"
    )
    parser.add_argument(
        "--systems", default=",".join(ALL_SYSTEMS), help=f"comma list of {', '.join(ALL_SYSTEMS)}"
    )
    parser.add_argument("--loss", help="comma list of loss percentages, e.g. 0,10,50")
    parser.add_argument("--rtt", help="comma list of RTTs in ms, e.g. 50,600")
    parser.add_argument("--warmup", type=float, help="seconds after the loss starts")
    parser.add_argument("--window", type=float, help="measuring window, seconds")
    parser.add_argument(
        "--queue-ms",
        type=float,
        default=100.0,
        help="bottleneck queue in ms of C (default 100 = 250,000 bytes)",
    )
    parser.add_argument(
        "--blackhole", type=float, help="outage seconds (default 60; 10 with --quick)"
    )
    parser.add_argument(
        "--recovery-limit",
        type=float,
        help="seconds after the blackhole before 'never' (default 120; 30 with --quick)",
    )
    parser.add_argument(
        "--move-limit",
        type=float,
        help="seconds after an address change before 'no' (default 45; 20 with --quick)",
    )
    parser.add_argument(
        "--kcptun-window", type=int, default=0, help="fixed kcptun windows (default: per cell)"
    )
    parser.add_argument("--logs", type=Path, help="keep the server/proxy/kcptun logs here")
    parser.add_argument("--no-sweep", action="store_true", help="scenarios only")
    parser.add_argument("--no-scenarios", action="store_true", help="goodput sweep only")
    parser.add_argument("--json", type=Path, default=Path("bench-lab.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench-lab.png"))
    parser.add_argument("--seed", type=int, default=7, help="the relay's loss RNG")
    args = parser.parse_args()
    for name, full, quick in (
        ("blackhole", 60.0, 10.0),
        ("recovery_limit", 120.0, 30.0),
        ("move_limit", 45.0, 20.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    losses = [p / 100 for p in parse_list(args.loss, float)] if args.loss else None
    losses = losses or list(QUICK_LOSS if args.quick else SWEEP_LOSS)
    rtts = parse_list(args.rtt, int) if args.rtt else list(QUICK_RTT if args.quick else SWEEP_RTT)
    names = parse_list(args.systems, str)
    unknown = [n for n in names if n not in ALL_SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(ALL_SYSTEMS)}")

    reason = netlab.unavailable_reason()
    if reason is not None:
        print(f"bench_lab: the lab {reason}; nothing to measure", file=sys.stderr)
        return 2
    if shutil.which("curl") is None:
        print("bench_lab: curl is missing (scripts/install-bench-deps)", file=sys.stderr)
        return 2
    systems: list[System] = []
    for name in names:
        system = make_system(name, args)
        why = system.unavailable()
        if why is None:
            systems.append(system)
        else:
            print(f"bench_lab: skipping {name}: {why}", file=sys.stderr)
    if not systems:
        print("bench_lab: no system to measure", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "bench_lab: matplotlib is missing (scripts/install-bench-deps): no plot",
            file=sys.stderr,
        )

    queue_bytes = int(RATE_BPS / 8 * args.queue_ms / 1000)
    wins = [windows_for(r, args, p) for r in rtts for p in losses]
    # Enough file that no transfer ends inside its window: the longest sweep cell (first
    # byte + warm-up + window) or a scenario (~25 s of data), at C, with margin.
    longest = max([25.0, *(5 + w.warmup + w.window for w in wins)])
    file_size = max(64 << 20, int(RATE_BPS / 8 * (longest + 15) * 1.2))
    plan = [f"systems {', '.join(s.name for s in systems)}; queue {queue_bytes} bytes"]
    seconds = 0.0
    if not args.no_sweep:
        plan.append(
            f"sweep: loss {', '.join(f'{p:.0%}' for p in losses)} x RTT "
            f"{', '.join(map(str, rtts))} ms"
        )
        seconds += len(systems) * sum(
            w.warmup + w.window + 4 for r in rtts for p in losses for w in [windows_for(r, args, p)]
        )
    if not args.no_scenarios:
        plan.append(f"scenarios: blackhole {args.blackhole:g} s, address change")
        seconds += len(systems) * (2 * (SCENARIO_LEAD + 8) + args.blackhole + 30)
    plan.append(f"about {seconds / 60:.0f} min")
    print(f"bench_lab: {'; '.join(plan)}", file=sys.stderr, flush=True)

    report = Report()
    with tempfile.TemporaryDirectory(prefix="resip-bench-lab-") as tmp:
        work = Path(tmp)
        www = work / "www"
        www.mkdir()
        labstack.write_random_file(www / "blob", file_size)
        try:
            ccs = [s.cc for s in systems if isinstance(s, KernelTcp)]
            with allow_congestion_controls(ccs), netlab.Lab(seed=args.seed) as lab:
                bench = Bench(lab, work, queue_bytes)
                for ns in ("client", "server"):
                    bench.sysctl(ns, "net.ipv4.tcp_no_metrics_save", "1")
                labstack.start_http_server(
                    lab,
                    www,
                    bind="0.0.0.0",
                    port=HTTP_PORT,
                )
                for system in systems:
                    system.setup(bench)
                if not args.no_sweep:
                    run_sweep(bench, systems, losses, rtts, args, report)
                if not args.no_scenarios:
                    run_scenarios(bench, systems, args, report)
        except KeyboardInterrupt:
            print("bench_lab: interrupted; reporting what was measured", file=sys.stderr)
        finally:
            for system in systems:
                if isinstance(system, Resip) and system.server_log is not None:
                    system.server_log.close()
                    (work / "resip-server.log").write_text(system.server_log.text())
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in work.glob("*.log"):
                    shutil.copy(log, args.logs / log.name)
                print(f"bench_lab: logs in {args.logs}", file=sys.stderr)

    print(markdown(report, losses, rtts, args))
    with args.json.open("w") as f:
        json.dump({"rows": report.rows, "scenarios": report.scenarios}, f, indent=1)
    print(f"\nJSON: {args.json}", file=sys.stderr)
    why_not = plot(report, args.plot, rtts)
    print(f"bench_lab: {why_not}" if why_not else f"plot: {args.plot}", file=sys.stderr)
    if report.problems:
        print("\nProblems:", file=sys.stderr)
        for problem in report.problems:
            print(f"- {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

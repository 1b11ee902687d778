#!/usr/bin/env python3
"""ResIP against kernel TCP (cubic, bbr) and kcptun on the impaired-link lab (needs root).

Everything runs over the same ``scripts/netlab`` link: two network namespaces, "client"
(10.200.1.2) and "server" (10.200.2.1), joined by a userspace relay that imposes, each way,
a bottleneck of C = 20 or 100 Mbit/s behind a tail-drop queue, random loss p (before the
queue) and a one-way delay of RTT/2. The server namespace runs ``python -m http.server``
on 0.0.0.0:8080 serving one random (os.urandom, incompressible: zstd cannot shorten it)
file; every system downloads it with curl in the client namespace:

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

Queue: 100 ms of the bottleneck (250,000 bytes at 20 Mbit/s, 1,250,000 at 100), the same
as ``scripts/bench_sim.py`` so lab and simulator numbers line up. A router does not know
the RTT of the flows through it: 100 ms is 2 x BDP at 50 ms RTT and 1/6 BDP at 600 ms (a
BDP-sized queue at 600 ms would add up to 600 ms of queueing delay). ``--queue-ms``
changes it.

Goodput sweep (one cell = system x rate x loss x RTT; the systems take turns within each
(rate, loss, RTT) so slow drifts in CPU load hit all of them alike). The grid: 20 Mbit/s
at p in {0, 1, 5, 10, 20, 30, 50, 90} %, 100 Mbit/s at p in {0, 1, 10, 30} %, both at RTT
50 and 600 ms. ``--rates 100`` keeps one rate's rows, ``--loss`` / ``--rtt`` replace the
loss and RTT lists of every rate chosen (a rate outside the grid gets the 100 Mbit/s lists).

1. The link is set to the cell's rate and RTT with NO loss, the system's client side is
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
4. CPU: utime + stime of each of the system's processes (resip-server and resip-proxy;
   kcptun-server and kcptun-client; kernel TCP has no user process: its cost is kernel
   time in softirq, not attributable) read from ``/proc/PID/stat`` at the start and the
   end of the window, reported as CPU seconds per GiB that curl received in the window,
   and as cores (CPU seconds per second). curl, http.server and the relay, the same for
   every system, are not counted (the relay's cores are in the JSON as ``relay_cores``).

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

Output: Markdown tables on stdout, per rate (goodput and eta per cell, the ratio ResIP /
best other system per cell, CPU s/GiB per process per cell), then the scenarios; JSON
(``--json``, default ./bench-lab.json) shaped ``{"rows": [{"system", "rate_mbit", "loss",
"rtt_ms", "goodput_mbit", "efficiency", "cpu_s_per_gib": {process: x}, "cpu_cores":
{process: x}, "relay_cores"}], "scenarios": [{"system", "scenario", ...}]}`` with loss as
a fraction; and a PNG (``--plot``, default ./bench-lab.png) of goodput against loss, one
line per system, one panel per rate and RTT. The full run takes about 45 minutes;
``--quick`` (20 Mbit/s at p in {0, 10, 50} % and 100 Mbit/s at {0, 10} %, RTT 50 ms,
short windows, short scenarios) about 8. A reduced run, e.g. ``--rates 100 --loss 0,10
--rtt 50 --no-scenarios``, takes 3. All processes share the machine's cores with the
relay (Python, as are resip-server and resip-proxy), so ResIP's goodput is partly
CPU-bound: a busy machine lowers it, and only ResIP's.

``RESIP_LAB_VERBOSE=1`` makes resip-proxy log every transport decision (see ``--logs``).

Usage::

    sudo scripts/install-bench-deps      # kcptun, iperf3, curl (apt) + matplotlib (.venv)
    sudo scripts/bench_lab.py [--quick] [--systems resip,tcp-bbr] [--rates 20,100]
                              [--loss 0,10] [--rtt 50] [--warmup S] [--window S]
                              [--blackhole 60] [--no-sweep] [--no-scenarios] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _benchlib as bl

if __name__ == "__main__":
    # `sudo scripts/bench_lab.py` starts the system Python: use the project's venv, where
    # resip's dependencies (and matplotlib, from the `bench` extra) live.
    bl.use_project_venv(__file__)

from _lab_report import Report, Row, markdown, plot
from _lab_scenarios import SCENARIO_LEAD, SCENARIO_LOSS, SCENARIO_RATE, SCENARIO_RTT, run_scenarios
from _lab_systems import (
    ALL_SYSTEMS,
    FIRST_BYTE_TIMEOUT,
    HTTP_PORT,
    Bench,
    KernelTcp,
    System,
    allow_congestion_controls,
    cell,
    make_system,
)

from resip.lab import labstack

NETLAB = bl.ROOT / "scripts" / "netlab"
#: Link rate (Mbit/s) -> (losses, RTTs in ms) of the full sweep, and of ``--quick``.
SWEEP: dict[float, tuple[tuple[float, ...], tuple[int, ...]]] = {
    20: ((0.0, 0.01, 0.05, 0.10, 0.20, 0.30, 0.50, 0.90), (50, 600)),
    100: ((0.0, 0.01, 0.10, 0.30), (50, 600)),
}
QUICK: dict[float, tuple[tuple[float, ...], tuple[int, ...]]] = {
    20: ((0.0, 0.10, 0.50), (50,)),
    100: ((0.0, 0.10), (50,)),
}


netlab = labstack.load_netlab(NETLAB)


# -- sweep ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    warmup: float
    window: float


@dataclass(frozen=True)
class Cell:
    """One point of the sweep's grid (for every system)."""

    rate_mbit: float
    rtt_ms: int
    loss: float

    def __str__(self) -> str:
        return f"{self.rate_mbit:g} Mbit/s rtt {self.rtt_ms} ms loss {self.loss:.0%}"


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


def sweep_row(
    system: System,
    c: Cell,
    seconds: float,
    nbytes: int,
    cpu: tuple[dict[str, float | None], dict[str, float | None]],
) -> Row:
    """A sweep row: goodput and eta of ``nbytes`` in ``seconds``, CPU between two snapshots."""
    goodput = nbytes * 8 / seconds / 1e6 if seconds > 0 else 0.0
    eff = goodput / ((1 - c.loss) * c.rate_mbit) if c.loss < 1 else 0.0
    return {
        "system": system.name,
        "rate_mbit": c.rate_mbit,
        "loss": c.loss,
        "rtt_ms": c.rtt_ms,
        "goodput_mbit": round(goodput, 3),
        "efficiency": round(eff, 3),
        "cpu_s_per_gib": bl.cpu_per_gib(*cpu, nbytes),
        "cpu_cores": bl.cpu_cores(*cpu, seconds),
    }


def check_pids(system: System, pids: dict[str, int], report: Report) -> None:
    """Note it when a pid is ``ip netns exec`` itself (had it forked, CPU would read 0)."""
    for name, pid in pids.items():
        if bl.process_name(pid) == "ip":
            report.problems.append(f"{system.name}: pid {pid} of {name} is 'ip', not {name}")


def measure_cell(bench: Bench, system: System, c: Cell, win: Windows, report: Report) -> Row:
    """One cell's row (goodput 0 when nothing moved); see the module docstring."""
    bench.link(rate_bps=c.rate_mbit * 1e6, rtt_ms=c.rtt_ms, loss=0.0)
    with cell(bench, system, c.rtt_ms):
        dl = labstack.CurlDownload(
            bench.lab, system.curl_args(bench), FIRST_BYTE_TIMEOUT + 60 + win.warmup + win.window
        )
        try:
            pids = system.pids()
            if dl.wait_bytes(1, FIRST_BYTE_TIMEOUT) is None:
                report.problems.append(
                    f"{system.name} {c}: no byte on the clean link within "
                    f"{FIRST_BYTE_TIMEOUT:.0f} s ({dl.outcome()})"
                )
                return sweep_row(system, c, 0.0, 0, (dict.fromkeys(pids), {}))
            check_pids(system, pids, report)
            bench.lab.set(loss=c.loss)
            time.sleep(win.warmup)
            watched = dict(pids)
            if bench.lab.relay_pid is not None:
                watched["relay"] = bench.lab.relay_pid
            t0, b0, cpu0 = time.monotonic(), dl.total, bl.cpu_snapshot(watched)
            time.sleep(win.window)
            t1, b1, cpu1 = time.monotonic(), dl.total, bl.cpu_snapshot(watched)
            if dl.ended is not None and dl.ended < t1:
                report.problems.append(
                    f"{system.name} {c}: transfer ended inside the window ({dl.outcome()}); "
                    "goodput is a lower bound"
                )
            row = sweep_row(system, c, t1 - t0, b1 - b0, (cpu0, cpu1))
            row["relay_cores"] = row["cpu_cores"].pop("relay", None)
            row["cpu_s_per_gib"].pop("relay", None)
            return row
        finally:
            dl.stop()


def progress(row: Row) -> str:
    """The stderr line of one cell."""
    cpu = ", ".join(
        f"{name} {per_gib:.0f} s/GiB ({row['cpu_cores'][name]:.2f} cores)"
        for name, per_gib in row["cpu_s_per_gib"].items()
        if per_gib is not None
    )
    relay = row.get("relay_cores")
    return (
        f"{row['goodput_mbit']:6.2f} Mbit/s, eta {row['efficiency']:.2f}; "
        f"{cpu or 'no user process'}" + (f"; relay {relay:.2f} cores" if relay else "")
    )


def run_sweep(
    bench: Bench, systems: list[System], cells: Sequence[Cell], args: argparse.Namespace,
    report: Report,
) -> None:  # fmt: skip
    total = len(systems) * len(cells)
    n = 0
    for c in cells:
        win = windows_for(c.rtt_ms, args, c.loss)
        for system in systems:
            n += 1
            started = time.monotonic()
            try:
                row = measure_cell(bench, system, c, win, report)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                report.problems.append(f"{system.name} {c}: {exc}")
                row = sweep_row(system, c, 0.0, 0, ({}, {}))
            report.rows.append(row)
            print(
                f"[{n}/{total}] {system.name:<9} {c}: {progress(row)}  "
                f"({time.monotonic() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )


# -- main ------------------------------------------------------------------------------------


def parse_list(text: str, kind: type[float] | type[int] | type[str]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick", action="store_true", help="few cells, RTT 50 ms, short windows and scenarios"
    )
    parser.add_argument(
        "--systems", default=",".join(ALL_SYSTEMS), help=f"comma list of {', '.join(ALL_SYSTEMS)}"
    )
    parser.add_argument("--rates", help="comma list of link rates in Mbit/s (default 20,100)")
    parser.add_argument(
        "--loss", "--losses", dest="loss", help="comma list of loss percentages, e.g. 0,10,50"
    )
    parser.add_argument("--rtt", "--rtts", dest="rtt", help="comma list of RTTs in ms, e.g. 50")
    parser.add_argument("--warmup", type=float, help="seconds after the loss starts")
    parser.add_argument("--window", type=float, help="measuring window, seconds")
    parser.add_argument(
        "--queue-ms", type=float, default=100.0,
        help="bottleneck queue in ms of C (default 100 = 250,000 bytes at 20 Mbit/s)",
    )  # fmt: skip
    parser.add_argument(
        "--kcptun-window", type=int, default=0, help="fixed kcptun windows (default: per cell)"
    )
    parser.add_argument("--no-sweep", action="store_true", help="scenarios only")
    parser.add_argument("--seed", type=int, default=7, help="the relay's loss RNG")


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--blackhole", type=float, help="outage seconds (default 60; 10 with --quick)"
    )
    parser.add_argument(
        "--recovery-limit", type=float,
        help="seconds after the blackhole before 'never' (default 120; 30 with --quick)",
    )  # fmt: skip
    parser.add_argument(
        "--move-limit", type=float,
        help="seconds after an address change before 'no' (default 45; 20 with --quick)",
    )  # fmt: skip
    parser.add_argument("--no-scenarios", action="store_true", help="goodput sweep only")
    parser.add_argument("--logs", type=Path, help="keep the server/proxy/kcptun logs here")
    parser.add_argument("--json", type=Path, default=Path("bench-lab.json"))
    parser.add_argument("--plot", type=Path, default=Path("bench-lab.png"))


def parse_args() -> tuple[argparse.Namespace, list[Cell]]:
    """Options (scenario defaults filled in) and the sweep's cells in the order they run."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="The module docstring (scripts/bench_lab.py) explains the method.",
    )
    add_sweep_options(parser)
    add_scenario_options(parser)
    args = parser.parse_args()
    for name, full, quick in (
        ("blackhole", 60.0, 10.0),
        ("recovery_limit", 120.0, 30.0),
        ("move_limit", 45.0, 20.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    unknown = [n for n in parse_list(args.systems, str) if n not in ALL_SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    grid = QUICK if args.quick else SWEEP
    rates = parse_list(args.rates, float) if args.rates else list(grid)
    cells = []
    for rate in rates:
        losses, rtts = grid.get(rate, grid[100])
        if args.loss:
            losses = tuple(p / 100 for p in parse_list(args.loss, float))
        if args.rtt:
            rtts = tuple(parse_list(args.rtt, int))
        cells += [Cell(rate, rtt, loss) for rtt in rtts for loss in losses]
    return args, [] if args.no_sweep else cells


def available_systems(args: argparse.Namespace) -> list[System]:
    """The systems asked for that can run here (a note on stderr for each that cannot)."""
    systems: list[System] = []
    for name in parse_list(args.systems, str):
        system = make_system(name, args)
        why = system.unavailable()
        if why is None:
            systems.append(system)
        else:
            print(f"bench_lab: skipping {name}: {why}", file=sys.stderr)
    return systems


def file_size(cells: Sequence[Cell], args: argparse.Namespace) -> int:
    """Enough file that no transfer ends inside its window, with margin.

    The longest sweep cell (first byte + warm-up + window) at its rate, or a scenario
    (~25 s of data at the scenario rate).
    """
    seconds_at = [(SCENARIO_RATE, 25.0)] if not args.no_scenarios else []
    for c in cells:
        w = windows_for(c.rtt_ms, args, c.loss)
        seconds_at.append((c.rate_mbit, 5 + w.warmup + w.window))
    need = max((rate * 1e6 / 8 * (s + 15) for rate, s in seconds_at), default=0.0)
    return max(64 << 20, int(need * 1.2))


def announce(systems: Sequence[System], cells: Sequence[Cell], args: argparse.Namespace) -> None:
    """The plan and its expected duration, on stderr."""
    plan = [f"systems {', '.join(s.name for s in systems)}; queue {args.queue_ms:g} ms"]
    seconds = 0.0
    if cells:
        rates = dict.fromkeys(c.rate_mbit for c in cells)
        plan.append(f"sweep: {len(cells)} cells at {', '.join(f'{r:g}' for r in rates)} Mbit/s")
        seconds += len(systems) * sum(
            w.warmup + w.window + 4 for c in cells for w in [windows_for(c.rtt_ms, args, c.loss)]
        )
    if not args.no_scenarios:
        plan.append(f"scenarios: blackhole {args.blackhole:g} s, address change")
        seconds += len(systems) * (2 * (SCENARIO_LEAD + 8) + args.blackhole + 30)
    plan.append(f"about {seconds / 60:.0f} min")
    print(f"bench_lab: {'; '.join(plan)}", file=sys.stderr, flush=True)


def run(
    systems: list[System], cells: Sequence[Cell], args: argparse.Namespace, work: Path
) -> Report:
    """Build the lab, serve the random file, run the sweep and the scenarios."""
    report = Report()
    www = work / "www"
    www.mkdir()
    labstack.write_random_file(www / "blob", file_size(cells, args))
    bench = Bench(None, work, args.queue_ms)
    try:
        ccs = [s.cc for s in systems if isinstance(s, KernelTcp)]
        with allow_congestion_controls(ccs), netlab.Lab(seed=args.seed) as lab:
            bench.lab = lab
            for ns in ("client", "server"):
                bench.sysctl(ns, "net.ipv4.tcp_no_metrics_save", "1")
            labstack.start_http_server(lab, www, bind="0.0.0.0", port=HTTP_PORT)
            for system in systems:
                system.setup(bench)
            if cells:
                run_sweep(bench, systems, cells, args, report)
            if not args.no_scenarios:
                run_scenarios(bench, systems, args, report)
    except KeyboardInterrupt:
        print("bench_lab: interrupted; reporting what was measured", file=sys.stderr)
    finally:
        for system in systems:
            system.close(bench)
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in work.glob("*.log"):
                shutil.copy(log, args.logs / log.name)
            print(f"bench_lab: logs in {args.logs}", file=sys.stderr)
    return report


def describe_rate(cells: Sequence[Cell], args: argparse.Namespace) -> Any:
    """The sentence above each rate's goodput table."""

    def describe(rate: float) -> str:
        mine = [c for c in cells if c.rate_mbit == rate]
        rtts = sorted({c.rtt_ms for c in mine})
        wins = ", ".join(
            f"{rtt} ms: {w.warmup:g} s warm-up + {w.window:g} s window"
            for rtt in rtts
            for w in [windows_for(rtt, args)]
        )
        heavy = not args.quick and any(c.loss >= HEAVY_LOSS for c in mine)
        return (
            f"Goodput Mbit/s (efficiency eta = goodput / ((1 - p) x C)), C = {rate:g} Mbit/s "
            f"each way, queue {args.queue_ms:g} ms; measured after the loss was switched on: "
            f"{wins}" + (" (warm-up 60 s at 90 % loss)" if heavy else "") + ". Loss is applied "
            "before the queue, so eta can exceed 1 (a sender pushing more than C still gets "
            "up to C through)"
        )

    return describe


def output(report: Report, cells: Sequence[Cell], args: argparse.Namespace) -> None:
    """Markdown on stdout, the JSON and the plot files, the problems on stderr."""
    scenario = (
        f"Scenarios ({SCENARIO_RATE:g} Mbit/s, {SCENARIO_LOSS:.0%} loss, {SCENARIO_RTT} ms RTT; "
        f"events {SCENARIO_LEAD:g} s into a download)"
    )
    rates = list(dict.fromkeys(c.rate_mbit for c in cells))
    print(markdown(report, rates=rates, describe=describe_rate(cells, args), scenario=scenario))
    with args.json.open("w") as f:
        json.dump({"rows": report.rows, "scenarios": report.scenarios}, f, indent=1)
    print(f"\nJSON: {args.json}", file=sys.stderr)
    why_not = plot(report, args.plot)
    print(f"bench_lab: {why_not}" if why_not else f"plot: {args.plot}", file=sys.stderr)
    if report.problems:
        print("\nProblems:", file=sys.stderr)
        for problem in report.problems:
            print(f"- {problem}", file=sys.stderr)


def main() -> int:
    args, cells = parse_args()
    reason = netlab.unavailable_reason()
    if reason is not None:
        print(f"bench_lab: the lab {reason}; nothing to measure", file=sys.stderr)
        return 2
    if shutil.which("curl") is None:
        print("bench_lab: curl is missing (scripts/install-bench-deps)", file=sys.stderr)
        return 2
    systems = available_systems(args)
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
    announce(systems, cells, args)
    with tempfile.TemporaryDirectory(prefix="resip-bench-lab-") as tmp:
        report = run(systems, cells, args, Path(tmp))
    output(report, cells, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Loopback benchmark: direct TCP vs microsocks vs ResIP, one channel each, with CPU cost.

For each system: the throughput of one download (default 64 MiB of os.urandom bytes, so
no compression can shortcut it), the CPU seconds per GiB that each of its processes spent
during that download, and the p50 latency of 200 round trips of 100 bytes to an echo
server. Everything is on 127.0.0.1 and free ephemeral ports; nothing binds 0.0.0.0.

- ``direct``: the client connects to the local servers itself (no process in between).
- ``microsocks``: ``/usr/bin/microsocks`` (Debian package ``microsocks``) as a SOCKS5
  proxy; skipped with a note on stderr when it is not installed (nothing is installed).
- ``resip``: as deployed, two processes: ``resip-server run`` on a config from
  ``resip-server init --dir D --public-host 127.0.0.1 --listen-host 127.0.0.1`` (API and
  ResIP ports free ephemeral ones, the ACL opened to 127.0.0.0/8 and ``allow_internet``
  off), and ``resip-proxy run --listen 127.0.0.1:0`` on a config from ``resip-proxy init
  URI --config F``, used as a SOCKS5 proxy. Started by ``resip.lab.labstack``, the
  functions the namespace lab uses, on a loopback stand-in for the lab.
- ``resip-demo``: ``resip-proxy demo`` (server and proxy in one process, throwaway keys).

CPU: utime + stime of each process from ``/proc/PID/stat`` just before and just after
the download, divided by the GiB moved. The benchmark client and the local servers (this
process) are not counted; they are the same for every system. JSON keys: ``server`` and
``proxy`` (resip: resip-server and resip-proxy; microsocks and resip-demo: ``proxy``
only, the demo's one process doing both jobs; direct: neither), ``null`` where a system
has no such process.

Prints a markdown table with ratios to direct TCP and microsocks, or with ``--json``
exactly ``{"rows": [{"system": S, "mbit": X, "p50_ms": Y, "cpu_s_per_gib": {"server": A,
"proxy": B}}, ...]}``. Every process started here is stopped (SIGINT, then SIGKILL after
10 s) however the run ends, SIGTERM included. CPU time is counted in clock ticks (10 ms),
so a small ``--size-mib`` gives coarse CPU figures for fast systems. The numbers compare
systems on one machine in one run only; a shared CPU makes them noisy.

Usage: scripts/bench_loopback.py [--json] [--size-mib 64] [--rounds 200]
       [--systems direct,microsocks,resip,resip-demo]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _benchlib as bl

if __name__ == "__main__":
    bl.use_project_venv(__file__)

from resip.lab import labstack

MICROSOCKS = "/usr/bin/microsocks"
SYSTEMS = ("direct", "microsocks", "resip", "resip-demo")
CHUNK = 256 << 10
PING = 100
STARTUP_TIMEOUT = 30.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# -- local servers --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[int]:
    """Run ``handler`` on 127.0.0.1:0; yields the port."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, bl.LOOPBACK, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def source(payload: bytes | int) -> Handler:
    """A handler that sends ``payload`` and closes (an int: that many os.urandom bytes).

    The bytes never repeat, so no compression window can find a match in them.
    """
    view = memoryview(os.urandom(payload) if isinstance(payload, int) else payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for at in range(0, len(view), CHUNK):
            writer.write(view[at : at + CHUNK])
            await writer.drain()
        writer.write_eof()
        await reader.read()  # until the client closes

    return handler


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo everything back."""
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()


# -- clients ------------------------------------------------------------------------------------

Proxy = tuple[str, int] | None


async def open_via(proxy: Proxy, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to 127.0.0.1:``port``, directly or through a SOCKS5 proxy."""
    if proxy is None:
        reader, writer = await asyncio.open_connection(bl.LOOPBACK, port)
    else:
        reader, writer = await asyncio.open_connection(*proxy)
        writer.write(b"\x05\x01\x00")
        if await reader.readexactly(2) != b"\x05\x00":
            raise RuntimeError("SOCKS5 proxy refused the greeting")
        writer.write(b"\x05\x01\x00\x01" + socket.inet_aton(bl.LOOPBACK) + struct.pack("!H", port))
        reply = await reader.readexactly(10)
        if reply[1] != 0:
            raise RuntimeError(f"SOCKS5 CONNECT failed with reply {reply[1]:#04x}")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def throughput(proxy: Proxy, port: int, size: int) -> float:
    """Mbit/s of one download of ``size`` bytes."""
    reader, writer = await open_via(proxy, port)
    try:
        got = 0
        start = time.perf_counter()
        while data := await reader.read(1 << 20):
            got += len(data)
        elapsed = time.perf_counter() - start
    finally:
        writer.close()
    if got != size:
        raise RuntimeError(f"download got {got} bytes, expected {size}")
    return got * 8 / elapsed / 1e6


async def latency(proxy: Proxy, port: int, rounds: int) -> float:
    """p50 in ms of ``rounds`` round trips of 100 bytes on one connection."""
    reader, writer = await open_via(proxy, port)
    payload = os.urandom(PING)
    samples = []
    try:
        for _ in range(rounds):
            start = time.perf_counter()
            writer.write(payload)
            if await reader.readexactly(PING) != payload:
                raise RuntimeError("echo returned different bytes")
            samples.append((time.perf_counter() - start) * 1000)
    finally:
        writer.close()
    return statistics.median(samples)


# -- systems under test -------------------------------------------------------------------------


@dataclass
class Target:
    """Where a system's SOCKS5 proxy listens (None: direct) and its processes' pids."""

    proxy: Proxy
    pids: dict[str, int] = field(default_factory=dict)


async def wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection(bl.LOOPBACK, port)
        except OSError:
            await asyncio.sleep(0.05)  # polling a foreign process: nothing to await instead
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGINT, then SIGKILL after 10 s (at once if this is cancelled meanwhile); reaps."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:  # timed out, or cancelled while waiting
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def start_microsocks(work: Path) -> AsyncIterator[Target]:
    port = bl.free_tcp_port()
    proc = await asyncio.create_subprocess_exec(
        MICROSOCKS, "-i", bl.LOOPBACK, "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(port, proc)
        yield Target((bl.LOOPBACK, port), {"proxy": proc.pid})
    finally:
        await stop(proc)


def start_resip(lab: bl.LocalLab, work: Path) -> Target:
    """resip-server init + run, resip-proxy init + run, on loopback (blocking)."""
    api_port, resip_port = bl.free_tcp_port(), bl.free_tcp_udp_port()
    setup = labstack.init_server(
        work, bl.LOOPBACK, ["127.0.0.0/8"], listen_host=bl.LOOPBACK,
        api_port=api_port, resip_port=resip_port, allow_internet=False,
    )  # fmt: skip
    server, server_log = labstack.start_server_process(
        lab, setup.config, api_port=api_port, timeout=STARTUP_TIMEOUT
    )
    lab.on_close.append(server_log.close)
    proxy = labstack.start_proxy(
        lab, work, setup.uri, listen=f"{bl.LOOPBACK}:0",
        control_socket=work / "proxy.sock", timeout=STARTUP_TIMEOUT,
    )  # fmt: skip
    lab.on_close.append(proxy.log.close)
    match = re.search(r"proxy ready on 127\.0\.0\.1:(\d+)", proxy.log.text())
    if match is None:
        raise RuntimeError(f"no port in resip-proxy's ready line:\n{proxy.log.text()[-2000:]}")
    return Target(
        (bl.LOOPBACK, int(match.group(1))), {"server": server.pid, "proxy": proxy.proc.pid}
    )


@contextlib.asynccontextmanager
async def start_resip_pair(work: Path) -> AsyncIterator[Target]:
    """``resip-server run`` and ``resip-proxy run`` as two processes."""
    lab = bl.LocalLab()
    try:
        yield await asyncio.to_thread(start_resip, lab, work)
    finally:
        await asyncio.to_thread(lab.close)


@contextlib.asynccontextmanager
async def start_resip_demo(work: Path) -> AsyncIterator[Target]:
    """``resip-proxy demo`` on an ephemeral port; its banner names the proxy address."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resip_proxy.cli", "demo", "--listen", f"{bl.LOOPBACK}:0",
        "--control-socket", str(work / "demo.sock"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while line := (await proc.stdout.readline()).decode():
                match = re.search(r"proxy on (127\.0\.0\.1):(\d+)", line)
                if match:
                    break
            else:
                raise RuntimeError("resip-proxy demo exited before it was ready")
        drain = asyncio.create_task(proc.stdout.read())  # never let its pipe fill up
        try:
            yield Target((bl.LOOPBACK, int(match.group(2))), {"proxy": proc.pid})
        finally:
            await stop(proc)
            await drain
    finally:
        await stop(proc)


@contextlib.asynccontextmanager
async def start_direct(work: Path) -> AsyncIterator[Target]:
    yield Target(None)


STARTERS: dict[str, Callable[[Path], contextlib.AbstractAsyncContextManager[Target]]] = {
    "direct": start_direct,
    "microsocks": start_microsocks,
    "resip": start_resip_pair,
    "resip-demo": start_resip_demo,
}


# What scripts/bench_clients.py imports: context managers yielding a SOCKS5 address.


@contextlib.asynccontextmanager
async def microsocks() -> AsyncIterator[tuple[str, int]]:
    """microsocks on an ephemeral loopback port; yields its address."""
    with tempfile.TemporaryDirectory(prefix="resip-bench-") as tmp:
        async with start_microsocks(Path(tmp)) as target:
            assert target.proxy is not None
            yield target.proxy


@contextlib.asynccontextmanager
async def resip() -> AsyncIterator[tuple[str, int]]:
    """``resip-proxy demo`` (server and proxy in one process); yields its address."""
    with tempfile.TemporaryDirectory(prefix="resip-bench-") as tmp:
        async with start_resip_demo(Path(tmp)) as target:
            assert target.proxy is not None
            yield target.proxy


# -- main ---------------------------------------------------------------------------------------


async def measure_one(
    target: Target, ports: tuple[int, int], size: int, rounds: int
) -> dict[str, Any]:
    """One row: the download (CPU read around it), then the round trips."""
    src, ech = ports
    before = bl.cpu_snapshot(target.pids)
    mbit = await throughput(target.proxy, src, size)
    cpu = bl.cpu_per_gib(before, bl.cpu_snapshot(target.pids), size)
    p50 = await latency(target.proxy, ech, rounds)
    return {
        "mbit": round(mbit, 1),
        "p50_ms": round(p50, 3),
        "cpu_s_per_gib": {"server": cpu.get("server"), "proxy": cpu.get("proxy")},
    }


async def measure(systems: list[str], size: int, rounds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    task = asyncio.current_task()
    assert task is not None
    # SIGTERM (as SIGINT already does under asyncio.run) cancels the run, so every
    # ``finally`` below stops its processes.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    payload = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="resip-bench-loopback-") as tmp:
        async with serve(source(payload)) as src, serve(echo) as ech:
            for system in systems:
                work = Path(tmp) / system
                work.mkdir()
                try:
                    async with STARTERS[system](work) as target:
                        row = await measure_one(target, (src, ech), size, rounds)
                except (RuntimeError, OSError, TimeoutError, labstack.LabStackError) as exc:
                    print(f"note: {system} failed, no row: {exc}", file=sys.stderr)
                    continue
                rows.append({"system": system, **row})
                cpu = ", ".join(f"{k} {v}" for k, v in row["cpu_s_per_gib"].items() if v)
                print(
                    f"{system}: {row['mbit']} Mbit/s, p50 {row['p50_ms']} ms, "
                    f"CPU s/GiB: {cpu or 'no process'}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


def fmt(value: float | None, spec: str = ".2f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def ratio(a: float | None, b: float | None, spec: str = ".3f") -> str:
    return "-" if a is None or not b else f"{a / b:{spec}}x"


def total_cpu(row: dict[str, Any]) -> float | None:
    values = [v for v in row["cpu_s_per_gib"].values() if v is not None]
    return round(sum(values), 3) if values else None


def table(rows: list[dict[str, Any]]) -> str:
    by = {r["system"]: r for r in rows}
    base, socks = by.get("direct"), by.get("microsocks")
    socks_cpu = total_cpu(socks) if socks else None
    lines = [
        "| system | Mbit/s | vs direct | vs microsocks | p50 ms | added ms | "
        "CPU s/GiB server | proxy | total | CPU vs microsocks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu, total = r["cpu_s_per_gib"], total_cpu(r)
        added = r["p50_ms"] - base["p50_ms"] if base else None
        cells = [
            r["system"], f"{r['mbit']:.1f}",
            ratio(r["mbit"], base["mbit"] if base else None),
            ratio(r["mbit"], socks["mbit"] if socks else None),
            f"{r['p50_ms']:.3f}", fmt(added, "+.3f"),
            fmt(cpu["server"]), fmt(cpu["proxy"]), fmt(total),
            ratio(total, socks_cpu, ".1f"),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--size-mib", type=int, default=64, help="download size (default 64)")
    parser.add_argument("--rounds", type=int, default=200, help="latency round trips (200)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma list (default all)")
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")
    if "microsocks" in systems and not os.access(MICROSOCKS, os.X_OK):
        print(f"note: {MICROSOCKS} not found (Debian package microsocks); no row", file=sys.stderr)
        systems.remove("microsocks")
    load = os.getloadavg()[0]
    try:
        rows = asyncio.run(measure(systems, args.size_mib << 20, args.rounds))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench_loopback: interrupted; its processes are stopped", file=sys.stderr)
        raise SystemExit(130) from None
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(
        f"loopback, one channel: {args.size_mib} MiB random download, p50 of {args.rounds} x "
        f"100 B; CPU s/GiB during the download; {os.cpu_count()} CPUs, load {load:.1f} at start\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What real clients see on loopback: many parallel downloads, and small exchanges after idling.

Systems (the same run, the same local servers): direct TCP, microsocks (Debian package
``microsocks``; skipped with a note when absent) and ResIP (``resip-proxy demo``: the
real server and proxy in one process).

- parallel: ``--downloads`` (500) curl downloads of ``--size-kib`` (1024) random bytes
  through SOCKS5, ``--parallel`` (100) at a time (``xargs -P``-style); completed count,
  wall time, and the ratio of ResIP's time to microsocks'. Before issue 16 was fixed
  about 35 of 500 stalled forever once the 64 MiB session buffer filled.
- ping-pong: p50 of 100 round trips of 100 bytes on a fresh connection, then after
  a phase of 60 pings 50 ms apart (the pattern that used to decay ResIP's rate to its
  floor, ~80 ms per exchange) on the same connection, and the difference.

Prints two markdown tables, or with ``--json`` one object ``{"parallel": [...],
"ping_pong": [...]}``. The throughput and CPU cost per byte are bench_loopback.py's and
bench_lab.py's job; this one is about completeness and latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator

sys.path.insert(0, os.path.dirname(__file__))

from bench_loopback import (
    MICROSOCKS,
    Proxy,
    echo,
    microsocks,
    open_via,
    resip,
    serve,
    source,
)

CURL = "/usr/bin/curl"
PING = 100


async def _curl(proxy: Proxy, port: int, timeout: float) -> bool:  # noqa: ASYNC109
    args = ["-sS", "--fail", "-o", "/dev/null", "--max-time", str(int(timeout))]
    if proxy is not None:
        args += ["--socks5", f"{proxy[0]}:{proxy[1]}"]
    proc = await asyncio.create_subprocess_exec(
        CURL, *args, f"http://127.0.0.1:{port}/",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await proc.wait() == 0


async def parallel(proxy: Proxy, port: int, downloads: int, width: int) -> tuple[int, float]:
    """(completed, seconds) of ``downloads`` curl runs, ``width`` at a time."""
    gate = asyncio.Semaphore(width)

    async def one() -> bool:
        async with gate:
            return await _curl(proxy, port, timeout=120.0)

    start = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(downloads)))
    return sum(results), time.perf_counter() - start


async def _pings(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> float:
    payload = os.urandom(PING)
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(PING)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def ping_pong(proxy: Proxy, port: int) -> tuple[float, float]:
    """(fresh p50 ms, p50 ms after a spaced-ping phase) on one connection."""
    reader, writer = await open_via(proxy, port)
    try:
        fresh = await _pings(reader, writer, 100)
        for _ in range(60):
            await _pings(reader, writer, 1)
            await asyncio.sleep(0.05)  # the traffic pattern under test, not a synchronisation
        after = await _pings(reader, writer, 100)
    finally:
        writer.close()
    return fresh, after


@contextlib.asynccontextmanager
async def systems() -> AsyncIterator[list[tuple[str, Proxy]]]:
    """Every system that can run here, started."""
    async with contextlib.AsyncExitStack() as stack:
        found: list[tuple[str, Proxy]] = [("direct", None)]
        if os.access(MICROSOCKS, os.X_OK):
            found.append(("microsocks", await stack.enter_async_context(microsocks())))
        else:
            print(f"note: {MICROSOCKS} missing (apt-get install microsocks)", file=sys.stderr)
        found.append(("resip", await stack.enter_async_context(resip())))
        yield found


async def _http_source(size: int) -> contextlib.AbstractAsyncContextManager[int]:
    body = source(size)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        await body(reader, writer)

    return serve(handler)


async def measure(args: argparse.Namespace) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {"parallel": [], "ping_pong": []}
    http_source = await _http_source(args.size_kib << 10)
    async with http_source as http, serve(echo) as ech, systems() as found:
        for name, proxy in found:
            done, seconds = await parallel(proxy, http, args.downloads, args.parallel)
            out["parallel"].append(
                {
                    "system": name,
                    "completed": done,
                    "of": args.downloads,
                    "seconds": round(seconds, 2),
                }
            )
            fresh, after = await ping_pong(proxy, ech)
            out["ping_pong"].append(
                {
                    "system": name,
                    "fresh_ms_p50": round(fresh, 3),
                    "after_idle_ms_p50": round(after, 3),
                }
            )
    return out


def tables(result: dict[str, list[dict[str, object]]]) -> str:
    rows = result["parallel"]
    ref = next((r for r in rows if r["system"] == "microsocks"), rows[0])
    lines = [
        "| system | completed | seconds | vs " + str(ref["system"]) + " |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = float(r["seconds"]) / float(ref["seconds"])  # type: ignore[arg-type]
        lines.append(
            f"| {r['system']} | {r['completed']}/{r['of']} | {r['seconds']} | {ratio:.2f}x |"
        )
    lines += [
        "",
        "| system | fresh p50 ms | after idle pattern p50 ms | difference ms |",
        "|---|---:|---:|---:|",
    ]
    for r in result["ping_pong"]:
        diff = float(r["after_idle_ms_p50"]) - float(r["fresh_ms_p50"])  # type: ignore[arg-type]
        lines.append(
            f"| {r['system']} | {r['fresh_ms_p50']} | {r['after_idle_ms_p50']} | {diff:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--downloads", type=int, default=500, help="downloads (500)")
    parser.add_argument("--parallel", type=int, default=100, help="at a time (100)")
    parser.add_argument("--size-kib", type=int, default=1024, help="size of each (1024)")
    args = parser.parse_args()
    if not os.access(CURL, os.X_OK):
        raise SystemExit(f"{CURL} is missing (apt-get install curl)")
    result = asyncio.run(measure(args))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"loopback: {args.downloads} x {args.size_kib} KiB, {args.parallel} in parallel")
        print(tables(result))


if __name__ == "__main__":
    main()

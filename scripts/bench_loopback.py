#!/usr/bin/env python3
"""Loopback benchmark: direct TCP vs microsocks vs ResIP (server + proxy), one channel each.

For each system: throughput of one download (default 64 MiB) and the p50 latency of
200 round trips of 100 bytes to an echo server, all on 127.0.0.1 ephemeral ports.

- direct: the client connects to the local servers itself.
- microsocks: ``/usr/bin/microsocks`` (Debian package ``microsocks``) as a SOCKS5 proxy;
  skipped with a note on stderr when it is not installed (this script installs nothing).
- resip: ``resip-proxy demo`` in a subprocess (the real ResipServer and proxy, with
  throwaway keys, on loopback) used as a SOCKS5 proxy.

Prints a markdown table with ratios to direct TCP, or with ``--json`` exactly
``{"rows": [{"system": S, "throughput_mbit": T, "latency_ms_p50": L}, ...]}``.
The numbers are for comparison on one machine only; a shared CPU makes them noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

MICROSOCKS = "/usr/bin/microsocks"
CHUNK = 256 << 10
PING = 100
STARTUP_TIMEOUT = 20.0


# -- local servers --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serve(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """Run ``handler`` on 127.0.0.1:0; yields the port."""

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def source(size: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A handler that sends ``size`` bytes and closes."""
    block = os.urandom(CHUNK)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        left = size
        while left > 0:
            writer.write(block[: min(left, CHUNK)])
            left -= CHUNK
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
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    else:
        reader, writer = await asyncio.open_connection(*proxy)
        writer.write(b"\x05\x01\x00")
        if await reader.readexactly(2) != b"\x05\x00":
            raise RuntimeError("SOCKS5 proxy refused the greeting")
        writer.write(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", port))
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


# -- proxies under test -------------------------------------------------------------------------


def free_port() -> int:
    """A currently free loopback TCP port (for tools that cannot report theirs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"proxy exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # polling a foreign process: nothing to await instead
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def microsocks() -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        MICROSOCKS, "-i", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(port, proc)
        yield ("127.0.0.1", port)
    finally:
        await stop(proc)


@contextlib.asynccontextmanager
async def resip() -> AsyncIterator[tuple[str, int]]:
    """``resip-proxy demo`` on an ephemeral port; its banner names the proxy address."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resip_proxy.cli", "demo", "--listen", "127.0.0.1:0",
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
        port = int(match.group(2))
        drain = asyncio.create_task(proc.stdout.read())  # never let its pipe fill up
        try:
            yield ("127.0.0.1", port)
        finally:
            await stop(proc)
            await drain
    finally:
        await stop(proc)


# -- main ---------------------------------------------------------------------------------------


async def measure(size: int, rounds: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async with serve(source(size)) as src, serve(echo) as ech:

        async def row(system: str, proxy: Proxy) -> None:
            mbit = await throughput(proxy, src, size)
            p50 = await latency(proxy, ech, rounds)
            rows.append(
                {
                    "system": system,
                    "throughput_mbit": round(mbit, 1),
                    "latency_ms_p50": round(p50, 3),
                }
            )

        await row("direct", None)
        if os.access(MICROSOCKS, os.X_OK):
            async with microsocks() as proxy:
                await row("microsocks", proxy)
        else:
            print(
                f"note: {MICROSOCKS} not found (Debian package microsocks); skipping that row",
                file=sys.stderr,
            )
        async with resip() as proxy:
            await row("resip", proxy)
    return rows


def table(rows: list[dict[str, object]]) -> str:
    base = rows[0]
    lines = [
        "| system | throughput Mbit/s | vs direct | p50 latency ms | vs direct |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        t, lat = float(r["throughput_mbit"]), float(r["latency_ms_p50"])  # type: ignore[arg-type]
        t_ratio = t / float(base["throughput_mbit"])  # type: ignore[arg-type]
        l_ratio = lat / float(base["latency_ms_p50"])  # type: ignore[arg-type]
        lines.append(f"| {r['system']} | {t:.1f} | {t_ratio:.3f}x | {lat:.3f} | {l_ratio:.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--size-mib", type=int, default=64, help="download size (default 64)")
    parser.add_argument("--rounds", type=int, default=200, help="latency round trips (200)")
    args = parser.parse_args()
    if shutil.which(sys.executable) is None:
        raise SystemExit("cannot find the Python interpreter to start resip-proxy demo")
    rows = asyncio.run(measure(args.size_mib << 20, args.rounds))
    if args.json:
        print(json.dumps({"rows": rows}))
    else:
        print(f"loopback, one channel: {args.size_mib} MiB download, p50 of {args.rounds} x 100 B")
        print(table(rows))


if __name__ == "__main__":
    main()

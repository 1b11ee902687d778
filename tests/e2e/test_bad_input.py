"""Misbehaving clients against the real proxy: right replies, closed connections, no errors.

One good connection (SOCKS5 to an echo server) keeps exchanging data while all the bad
ones run, and must be unaffected; afterwards new connections still work. No ERROR
record and no traceback may be logged anywhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from .conftest import ResipPair, TcpServer, sha
from .helpers import (
    STEP_TIMEOUT,
    close,
    echo_roundtrip,
    read_to_eof,
    socks_connect,
    socks_request,
)

GREETING = b"\x05\x01\x00"
Case = Callable[[tuple[str, int], int], Awaitable[None]]


async def exchange(proxy: tuple[str, int], data: bytes, *, half_close: bool = False) -> bytes:
    """Send ``data``, optionally half-close, and return everything until the proxy closes."""
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        writer.write(data)
        if half_close:
            writer.write_eof()
        return await read_to_eof(reader, STEP_TIMEOUT)
    finally:
        await close(writer)


def socks_case(request: bytes, rep: int) -> Case:
    """Greeting, then ``request``: the proxy answers REP ``rep`` and closes."""

    async def run(proxy: tuple[str, int], port: int) -> None:
        answer = await exchange(proxy, GREETING + request)
        assert answer[:2] == b"\x05\x00", answer
        # VER REP RSV ATYP BND.ADDR BND.PORT: one complete reply, nothing after it.
        assert answer[2:5] == bytes([5, rep, 0]), f"{request[:8]!r}...: got {answer[2:]!r}"
        assert len(answer) == 2 + 10, answer

    return run


def http_case(head: bytes, status: int) -> Case:
    async def run(proxy: tuple[str, int], port: int) -> None:
        answer = await exchange(proxy, head)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:120]

    return run


def silent_case(data: bytes) -> Case:
    """The client sends ``data`` and half-closes: no reply, and the proxy closes too."""

    async def run(proxy: tuple[str, int], port: int) -> None:
        assert await exchange(proxy, data, half_close=True) == b""

    return run


def vanish_case(data: bytes, *, reset: bool) -> Case:
    """The client sends ``data`` and disappears (FIN, or RST with ``reset``)."""

    async def run(proxy: tuple[str, int], port: int) -> None:
        sock = socket.create_connection(proxy, timeout=STEP_TIMEOUT)
        try:
            if data:
                sock.sendall(data)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        finally:
            sock.close()

    return run


def cases(port: int) -> dict[str, Case]:
    target = socks_request("127.0.0.1", port)[3:]  # ATYP + address + port
    long_host = b"a" * 300
    return {
        "garbage": http_case(b"\x00\xff\x13\x37 garbage\r\n\r\n", 400),
        "tls-hello-start-then-eof": silent_case(b"\x16\x03\x01"),
        "socks-no-methods": socks_or_ff(),
        "truncated-greeting": silent_case(b"\x05\x02\x00"),
        "unknown-command": socks_case(b"\x05\x09\x00" + target, 7),
        "bind": socks_case(b"\x05\x02\x00" + target, 7),
        "unknown-atyp": socks_case(b"\x05\x01\x00\x09" + b"\x7f\x00\x00\x01\x00\x50", 8),
        # 300 bytes where the domain goes; the length byte can say at most 255.
        "socks-300-byte-domain": socks_case(
            b"\x05\x01\x00\x03\xff" + b"\x80" * 300 + b"\x00\x50", 1
        ),
        "socks-bad-version-in-request": socks_case(b"\x04\x01\x00" + target, 1),
        "socks-port-0": socks_case(socks_request("127.0.0.1", 0), 1),
        "http-300-byte-host": http_case(b"CONNECT " + long_host + b":80 HTTP/1.1\r\n\r\n", 400),
        "connect-no-target": http_case(b"CONNECT\r\n\r\n", 400),
        "connect-no-port": http_case(b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", 400),
        "connect-bad-port": http_case(b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n", 400),
        "connect-bad-version": http_case(b"CONNECT 127.0.0.1:80 HTTP/9.9\r\n\r\n", 505),
        "20kb-headers": http_case(
            f"GET http://127.0.0.1:{port}/ HTTP/1.1\r\n".encode()
            + b"".join(b"X-Pad-%05d: %s\r\n" % (i, b"v" * 180) for i in range(104))
            + b"\r\n",
            431,
        ),
        "vanish-after-first-byte": vanish_case(b"\x05", reset=False),
        "vanish-before-request": vanish_case(GREETING, reset=False),
        "vanish-mid-request": vanish_case(GREETING + b"\x05\x01\x00\x01\x7f", reset=False),
        "vanish-mid-http-head": vanish_case(
            b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: x", reset=False
        ),
        "reset-mid-greeting": vanish_case(b"\x05\x02", reset=True),
        "reset-mid-http-head": vanish_case(b"GET http://127.0.0.1/ HTTP/1.1\r\n", reset=True),
        "connect-and-leave": vanish_case(b"", reset=False),
        "half-close-mid-request": greeting_then_silence(b"\x05\x01\x00\x03\x20abc"),
        "http-half-close-mid-head": http_case_eof(b"CONNECT 127.0.0.1:80 HTTP/1.1\r\n"),
    }


def greeting_then_silence(partial_request: bytes) -> Case:
    async def run(proxy: tuple[str, int], port: int) -> None:
        # The greeting is answered; the cut-off request is not, and the proxy closes.
        assert await exchange(proxy, GREETING + partial_request, half_close=True) == b"\x05\x00"

    return run


def socks_or_ff() -> Case:
    async def run(proxy: tuple[str, int], port: int) -> None:
        # A greeting offering no method: "no acceptable methods", then close.
        assert await exchange(proxy, b"\x05\x00") == b"\x05\xff"

    return run


def http_case_eof(head: bytes) -> Case:
    async def run(proxy: tuple[str, int], port: int) -> None:
        # A head cut short by EOF is a 400 (or nothing); the connection closes either way.
        answer = await exchange(proxy, head, half_close=True)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:120]

    return run


@pytest.mark.timeout(60)
async def test_bad_clients(
    pair: ResipPair, tcp_echo: TcpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    rep, good_reader, good_writer = await socks_connect(
        pair.proxy, socks_request("127.0.0.1", tcp_echo.port)
    )
    assert rep == 0
    stop = asyncio.Event()

    async def keep_echoing() -> int:
        rounds = 0
        while not stop.is_set() or rounds < 3:
            payload = os.urandom(16 << 10)
            back = await echo_roundtrip(good_reader, good_writer, payload)
            assert back == payload, f"good connection corrupted in round {rounds}"
            rounds += 1
        return rounds

    good = asyncio.create_task(keep_echoing())
    failures: list[str] = []
    try:
        for name, case in cases(tcp_echo.port).items():
            try:
                await case(pair.proxy, tcp_echo.port)
            except (AssertionError, TimeoutError, OSError) as exc:
                failures.append(f"{name}: {exc!r}")
    finally:
        stop.set()
        async with asyncio.timeout(STEP_TIMEOUT):
            rounds = await good
        await close(good_writer)
    assert not failures, "\n".join(failures)
    assert rounds >= 3

    # The proxy and the session still serve new connections.
    rep, reader, writer = await socks_connect(pair.proxy, socks_request("127.0.0.1", tcp_echo.port))
    try:
        assert rep == 0
        payload = os.urandom(256 << 10)
        assert sha(await echo_roundtrip(reader, writer, payload)) == sha(payload)
    finally:
        await close(writer)
    # Only the two good connections reached the target.
    assert tcp_echo.connections == 2

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text

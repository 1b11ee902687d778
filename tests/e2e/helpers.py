"""Raw-socket client helpers for the end-to-end tests (SOCKS5 bytes built by hand)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

STEP_TIMEOUT = 10.0


def socks_request(host: str | bytes, port: int, *, cmd: int = 1, atyp: int | None = None) -> bytes:
    """A SOCKS5 request; ``str`` IP literals become ATYP 1/4 unless ``atyp`` is 3."""
    if isinstance(host, bytes):
        return bytes([5, cmd, 0, 3, len(host)]) + host + struct.pack("!H", port)
    if atyp != 3:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            kind = 1 if addr.version == 4 else 4
            return bytes([5, cmd, 0, kind]) + addr.packed + struct.pack("!H", port)
    raw = host.encode()
    return bytes([5, cmd, 0, 3, len(raw)]) + raw + struct.pack("!H", port)


async def read_socks_reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(REP, the whole reply) of a SOCKS5 reply."""
    head = await reader.readexactly(4)
    atyp = head[3]
    if atyp == 1:
        rest = await reader.readexactly(4 + 2)
    elif atyp == 4:
        rest = await reader.readexactly(16 + 2)
    elif atyp == 3:
        n = (await reader.readexactly(1))[0]
        rest = bytes([n]) + await reader.readexactly(n + 2)
    else:
        raise AssertionError(f"bad ATYP in reply: {head!r}")
    return head[1], head + rest


def reply_address(reply: bytes) -> tuple[str, int]:
    """BND.ADDR and BND.PORT of a SOCKS5 reply with an IP address."""
    if reply[3] == 1:
        return str(ipaddress.IPv4Address(reply[4:8])), struct.unpack("!H", reply[8:10])[0]
    if reply[3] == 4:
        return str(ipaddress.IPv6Address(reply[4:20])), struct.unpack("!H", reply[20:22])[0]
    raise AssertionError(f"reply without an IP address: {reply!r}")


async def socks_handshake(
    proxy: tuple[str, int], request: bytes
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """Greeting + ``request`` through the proxy; returns (the reply, reader, writer)."""
    reader, writer = await asyncio.open_connection(*proxy)
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            writer.write(b"\x05\x01\x00")
            assert await reader.readexactly(2) == b"\x05\x00"
            writer.write(request)
            _, reply = await read_socks_reply(reader)
    except BaseException:
        writer.close()
        raise
    return reply, reader, writer


async def socks_connect(
    proxy: tuple[str, int], request: bytes
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """Greeting + ``request`` through the proxy; returns (REP, reader, writer)."""
    reply, reader, writer = await socks_handshake(proxy, request)
    return reply[1], reader, writer


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a stream writer, ignoring a peer that is already gone."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def read_to_eof(reader: asyncio.StreamReader, timeout: float = STEP_TIMEOUT) -> bytes:  # noqa: ASYNC109
    """Everything until EOF (a reset counts as EOF); fails on timeout."""
    out = bytearray()
    async with asyncio.timeout(timeout):
        try:
            while data := await reader.read(1 << 16):
                out += data
        except ConnectionResetError:
            pass
    return bytes(out)


async def echo_roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes
) -> bytes:
    """Send ``payload`` concurrently with reading it back; returns what came back."""

    async def send() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 1 << 16):
            writer.write(view[i : i + (1 << 16)])
            await writer.drain()

    got = bytearray()

    async def receive() -> None:
        while len(got) < len(payload):
            data = await reader.read(1 << 16)
            if not data:
                break
            got.extend(data)

    async with asyncio.timeout(30):
        await asyncio.gather(send(), receive())
    return bytes(got)

"""SOCKS5 UDP ASSOCIATE through the real proxy and server to real UDP servers."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct

import pytest

from .conftest import DNS_ANSWER_IP, ResipPair, UdpResponder, dns_query
from .helpers import (
    STEP_TIMEOUT,
    close,
    read_to_eof,
    reply_address,
    socks_handshake,
    socks_request,
)


class UdpClient(asyncio.DatagramProtocol):
    """A UDP socket whose datagrams land in a queue (and errors in ``errors``)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


def wrap(ip: str, port: int, data: bytes) -> bytes:
    """RFC 1928 §7 UDP request header (no fragmentation) + data."""
    return b"\0\0\0\x01" + socket.inet_aton(ip) + struct.pack("!H", port) + data


def unwrap(datagram: bytes) -> tuple[str, int, bytes]:
    assert datagram[:3] == b"\0\0\0", datagram[:10]
    assert datagram[3] == 1, "expected an IPv4 source address"
    ip = str(ipaddress.IPv4Address(datagram[4:8]))
    (port,) = struct.unpack("!H", datagram[8:10])
    return ip, port, datagram[10:]


async def _client(relay: tuple[str, int]) -> tuple[asyncio.DatagramTransport, UdpClient]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(UdpClient, remote_addr=relay)


@pytest.mark.timeout(30)
async def test_udp_echo_and_foreign_socket_dropped(pair: ResipPair, udp_echo: UdpResponder) -> None:
    reply, _reader, writer = await socks_handshake(pair.proxy, socks_request("0.0.0.0", 0, cmd=3))
    try:
        assert reply[1] == 0, f"UDP ASSOCIATE refused: {reply!r}"
        relay = reply_address(reply)
        assert relay[0] == "127.0.0.1"
        transport, client = await _client(relay)
        other, stranger = await _client(relay)
        try:
            sizes = [1, 100, 1000, 1400, 4000]
            payloads = [os.urandom(n) for n in sizes]
            for payload in payloads:
                transport.sendto(wrap("127.0.0.1", udp_echo.port, payload))
                async with asyncio.timeout(STEP_TIMEOUT):
                    data, _ = await client.queue.get()
                assert unwrap(data) == ("127.0.0.1", udp_echo.port, payload)
            assert len(udp_echo.received) == len(payloads)

            # A second socket (same IP, other port) may not use the association: the
            # relay drops its datagram, so the echo server never sees it.
            other.sendto(wrap("127.0.0.1", udp_echo.port, b"intruder"))
            # Then a datagram from the client: UDP on loopback keeps order through the
            # relay and the channel, so once its echo is back the intruder's would
            # have been seen before it.
            transport.sendto(wrap("127.0.0.1", udp_echo.port, b"after"))
            async with asyncio.timeout(STEP_TIMEOUT):
                data, _ = await client.queue.get()
            assert unwrap(data)[2] == b"after"
            assert [d for d, _ in udp_echo.received] == [*payloads, b"after"]
            assert stranger.queue.empty()
            assert client.queue.empty()
        finally:
            transport.close()
            other.close()
    finally:
        await close(writer)


@pytest.mark.timeout(30)
async def test_dns_style_exchange(pair: ResipPair, dns_server: UdpResponder) -> None:
    reply, _reader, writer = await socks_handshake(pair.proxy, socks_request("0.0.0.0", 0, cmd=3))
    try:
        assert reply[1] == 0
        transport, client = await _client(reply_address(reply))
        try:
            for txid, name in [(0x1234, "example.test"), (0xBEEF, "resip.invalid")]:
                query = dns_query(name, txid)
                transport.sendto(wrap("127.0.0.1", dns_server.port, query))
                async with asyncio.timeout(STEP_TIMEOUT):
                    data, _ = await client.queue.get()
                ip, port, answer = unwrap(data)
                assert (ip, port) == ("127.0.0.1", dns_server.port)
                rid, flags, qd, an = struct.unpack("!HHHH", answer[:8])
                assert (rid, flags & 0x8000, qd, an) == (txid, 0x8000, 1, 1)
                assert answer[12 : len(query)] == query[12:], "question not echoed"
                assert socket.inet_ntoa(answer[-4:]) == DNS_ANSWER_IP
        finally:
            transport.close()
    finally:
        await close(writer)
    # The association ends with the control connection.


@pytest.mark.timeout(30)
async def test_association_ends_with_control_connection(
    pair: ResipPair, udp_echo: UdpResponder
) -> None:
    reply, reader, writer = await socks_handshake(pair.proxy, socks_request("0.0.0.0", 0, cmd=3))
    assert reply[1] == 0
    transport, client = await _client(reply_address(reply))
    try:
        transport.sendto(wrap("127.0.0.1", udp_echo.port, b"ping"))
        async with asyncio.timeout(STEP_TIMEOUT):
            await client.queue.get()
        # Close the control connection; the proxy closes its side once the relay is gone.
        writer.write_eof()
        assert await read_to_eof(reader) == b""
        transport.sendto(wrap("127.0.0.1", udp_echo.port, b"too late"))
        # The relay port is closed: the kernel answers with port unreachable.
        async with asyncio.timeout(STEP_TIMEOUT):
            error = await client.errors.get()
        assert isinstance(error, ConnectionRefusedError), error
        assert [d for d, _ in udp_echo.received] == [b"ping"]
    finally:
        transport.close()
        await close(writer)

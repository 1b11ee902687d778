"""The server restarts (same ports, new server_start) in the middle of a transfer."""

from __future__ import annotations

import asyncio
import os

import pytest

from resip.server.app import ResipServer
from resip.server.config import ServerConfig

from .conftest import ResipPair, TcpServer, sha, tcp_server
from .helpers import close, echo_roundtrip, read_to_eof, socks_connect, socks_request

CHUNK = os.urandom(64 << 10)


async def _endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(CHUNK)
        await writer.drain()


@pytest.mark.timeout(60)
async def test_restart_mid_transfer(pair: ResipPair, tcp_echo: TcpServer) -> None:
    first_start = pair.server.server_start
    async with tcp_server(_endless) as source:
        rep, reader, writer = await socks_connect(
            pair.proxy, socks_request("127.0.0.1", source.port)
        )
        try:
            assert rep == 0
            got = 0
            async with asyncio.timeout(10):
                while got < 512 << 10:  # the transfer is well under way
                    data = await reader.read(1 << 16)
                    assert data, "EOF before the restart"
                    got += len(data)

            await pair.restart_server()
            assert pair.server.server_start != first_start

            # The interrupted connection ends (EOF or reset) instead of hanging.
            rest = await read_to_eof(reader, timeout=15)
            assert len(rest) < 256 << 20
            # And the stopped server closed its side: the target sees the end too.
            await source.wait_ended(1, timeout=15)
        finally:
            await close(writer)
        assert source.connections == 1

    # The proxy replaces the lost session by itself; new connections then work.
    assert await pair.manager.wait_connected(15), "no new session after the restart"
    assert pair.manager.generation == 2
    assert pair.server.session_count == 1
    rep, reader, writer = await socks_connect(pair.proxy, socks_request("127.0.0.1", tcp_echo.port))
    try:
        assert rep == 0
        payload = os.urandom(1 << 20)
        back = await echo_roundtrip(reader, writer, payload)
        assert sha(back) == sha(payload)
    finally:
        await close(writer)


@pytest.mark.timeout(10)
async def test_stop_releases_udp_port(server_config: ServerConfig) -> None:
    server = ResipServer(server_config, api_port=0, resip_port=0)
    await server.start()
    port = server.udp_port
    await server.stop()
    # No loop iteration in between: stop() promised every socket is closed.
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", port)
    )
    transport.close()

"""python-socks (asyncio) as SOCKS5 (remote DNS) and HTTP CONNECT client: 4 MiB each way."""

from __future__ import annotations

import asyncio
import os

import pytest
from python_socks.async_.asyncio import Proxy

from .conftest import ResipPair, TcpServer, sha
from .helpers import close, echo_roundtrip, read_to_eof

SIZE = 4 << 20


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("scheme", "host"),
    [("socks5", "localhost"), ("socks5", "127.0.0.1"), ("http", "127.0.0.1")],
    ids=["socks5-rdns-name", "socks5-ip", "http-connect"],
)
async def test_echo_4mib_each_way(
    scheme: str, host: str, pair: ResipPair, tcp_echo: TcpServer
) -> None:
    proxy_host, proxy_port = pair.proxy
    # rdns: the name goes to the proxy as is and the server resolves it.
    proxy = Proxy.from_url(f"{scheme}://{proxy_host}:{proxy_port}", rdns=True)
    sock = await proxy.connect(dest_host=host, dest_port=tcp_echo.port, timeout=10)
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        payload = os.urandom(SIZE)
        got = await echo_roundtrip(reader, writer, payload)
        assert len(got) == SIZE
        assert sha(got) == sha(payload)
        # The half-close travels end to end and the echo server's comes back.
        writer.write_eof()
        assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    assert tcp_echo.connections == 1

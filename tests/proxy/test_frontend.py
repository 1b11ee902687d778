"""The proxy frontend end to end: real sockets, a real client session, the fixture server."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket

import pytest
from aiohttp import web
from python_socks import ProxyError
from python_socks.async_.asyncio import Proxy

from resip_proxy.frontend import ProxyFrontend
from resip_proxy.socks5 import encode_udp_datagram, parse_udp_datagram_untrusted

from .fixture import FixtureServer, echo_server

pytestmark = pytest.mark.timeout(30)


def url(proxy: ProxyFrontend, scheme: str = "socks5") -> str:
    host, port = proxy.address
    return f"{scheme}://{host}:{port}"


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    payload = os.urandom(size)

    async def send() -> None:
        for i in range(0, size, 65536):
            writer.write(payload[i : i + 65536])
            await writer.drain()
        writer.write_eof()

    sender = asyncio.create_task(send())
    received = await asyncio.wait_for(reader.read(-1), 20)
    await sender
    writer.close()
    await writer.wait_closed()
    assert len(received) == size
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_one_mib_echo_through_the_proxy(proxy: ProxyFrontend, scheme: str) -> None:
    async with echo_server() as port:
        sock = await Proxy.from_url(url(proxy, scheme), rdns=True).connect("127.0.0.1", port)
        reader, writer = await asyncio.open_connection(sock=sock)
        await roundtrip(reader, writer, 1 << 20)


async def test_host_names_are_resolved_by_the_server(
    proxy: ProxyFrontend, server: FixtureServer
) -> None:
    async with echo_server() as port:
        sock = await Proxy.from_url(url(proxy), rdns=True).connect("localhost", port)
        reader, writer = await asyncio.open_connection(sock=sock)
        await roundtrip(reader, writer, 1000)
    assert server.requests[-1].host == "localhost"


async def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_refused_target_gives_socks_reply_5(proxy: ProxyFrontend) -> None:
    port = await free_port()
    with pytest.raises(ProxyError) as info:
        await Proxy.from_url(url(proxy), rdns=True).connect("127.0.0.1", port)
    assert info.value.error_code == 0x05


async def test_denied_target_gives_socks_reply_2(proxy: ProxyFrontend) -> None:
    with pytest.raises(ProxyError) as info:
        await Proxy.from_url(url(proxy), rdns=True).connect("192.0.2.1", 80)
    assert info.value.error_code == 0x02


async def raw(proxy: ProxyFrontend, data: bytes, *, eof: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection(*proxy.address)
    writer.write(data)
    if eof:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_http_connect_statuses(proxy: ProxyFrontend) -> None:
    denied = await raw(proxy, b"CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert denied.startswith(b"HTTP/1.1 403 ")
    assert b"not allowed" in denied
    port = await free_port()
    refused = await raw(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert refused.startswith(b"HTTP/1.1 502 ")


async def test_http_absolute_uri_get(proxy: ProxyFrontend) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.path} {request.headers['Host']}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        answer = await raw(
            proxy,
            f"GET http://127.0.0.1:{port}/some/where HTTP/1.1\r\nHost: ignored\r\n"
            "Proxy-Connection: keep-alive\r\nConnection: close\r\n\r\n".encode(),
        )
    finally:
        await runner.cleanup()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(f"hello /some/where 127.0.0.1:{port}".encode())


SOCKS_HELLO = b"\x05\x01\x00"


@pytest.mark.parametrize(
    ("data", "eof", "expected"),
    [
        # garbage that is not SOCKS5 is treated as HTTP: 400
        (b"\x16\x03\x01garbage\r\n\r\n", False, b"HTTP/1.1 400 "),
        # truncated greeting, then EOF: just closed
        (b"\x05\x02\x00", True, b""),
        # unknown command
        (SOCKS_HELLO + b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50", False,
         b"\x05\x00\x05\x07"),
        # BIND
        (SOCKS_HELLO + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", False,
         b"\x05\x00\x05\x07"),
        # unknown address type
        (SOCKS_HELLO + b"\x05\x01\x00\x09", False, b"\x05\x00\x05\x08"),
        # bad characters in a domain
        (SOCKS_HELLO + b"\x05\x01\x00\x03\x03a b\x00\x50", False, b"\x05\x00\x05\x01"),
        # malformed HTTP CONNECT
        (b"CONNECT nonsense HTTP/1.1\r\n\r\n", False, b"HTTP/1.1 400 "),
        # a 300-byte host name cannot be carried: 400 from the codec or 502
        (b"CONNECT " + b"a" * 300 + b".com:443 HTTP/1.1\r\n\r\n", False, b"HTTP/1.1 "),
        # oversized headers
        (b"GET http://127.0.0.1/ HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", False,
         b"HTTP/1.1 431 "),
    ],
)  # fmt: skip
async def test_misbehaving_clients_get_replies_and_no_tracebacks(
    proxy: ProxyFrontend,
    caplog: pytest.LogCaptureFixture,
    data: bytes,
    eof: bool,
    expected: bytes,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with echo_server() as port:
        # A healthy channel open at the same time must not notice anything.
        sock = await Proxy.from_url(url(proxy), rdns=True).connect("127.0.0.1", port)
        reader, writer = await asyncio.open_connection(sock=sock)
        answer = await raw(proxy, data, eof=eof)
        assert answer.startswith(expected), answer[:80]
        if not expected:
            assert answer == b""
        await roundtrip(reader, writer, 10_000)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]


async def test_300_byte_domain_is_refused_by_the_codec(proxy: ProxyFrontend) -> None:
    # The length byte says 255, followed by 300 bytes: 255 are the name, the rest junk
    # that must not be taken as anything; a name > 255 cannot even be expressed.
    name = b"a" * 300
    data = SOCKS_HELLO + b"\x05\x01\x00\x03\xff" + name[:255] + b"\x00\x50" + name[255:]
    answer = await raw(proxy, data)
    # a 255-byte single label is accepted by the codec, then refused by the server (ACL)
    assert answer[:4] == b"\x05\x00\x05\x02"


async def test_udp_associate(proxy: ProxyFrontend) -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]

    echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    echo_port = echo_transport.get_extra_info("sockname")[1]

    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.put_nowait(data)

    reader, writer = await asyncio.open_connection(*proxy.address)
    client, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    other, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        writer.write(SOCKS_HELLO + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
        reply = await asyncio.wait_for(reader.readexactly(2 + 10), 5)
        assert reply[:4] == b"\x05\x00\x05\x00"
        relay = (socket.inet_ntoa(reply[6:10]), int.from_bytes(reply[10:12], "big"))
        assert relay[0] == "127.0.0.1"
        # the first datagram fixes the client's port; a fragment and junk are dropped
        client.sendto(encode_udp_datagram("127.0.0.1", echo_port, b"one"), relay)
        client.sendto(b"\x00\x00\x01" + encode_udp_datagram("127.0.0.1", echo_port, b"f")[3:],
                      relay)  # fmt: skip
        client.sendto(b"junk", relay)
        first = parse_udp_datagram_untrusted(await asyncio.wait_for(received.get(), 5))
        assert (str(first.host), first.port, first.data) == ("127.0.0.1", echo_port, b"echo:one")
        # a second socket (another port) is not the association's client
        other.sendto(encode_udp_datagram("127.0.0.1", echo_port, b"intruder"), relay)
        for i in range(5):
            client.sendto(encode_udp_datagram("127.0.0.1", echo_port, b"n%d" % i), relay)
        got = set()
        for _ in range(5):
            got.add(parse_udp_datagram_untrusted(await asyncio.wait_for(received.get(), 5)).data)
        assert got == {b"echo:n%d" % i for i in range(5)}
        assert received.empty()
    finally:
        writer.close()
        await writer.wait_closed()
        client.close()
        other.close()
        echo_transport.close()

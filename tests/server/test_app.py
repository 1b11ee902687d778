"""End to end in one process: ResipServer on loopback, a real client session over UDP and TCP."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import ssl
from collections.abc import AsyncIterator, Hashable
from ipaddress import IPv4Address
from typing import Any, cast

import aiohttp
import pytest

from resip.aio.driver import SessionDriver
from resip.core import events as ev
from resip.core.framing import FrameDecoder, encode_frame
from resip.core.wire import Proto
from resip.server.acl import Acl
from resip.server.app import ResipServer
from resip.server.certs import cert_fingerprint
from resip.server.config import ServerConfig
from tests.server.conftest import ChannelProbe, client_session, sha

pytestmark = pytest.mark.timeout(30)

MIB = 1 << 20


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[ResipServer]:
    srv = ResipServer(
        server_config,
        listen_host="127.0.0.1",
        api_port=0,
        resip_port=0,
        acl=Acl.from_config(["allow 127.0.0.1/32"]),
        connect_timeout=2.0,
    )
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield int(srv.sockets[0].getsockname()[1])
    srv.close()
    await srv.wait_closed()


async def api(
    server: ResipServer, config: ServerConfig, method: str, path: str, key: str | None = None
) -> tuple[int, Any]:
    """One HTTPS request, pinned to the server's certificate fingerprint."""
    pin = aiohttp.Fingerprint(bytes.fromhex(cert_fingerprint(config.tls_cert.read_bytes())))
    headers = {"Authorization": f"Bearer {key or config.api_key}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"https://127.0.0.1:{server.api_port}{path}", headers=headers, ssl=pin
        ) as resp,
    ):
        body = await resp.json() if resp.status != 204 else None
        return resp.status, body


class Client:
    """A client session driven over UDP or the TCP fallback."""

    def __init__(self) -> None:
        self.driver: SessionDriver
        self.events: list[ev.Event] = []
        self.terminated: asyncio.Future[ev.SessionTerminated] = (
            asyncio.get_running_loop().create_future()
        )
        #: Set once the server answered: from then on it knows our address.
        self.connected = asyncio.Event()
        self._close: list[Any] = []
        self._reader_task: asyncio.Task[None] | None = None

    def on_event(self, event: ev.Event) -> None:
        self.events.append(event)
        if isinstance(event, ev.SessionConnected):
            self.connected.set()
        if isinstance(event, ev.SessionTerminated) and not self.terminated.done():
            self.terminated.set_result(event)

    @classmethod
    async def over_udp(cls, creds: dict[str, Any]) -> Client:
        self = cls()
        loop = asyncio.get_running_loop()
        peer = ("127.0.0.1", int(creds["udp_port"]))
        session = client_session(creds, peer=peer, now=loop.time())

        client = self

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                client.driver.datagram_received(data, addr)

        udp, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        self._close.append(udp)

        def transmit(data: bytes, path: Hashable) -> None:
            udp.sendto(data, cast("tuple[str, int]", path))

        self.driver = SessionDriver(session, transmit, on_event=self.on_event)
        self.driver.flush()
        return self

    @classmethod
    async def over_tcp(cls, creds: dict[str, Any]) -> Client:
        self = cls()
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", int(creds["tcp_port"]))
        path = ("tcp", 1)
        session = client_session(creds, peer=("127.0.0.1", 9), now=loop.time())
        session.set_peer(path)

        def transmit(data: bytes, to: Hashable) -> None:
            assert to == path
            writer.write(encode_frame(data))

        async def read() -> None:
            decoder = FrameDecoder()
            while data := await reader.read(65536):
                for packet in decoder.feed_untrusted(data):
                    self.driver.datagram_received(packet, path)

        self.driver = SessionDriver(session, transmit, on_event=self.on_event)
        self._reader_task = asyncio.create_task(read())
        self._close.append(writer)
        self.driver.flush()
        return self

    async def aclose(self) -> None:
        if not self.driver.closed:
            self.driver.close(0, "test done")
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        for thing in self._close:
            thing.close()
            if isinstance(thing, asyncio.StreamWriter):
                await thing.wait_closed()

    def open(self, host: IPv4Address | str, port: int, proto: Proto = Proto.TCP) -> ChannelProbe:
        session = self.driver.session
        channel_id = session.open_channel(host, port, proto=proto, now=self.driver.now())
        probe = ChannelProbe(self.driver, channel_id)
        self.driver.flush()
        return probe


async def new_session(server: ResipServer, config: ServerConfig) -> dict[str, Any]:
    status, creds = await api(server, config, "POST", "/v1/sessions")
    assert status == 200, creds
    assert creds["udp_port"] == creds["tcp_port"] == server.udp_port
    return cast("dict[str, Any]", creds)


async def echo_transfer(client: Client, port: int, size: int) -> None:
    payload = random.Random(size).randbytes(size)
    probe = client.open(IPv4Address("127.0.0.1"), port)
    await probe.send_all(payload)
    await asyncio.wait_for(probe.wait_received(size), 20)
    await asyncio.wait_for(probe.ended.wait(), 20)
    assert not probe.terminated.done(), probe.terminated
    assert probe.started.is_set()
    assert len(probe.received) == size
    assert sha(probe.received) == hashlib.sha256(payload).hexdigest()


async def test_one_mib_echo_over_udp(
    server: ResipServer, server_config: ServerConfig, echo_port: int
) -> None:
    client = await Client.over_udp(await new_session(server, server_config))
    try:
        await echo_transfer(client, echo_port, MIB)
        assert server.session_count == 1
    finally:
        await client.aclose()


async def test_one_mib_echo_over_tcp_fallback(
    server: ResipServer, server_config: ServerConfig, echo_port: int
) -> None:
    client = await Client.over_tcp(await new_session(server, server_config))
    try:
        await echo_transfer(client, echo_port, MIB)
    finally:
        await client.aclose()


async def test_refused_and_denied_targets(server: ResipServer, server_config: ServerConfig) -> None:
    client = await Client.over_udp(await new_session(server, server_config))
    try:
        # A bound, non-listening socket: connecting to it is refused.
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            refused = client.open(IPv4Address("127.0.0.1"), port)
            code, reason = await asyncio.wait_for(refused.terminated, 10)
            assert (code, reason) == (5, f"connection refused by 127.0.0.1:{port}")
            # A name: resolved by the server, checked, then refused the same way.
            named = client.open("localhost", port)
            code, reason = await asyncio.wait_for(named.terminated, 10)
            assert (code, reason) == (5, f"connection refused by 127.0.0.1:{port}")
        denied = client.open(IPv4Address("10.0.0.1"), 22)
        code, reason = await asyncio.wait_for(denied.terminated, 10)
        assert code == 2
        assert (
            reason == "target 10.0.0.1:22 not allowed: default deny: 10.0.0.0/8 private (RFC 1918)"
        )
        assert not refused.started.is_set() and not denied.started.is_set()
        # The session survives failed channels.
        assert not client.driver.closed
    finally:
        await client.aclose()


async def test_udp_channel_round_trip(server: ResipServer, server_config: ServerConfig) -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast("asyncio.DatagramTransport", transport)

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(b"re:" + data, addr)

    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo.get_extra_info("sockname")[1]
    client = await Client.over_udp(await new_session(server, server_config))
    try:
        probe = client.open(IPv4Address("127.0.0.1"), port, Proto.UDP)
        session = client.driver.session
        for i in range(5):
            session.send_datagram(probe.channel_id, f"dgram {i}".encode(), now=client.driver.now())
        client.driver.flush()
        while len(probe.datagrams) < 5:
            probe.changed.clear()
            await asyncio.wait_for(probe.changed.wait(), 10)
        assert sorted(probe.datagrams) == [f"re:dgram {i}".encode() for i in range(5)]
    finally:
        await client.aclose()
        echo.close()


async def test_delete_and_info(server: ResipServer, server_config: ServerConfig) -> None:
    creds = await new_session(server, server_config)
    client = await Client.over_udp(creds)
    try:
        status, info = await api(server, server_config, "GET", "/v1/info")
        assert status == 200
        assert info["server_start"] == creds["server_start"] == server.server_start
        # Wait until the server knows the client's address, so the CLOSE can reach it.
        await asyncio.wait_for(client.connected.wait(), 10)
        status, _ = await api(
            server, server_config, "DELETE", f"/v1/sessions/{creds['session_id']}"
        )
        assert status == 204
        assert server.session_count == 0
        done = await asyncio.wait_for(client.terminated, 10)
        assert (done.code, done.by_peer) == (0, True)
        status, body = await api(
            server, server_config, "DELETE", f"/v1/sessions/{creds['session_id']}"
        )
        assert status == 404
        assert "no session" in body["error"]
    finally:
        await client.aclose()


async def test_stop_closes_sessions_with_code_3(server_config: ServerConfig) -> None:
    srv = ResipServer(
        server_config, listen_host="127.0.0.1", api_port=0, resip_port=0, connect_timeout=1.0
    )
    await srv.start()
    try:
        creds = await new_session(srv, server_config)
        client = await Client.over_udp(creds)
        await asyncio.wait_for(client.connected.wait(), 10)
    finally:
        await srv.stop()
    try:
        done = await asyncio.wait_for(client.terminated, 10)
        assert done.code == 3
        assert done.reason == "server shutting down"
        assert done.by_peer
        assert srv.session_count == 0
    finally:
        await client.aclose()


async def test_tcp_fallback_garbage_closes_that_connection_only(
    server: ResipServer, server_config: ServerConfig
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    writer.write(b"\x00\x01garbage")  # a 1-byte frame: impossible
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    # The server still works.
    status, _ = await api(server, server_config, "GET", "/v1/info")
    assert status == 200


async def test_api_rejects_bad_key_over_https(
    server: ResipServer, server_config: ServerConfig
) -> None:
    status, body = await api(server, server_config, "GET", "/v1/info", key="x" * 20)
    assert status == 401
    assert body == {"error": "invalid API key"}
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"https://127.0.0.1:{server.api_port}/v1/info", ssl=insecure) as resp,
    ):
        assert resp.status == 401

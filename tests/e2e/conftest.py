"""End-to-end fixtures: the REAL ResIP server and proxy on loopback, plus local targets.

Everything binds 127.0.0.1 on ephemeral ports. ``pair`` runs :class:`ResipServer` with an
ACL that allows loopback targets (``allow 127.0.0.0/8``, ``allow ::1/128``) and a real
:class:`SessionManager` (session API over pinned HTTPS, UDP transport) feeding a real
:class:`ProxyFrontend`; ``default_acl_pair`` is the same with the server's default ACL
(no allow rules: every special-purpose range, loopback included, is denied).

Targets: ``http_files`` (aiohttp serving generated files), ``tcp_echo``, ``udp_echo`` and
``dns_server`` (a UDP responder answering tiny A queries).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from aiohttp import web

from resip.server.acl import Acl
from resip.server.app import ResipServer
from resip.server.config import ServerConfig, init_server
from resip_proxy.client import SessionManager
from resip_proxy.frontend import ProxyFrontend

LOOPBACK_ACL = ("allow 127.0.0.0/8", "allow ::1/128")
#: Generous bound for anything that should take milliseconds: a failure, not a hang.
STEP_TIMEOUT = 10.0
FILE_SIZES = {"big": 50 << 20, "medium": 2 << 20, "small": 128 << 10}


def sha(data: bytes | bytearray) -> str:
    """Hex SHA-256, what the data tests compare."""
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="session")
def server_config(tmp_path_factory: pytest.TempPathFactory) -> ServerConfig:
    """A real server config (certificate, key, API keys) bound to loopback."""
    directory: Path = tmp_path_factory.mktemp("e2e-server")
    config, _ = init_server(directory, public_host="127.0.0.1", listen_host="127.0.0.1")
    return config


@dataclass
class ResipPair:
    """A running server + client proxy; ``proxy`` is the frontend's (host, port)."""

    config: ServerConfig
    acl: Acl
    server: ResipServer
    manager: SessionManager
    frontend: ProxyFrontend
    _stopped: list[ResipServer] = field(default_factory=list)

    @property
    def proxy(self) -> tuple[str, int]:
        """The proxy's listening address."""
        return self.frontend.address

    @property
    def proxy_url_host(self) -> str:
        """``host:port`` of the proxy, as curl wants it."""
        host, port = self.proxy
        return f"{host}:{port}"

    async def restart_server(self) -> None:
        """Stop the server and start a new one on the same ports (new ``server_start``)."""
        old = self.server
        await old.stop("restart in a test")
        new = ResipServer(
            self.config,
            acl=self.acl,
            api_port=old.api_port,
            resip_port=old.udp_port,
            connect_timeout=5.0,
        )
        await new.start()
        assert new.server_start != old.server_start
        self.server = new


@contextlib.asynccontextmanager
async def running_pair(config: ServerConfig, acl: Acl) -> AsyncIterator[ResipPair]:
    """Start server, session manager and proxy frontend on loopback; stop them after."""
    server = ResipServer(config, acl=acl, api_port=0, resip_port=0, connect_timeout=5.0)
    await server.start()
    pair: ResipPair | None = None
    try:
        enrolment = dataclasses.replace(
            config.enrolment(),
            api_port=server.api_port,
            udp_port=server.udp_port,
            tcp_port=server.tcp_port,
        )
        manager = SessionManager(enrolment)
        await manager.start()
        try:
            frontend = ProxyFrontend(
                manager, listen=("127.0.0.1", 0), connect_timeout=5.0, handshake_timeout=5.0
            )
            await frontend.start()
            try:
                assert await manager.wait_connected(STEP_TIMEOUT), "no session to the server"
                pair = ResipPair(config, acl, server, manager, frontend)
                yield pair
            finally:
                await frontend.close()
        finally:
            await manager.close()
    finally:
        await (pair.server if pair is not None else server).stop("test finished")


@pytest.fixture
async def pair(server_config: ServerConfig) -> AsyncIterator[ResipPair]:
    """Server (ACL allows loopback targets) + proxy."""
    async with running_pair(server_config, Acl.from_config(list(LOOPBACK_ACL))) as p:
        yield p


@pytest.fixture
async def default_acl_pair(server_config: ServerConfig) -> AsyncIterator[ResipPair]:
    """Server with the DEFAULT ACL (no allow rules) + proxy."""
    async with running_pair(server_config, Acl()) as p:
        yield p


# -- targets ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def blobs() -> dict[str, bytes]:
    """Random file contents by name (``big`` 50 MiB, ``medium`` 2 MiB, ``small`` 128 KiB)."""
    return {name: os.urandom(size) for name, size in FILE_SIZES.items()}


@dataclass
class HttpFiles:
    """The local HTTP server: ``url(name, host)`` for each blob; ``requests`` served."""

    port: int
    # Not in the repr: something repr()s fixture values, and 50 MiB of bytes takes seconds.
    blobs: dict[str, bytes] = field(repr=False)
    requests: int = 0

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        """URL of one blob."""
        return f"http://{host}:{self.port}/files/{name}"


@pytest.fixture
async def http_files(blobs: dict[str, bytes]) -> AsyncIterator[HttpFiles]:
    """An aiohttp server on 127.0.0.1 serving ``/files/<name>`` from :func:`blobs`."""
    state = HttpFiles(0, blobs)

    async def serve(request: web.Request) -> web.Response:
        state.requests += 1
        body = blobs.get(request.match_info["name"])
        if body is None:
            raise web.HTTPNotFound
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/files/{name}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.port = int(runner.addresses[0][1])
    try:
        yield state
    finally:
        await runner.cleanup()


@dataclass
class TcpServer:
    """A loopback TCP server: ``port``, connections accepted and connections ended."""

    port: int
    connections: int = 0
    ended: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_ended(self, count: int, timeout: float = STEP_TIMEOUT) -> None:  # noqa: ASYNC109
        """Until ``count`` connections have ended (the peer closed or reset them)."""
        async with asyncio.timeout(timeout):
            while self.ended < count:
                self.changed.clear()
                await self.changed.wait()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[TcpServer]:
    """Serve ``handler(reader, writer)`` on 127.0.0.1:0, counting connections."""
    state = TcpServer(0)
    tasks: set[asyncio.Task[None]] = set()

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Teardown cancels us. Returning normally keeps asyncio's start_server
            # callback (3.11) from logging the cancellation with a traceback.
            pass
        finally:
            tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            state.ended += 1
            state.changed.set()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    state.port = int(server.sockets[0].getsockname()[1])
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


@pytest.fixture
async def tcp_echo() -> AsyncIterator[TcpServer]:
    """A TCP echo server on 127.0.0.1 (half-closes after the client does)."""
    async with tcp_server(_echo) as state:
        yield state


@pytest.fixture
async def tcp_listener() -> AsyncIterator[TcpServer]:
    """A TCP server that only counts connections (and closes them)."""

    async def nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None

    async with tcp_server(nothing) as state:
        yield state


class UdpResponder(asyncio.DatagramProtocol):
    """A loopback UDP server: records datagrams and answers with ``answer(data)``."""

    def __init__(self, answer: Callable[[bytes], bytes | None]) -> None:
        self.answer = answer
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector datagram transport does not subclass DatagramTransport: cast.
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append((data, addr))
        reply = self.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


@contextlib.asynccontextmanager
async def udp_responder(answer: Callable[[bytes], bytes | None]) -> AsyncIterator[UdpResponder]:
    """Run a :class:`UdpResponder` on 127.0.0.1:0."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: UdpResponder(answer), local_addr=("127.0.0.1", 0)
    )
    protocol.port = int(transport.get_extra_info("sockname")[1])
    try:
        yield protocol
    finally:
        transport.close()


@pytest.fixture
async def udp_echo() -> AsyncIterator[UdpResponder]:
    """UDP echo on 127.0.0.1."""
    async with udp_responder(lambda data: data) as r:
        yield r


DNS_ANSWER_IP = "192.0.2.53"  # documentation range: only ever data, never contacted


def dns_query(name: str, txid: int) -> bytes:
    """A minimal DNS query (RD set) for the A record of ``name``."""
    header = struct.pack("!HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + qname + struct.pack("!HH", 1, 1)


def dns_answer(query: bytes) -> bytes | None:
    """Answer an A query with :data:`DNS_ANSWER_IP` (TTL 60); ``None`` for anything else."""
    if len(query) < 17:
        return None
    txid, flags, qd = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qd != 1:
        return None
    end = query.index(b"\0", 12) + 5
    question = query[12:end]
    header = struct.pack("!HHHHHH", txid, 0x8180, 1, 1, 0, 0)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(DNS_ANSWER_IP)
    return header + question + record


@pytest.fixture
async def dns_server() -> AsyncIterator[UdpResponder]:
    """A UDP 'DNS server' on 127.0.0.1 answering every A query with 192.0.2.53."""
    async with udp_responder(dns_answer) as r:
        yield r

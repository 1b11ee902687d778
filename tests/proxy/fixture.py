"""A small in-process ResIP "server" for the proxy tests, independent of ``resip.server``.

Server-role sessions on a real loopback UDP socket (plus a framed TCP fallback
listener), each run by a :class:`SessionDriver`. A tiny handler accepts channels to
127.0.0.1 targets by connecting and splicing; anything else is refused with code 2
(as the server's ACL would). ``stub_api`` serves ``/v1/sessions`` and ``/v1/info``
over HTTPS on loopback, creating sessions in this server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Hashable, Iterable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from aiohttp import web

from resip.aio.driver import SessionDriver
from resip.aio.streams import ChannelSplice
from resip.core import events as ev
from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection, Suite
from resip.core.errors import WireError
from resip.core.framing import FrameDecoder, encode_frame
from resip.core.session import Role, Session
from resip.core.wire import Proto
from resip.server.certs import make_ca_and_server_cert, write_tls_files
from resip_proxy.client import SessionCredentials

LOOPBACK = IPv4Address("127.0.0.1")


class _Splice(ChannelSplice):
    def replay(self, events: Iterable[ev.Event]) -> None:
        for event in events:
            self._on_event(event)


class FixtureServer:
    """Server sessions over loopback UDP and TCP fallback."""

    def __init__(self, *, block_udp: bool = False) -> None:
        self.block_udp = block_udp
        self.hp_key = os.urandom(32)
        self.hp = HeaderProtection({0: self.hp_key}, 0)
        self.server_start = os.urandom(8).hex()
        self.drivers: dict[bytes, SessionDriver] = {}
        self.requests: list[ev.ChannelRequested] = []
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_writers: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._udp_targets: list[asyncio.DatagramTransport] = []
        self.udp_port = 0
        self.tcp_port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class UdpIn(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if not server.block_udp:
                    server._received(data, addr)

        self._udp, _ = await loop.create_datagram_endpoint(UdpIn, local_addr=("127.0.0.1", 0))
        self.udp_port = self._udp.get_extra_info("sockname")[1]
        self._tcp_server = await asyncio.start_server(self._tcp_conn, "127.0.0.1", 0)
        self.tcp_port = self._tcp_server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for driver in list(self.drivers.values()):
            if not driver.closed:
                driver.close(3, "server shutting down")
        self.drivers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for t in self._udp_targets:
            t.close()
        if self._udp is not None:
            self._udp.close()
        for w in list(self._tcp_writers.values()):
            w.close()
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()

    def restart(self) -> None:
        """Forget every session, as a restarted server would."""
        for driver in list(self.drivers.values()):
            driver.transmit = lambda data, path: None  # silently: nothing is sent
            driver.close(3, "gone")
        self.drivers.clear()
        self.server_start = os.urandom(8).hex()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sessions -------------------------------------------------------------------------

    def new_session(self) -> SessionCredentials:
        session_id, secret = os.urandom(8), os.urandom(32)
        loop = asyncio.get_running_loop()
        session = Session(
            SessionConfig(),
            role=Role.SERVER,
            session_id=session_id,
            session_secret=secret,
            hp=self.hp,
            suite=Suite.AES_256_GCM,
            now=loop.time(),
        )
        holder: list[SessionDriver] = []
        driver = SessionDriver(
            session, self._transmit, on_event=lambda e: self._on_event(holder[0], e)
        )
        holder.append(driver)
        self.drivers[session_id] = driver
        return SessionCredentials(
            session_id=session_id,
            secret=secret,
            suite=Suite.AES_256_GCM,
            hp_key_id=0,
            hp_key=self.hp_key,
            packet_size=1200,
            udp_port=self.udp_port,
            tcp_port=self.tcp_port,
            server_start=self.server_start,
        )

    def credentials_json(self) -> dict[str, Any]:
        c = self.new_session()
        return {
            "session_id": c.session_id.hex(),
            "secret": c.secret.hex(),
            "suite": int(c.suite),
            "hp_key_id": c.hp_key_id,
            "hp_key": c.hp_key.hex(),
            "packet_size": c.packet_size,
            "udp_port": c.udp_port,
            "tcp_port": c.tcp_port,
            "server_start": c.server_start,
            "idle_timeout": 3600,
        }

    def _received(self, data: bytes, path: Hashable) -> None:
        try:
            header = self.hp.unmask_untrusted(data)
        except WireError:
            return
        driver = self.drivers.get(header.session_id)
        if driver is not None:
            driver.datagram_received(data, path)

    def _transmit(self, data: bytes, path: Hashable) -> None:
        if isinstance(path, tuple) and path[0] == "tcp":
            writer = self._tcp_writers.get(path[1])
            if writer is not None and not writer.is_closing():
                writer.write(encode_frame(data))
        elif self._udp is not None and not self.block_udp:
            self._udp.sendto(data, path)  # type: ignore[arg-type]

    async def _tcp_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = id(writer)
        self._tcp_writers[n] = writer
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for packet in decoder.feed_untrusted(data):
                    self._received(packet, ("tcp", n))
        except (OSError, WireError, asyncio.CancelledError):
            pass
        finally:
            self._tcp_writers.pop(n, None)
            self._tasks.discard(task)
            writer.close()

    # -- channels -------------------------------------------------------------------------

    def _on_event(self, driver: SessionDriver, event: ev.Event) -> None:
        if isinstance(event, ev.ChannelRequested):
            self.requests.append(event)
            if event.host != LOOPBACK and event.host != "localhost":
                driver.session.reset_channel(event.channel_id, 2, "not allowed by ACL",
                                             now=driver.now())  # fmt: skip
                return
            early: list[ev.Event] = []
            driver.listen(event.channel_id, early.append)
            if event.proto is Proto.TCP:
                self._spawn(self._connect_tcp(driver, event, early))
            else:
                self._spawn(self._connect_udp(driver, event, early))
        elif isinstance(event, ev.SessionTerminated):
            for sid, d in list(self.drivers.items()):
                if d is driver:
                    del self.drivers[sid]

    async def _connect_tcp(
        self, driver: SessionDriver, req: ev.ChannelRequested, early: list[ev.Event]
    ) -> None:
        try:
            reader, writer = await asyncio.open_connection(str(req.host), req.port)
        except OSError as exc:
            driver.unlisten(req.channel_id)
            if not driver.session.terminated:
                driver.session.reset_channel(req.channel_id, 5, f"refused: {exc.strerror}",
                                             now=driver.now())  # fmt: skip
                driver.flush()
            return
        if driver.session.terminated or driver.session.channels.get(req.channel_id) is None:
            writer.close()
            return
        splice = _Splice(driver, req.channel_id, reader, writer)
        splice.replay(early)
        driver.session.accept_channel(req.channel_id, now=driver.now())
        driver.flush()
        await splice.run()

    async def _connect_udp(
        self, driver: SessionDriver, req: ev.ChannelRequested, early: list[ev.Event]
    ) -> None:
        loop = asyncio.get_running_loop()
        cid = req.channel_id

        class Target(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if not driver.session.terminated and driver.session.channels.get(cid):
                    driver.session.send_datagram(cid, data, now=driver.now())
                    driver.flush()

        transport, _ = await loop.create_datagram_endpoint(
            Target, remote_addr=(str(req.host), req.port)
        )
        self._udp_targets.append(transport)

        def on_event(event: ev.Event) -> None:
            if isinstance(event, ev.ChannelData):
                transport.sendto(event.data)
                driver.session.consume(cid, len(event.data))

        driver.listen(cid, on_event)
        for event in early:
            on_event(event)
        driver.session.accept_channel(cid, now=driver.now())
        driver.flush()


# -- the stub session API ----------------------------------------------------------------------


class StubApi:
    """``/v1/sessions`` and ``/v1/info`` over HTTPS on loopback, backed by a FixtureServer."""

    def __init__(self, server: FixtureServer, directory: Path, api_key: str) -> None:
        self.server = server
        self.api_key = api_key
        material = make_ca_and_server_cert([], ["127.0.0.1"])
        self.fingerprint = material.fingerprint
        cert, key, _ = write_tls_files(material, directory)
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(cert, key)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.posts = 0

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _sessions(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return web.json_response({"error": "bad key"}, status=401)
        self.posts += 1
        return web.json_response(self.server.credentials_json())

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({"server_start": self.server.server_start})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/sessions", self._sessions)
        app.router.add_get("/v1/info", self._info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def echo_server() -> Any:
    """A TCP echo server on loopback; yields its port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()

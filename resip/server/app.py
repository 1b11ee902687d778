"""The ResIP server process: HTTPS session API, UDP packet endpoint and TCP fallback.

Contract:

- :class:`ResipServer` is built from a :class:`~resip.server.config.ServerConfig` (plus
  overrides, e.g. port 0 in tests, and an :class:`~resip.server.acl.Acl`).
  :meth:`ResipServer.start` binds the HTTPS API, a UDP socket on ``resip_port`` and a TCP
  fallback listener on the same port number; :meth:`ResipServer.stop` closes every
  session with CLOSE code 3, flushes, and closes every socket.
- Sessions live in one registry, the :class:`~resip.server.endpoint.Endpoint`, each with
  one :class:`~resip.aio.driver.SessionDriver`. Its ``transmit`` sends to a
  :class:`~resip.core.paths.UdpPath` on the UDP socket and to a :class:`~resip.core.paths.TcpPath`
  as a frame on that fallback connection (both from :mod:`resip.aio.transport`). A frame
  error closes that TCP connection only; a datagram for no known session is dropped
  silently (:mod:`resip.server.endpoint` counts it). Each datagram's header is unmasked
  once: the endpoint routes by it and hands it to the session.
- ``ChannelRequested`` opens the target through :mod:`resip.server.connectors` (ACL,
  DNS, timeout). A TCP target is spliced with :class:`~resip.aio.streams.ChannelSplice`;
  a UDP target exchanges one datagram per ``ChannelData``. Failures reset the channel
  with the TERMINATE code and reason from :class:`~resip.server.connectors.ConnectError`.
  Data the client sends before the target is connected is held by an
  :class:`~resip.aio.streams.EarlyEvents` (bounded by the channel's credit, since it is
  not consumed) and delivered first.
- Nothing a client sends can crash the process: handler errors are logged and end only
  the channel or connection concerned. Secrets are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
import ssl
from collections.abc import Hashable

from aiohttp import web

from resip.aio.backlog import listen_backlog
from resip.aio.driver import SessionDriver
from resip.aio.streams import ChannelSplice, EarlyEvents
from resip.aio.transport import READ_CHUNK, DatagramSocket, FramedTcpConnection
from resip.core import events as ev
from resip.core.codes import CloseCode
from resip.core.config import HOUR, SessionConfig
from resip.core.errors import LocalProtocolError, ResipError
from resip.core.paths import TcpPath, UdpPath
from resip.core.session import Session
from resip.core.wire import Proto
from resip.server.acl import Acl
from resip.server.admin import add_admin_routes
from resip.server.config import ServerConfig
from resip.server.connectors import ConnectError, open_tcp, open_udp
from resip.server.endpoint import Endpoint
from resip.server.http_api import FailureLimiter, make_api
from resip.server.metrics import ServerMetrics

__all__ = ["ResipServer", "StartError", "session_config_for"]

log = logging.getLogger(__name__)

#: A fallback connection that carries no packet for a known session within this long is
#: closed, so idle or garbage connections cannot pile up.
TCP_UNROUTED_TIMEOUT = 30.0


class StartError(ResipError):
    """The server could not start (TLS material unreadable, a port already in use, ...)."""


def session_config_for(config: ServerConfig) -> SessionConfig:
    """The session parameters a server config implies."""
    return SessionConfig(
        idle_timeout=config.idle_timeout_hours * HOUR,
        max_channels=config.max_channels_per_session,
        session_send_buffer=config.session_buffer_bytes,
    )


class _ServerSession:
    """One session's driver and the tasks serving its channels."""

    def __init__(self, server: ResipServer, session: Session) -> None:
        self.server = server
        self.driver = SessionDriver(session, server._transmit, on_event=self._on_event)
        self.tasks: set[asyncio.Task[None]] = set()
        #: The session's totals went to the server's metrics (once, when it ended).
        self.retired = False

    @property
    def session(self) -> Session:
        return self.driver.session

    def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.ChannelRequested():
                self._open(event)
            case ev.ChannelData(channel_id, data):
                # A channel nobody serves any more (aborted while data was in flight).
                self.session.consume(channel_id, len(data))
            case ev.PathChanged(old, new):
                log.info("session %s now at %s (was %s)", self.session.session_id.hex(), new, old)
            case ev.SessionTerminated():
                self.server._forget(self)
            case _:
                pass

    def _open(self, request: ev.ChannelRequested) -> None:
        pending = EarlyEvents()
        # Listen now: the client may send data before the target is connected.
        self.driver.listen(request.channel_id, pending.on_event)
        if request.proto is Proto.UDP:
            coro = self._serve_udp(request, pending)
        else:
            coro = self._serve_tcp(request, pending)
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("channel task of session %s failed: %r", self.session.session_id.hex(), exc)

    def _alive(self, channel_id: int) -> bool:
        session = self.session
        return not session.terminated and session.channels.get(channel_id) is not None

    def _reset(self, channel_id: int, code: int, reason: str) -> None:
        if self._alive(channel_id):
            self.session.reset_channel(channel_id, code, reason, now=self.driver.now())
            self.driver.flush()

    async def _serve_tcp(self, request: ev.ChannelRequested, pending: EarlyEvents) -> None:
        channel_id = request.channel_id
        driver = self.driver
        try:
            reader, writer = await open_tcp(
                request.host,
                request.port,
                acl=self.server.acl,
                timeout=self.server.connect_timeout,
            )
        except ConnectError as exc:
            driver.unlisten(channel_id)
            self._reset(channel_id, exc.code, exc.reason)
            return
        except BaseException:  # cancelled by stop(): nobody will serve this channel
            driver.unlisten(channel_id)
            raise
        splice = self._start_splice(channel_id, pending, reader, writer)
        if splice is None:
            driver.unlisten(channel_id)
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
            return
        result = await splice.run()
        log.debug(
            "channel %d of session %s ended: %d bytes up, %d down, %s",
            channel_id,
            self.session.session_id.hex(),
            result.bytes_up,
            result.bytes_down,
            result.terminated or "closed",
        )

    def _start_splice(
        self,
        channel_id: int,
        pending: EarlyEvents,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> ChannelSplice | None:
        """Accept the channel and splice it, starting with what arrived while connecting."""
        if pending.aborted or not self._alive(channel_id):
            return None
        try:
            self.session.accept_channel(channel_id, now=self.driver.now())
        except LocalProtocolError:
            return None  # the channel or session ended underneath us
        self.driver.flush()
        # No await since the check above; the splice takes the held events and every
        # later one (one that ends the channel included, which ends the splice).
        return ChannelSplice(self.driver, channel_id, reader, writer, early=pending)

    async def _serve_udp(self, request: ev.ChannelRequested, pending: EarlyEvents) -> None:
        channel_id = request.channel_id
        driver = self.driver
        session = self.session

        def reply(data: bytes) -> None:
            if self._alive(channel_id):
                session.send_datagram(channel_id, data, now=driver.now())
                driver.flush()

        try:
            target = await open_udp(
                request.host,
                request.port,
                acl=self.server.acl,
                timeout=self.server.connect_timeout,
                on_datagram=reply,
            )
        except ConnectError as exc:
            driver.unlisten(channel_id)
            self._reset(channel_id, exc.code, exc.reason)
            return
        done = asyncio.Event()

        def on_event(event: ev.Event) -> None:
            match event:
                case ev.ChannelData(_, data):
                    target.send(data)
                    session.consume(channel_id, len(data))
                case ev.ChannelEnded():
                    # The client is done sending; finish our side so the channel closes.
                    if self._alive(channel_id):
                        session.shutdown(channel_id, now=driver.now())
                case ev.ChannelTerminated() | ev.ChannelClosed():
                    done.set()
                case _:
                    pass

        try:
            if pending.aborted or not self._alive(channel_id):
                return
            session.accept_channel(channel_id, now=driver.now())
            pending.hand_over(driver, channel_id, on_event)
            driver.flush()
            await done.wait()
        finally:
            driver.unlisten(channel_id)
            target.close()


class ResipServer:
    """The whole server: API, packet endpoints, sessions and their channels."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        acl: Acl | None = None,
        listen_host: str | None = None,
        api_port: int | None = None,
        resip_port: int | None = None,
        session_config: SessionConfig | None = None,
        connect_timeout: float = 10.0,
        limiter: FailureLimiter | None = None,
        admin_loopback: bool = True,
    ) -> None:
        """``acl`` defaults to the config's; the other keywords override config fields.

        ``admin_loopback``: admin routes accept loopback clients without the admin key.
        """
        overrides: dict[str, object] = {}
        if listen_host is not None:
            overrides["listen_host"] = listen_host
        if api_port is not None:
            overrides["api_port"] = api_port
        if resip_port is not None:
            overrides["resip_port"] = resip_port
        self.config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
        self.acl = acl if acl is not None else self.config.build_acl()
        self.connect_timeout = connect_timeout
        #: The one session registry: each session with its driver and channel tasks.
        self.endpoint: Endpoint[_ServerSession] = Endpoint.generate(
            session_config or session_config_for(self.config),
            max_sessions=self.config.max_sessions,
        )
        #: Changes on every start of the process: clients detect restarts by it.
        self.server_start = secrets.token_hex(16)
        self._limiter = limiter
        self._udp: DatagramSocket | None = None
        self._tcp_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._conns: dict[int, FramedTcpConnection] = {}
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._conn_ids = itertools.count(1)
        self._api_port = 0
        self._udp_port = 0
        self._stopping = False
        # Status (resip.server.admin): totals of ended sessions for /metrics.
        self.metrics = ServerMetrics()
        self.admin_loopback = admin_loopback

    # -- properties for callers and tests ----------------------------------------------------

    @property
    def api_port(self) -> int:
        """The bound HTTPS API port (the real one when 0 was configured)."""
        return self._api_port

    @property
    def udp_port(self) -> int:
        """The bound UDP port; the TCP fallback listens on the same number."""
        return self._udp_port

    @property
    def tcp_port(self) -> int:
        """The bound TCP fallback port (equal to :attr:`udp_port`)."""
        return self._udp_port

    @property
    def session_count(self) -> int:
        """Sessions currently held."""
        return len(self.endpoint)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every listener. Raises :class:`StartError` with a clear message."""
        try:
            await self._start()
        except BaseException:
            await self._close_sockets()
            raise

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.config
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise StartError(
                f"cannot load TLS certificate {cfg.tls_cert} / key {cfg.tls_key}: {exc}"
            ) from None
        host = cfg.listen_host
        # UDP first; with port 0 the TCP fallback then takes the same number, retrying
        # with a new pair in the unlikely case a TCP socket already holds it.
        for attempt in range(8):
            try:
                udp = await DatagramSocket.open(self._on_datagram, local=(host, cfg.resip_port))
            except OSError as exc:
                raise StartError(f"cannot bind UDP {host}:{cfg.resip_port}: {exc}") from None
            self._udp = udp
            port = udp.sockname[1] if udp.sockname is not None else cfg.resip_port
            try:
                self._tcp_server = await asyncio.start_server(
                    self._on_tcp_connection, host, port, limit=READ_CHUNK, backlog=listen_backlog()
                )
            except OSError as exc:
                udp.close()
                self._udp = None
                if cfg.resip_port != 0 or attempt == 7:
                    raise StartError(f"cannot bind TCP {host}:{port}: {exc}") from None
                continue
            self._udp_port = port
            break
        limiter = self._limiter or FailureLimiter(clock=loop.time)
        api = make_api(self, api_keys=(cfg.api_key, cfg.admin_key), limiter=limiter)
        add_admin_routes(
            api, self, admin_key=cfg.admin_key, loopback_exempt=self.admin_loopback, limiter=limiter
        )
        self._runner = web.AppRunner(api, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, host, cfg.api_port, ssl_context=tls, backlog=listen_backlog()
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartError(f"cannot bind HTTPS API {host}:{cfg.api_port}: {exc}") from None
        self._api_port = int(self._runner.addresses[0][1])
        log.info(
            "ResIP server listening: API https://%s:%d, packets udp+tcp %s:%d",
            host,
            self._api_port,
            host,
            self._udp_port,
        )

    async def stop(self, reason: str = "server shutting down") -> None:
        """Close every session (CLOSE code 3), flush, and close every socket."""
        if self._stopping:
            return
        self._stopping = True
        if self._runner is not None:
            # No new sessions while the others are being closed.
            await self._runner.cleanup()
            self._runner = None
        tasks: list[asyncio.Task[None]] = []
        for served in self.endpoint.hosts():
            tasks.extend(served.tasks)
            served.driver.close(CloseCode.SHUTDOWN, reason)
        for session in self.endpoint.sessions():
            self.endpoint.remove(session.session_id)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_sockets()
        log.info("ResIP server stopped: %s", reason)

    async def _close_sockets(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._tcp_server is not None:
            self._tcp_server.close()
        for conn in list(self._conns.values()):
            conn.close()
        conn_tasks = list(self._conn_tasks)
        if conn_tasks:
            # Closing the writer ends each handler's read loop. Cancelling the handlers
            # instead makes asyncio's stream callback (3.11) log a spurious traceback.
            _, stuck = await asyncio.wait(conn_tasks, timeout=5.0)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._tcp_server is not None:
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        if self._udp is not None:
            udp, self._udp = self._udp, None
            udp.close()
            await udp.wait_closed()

    # -- SessionService (the API's view) ---------------------------------------------------

    def create_session(self) -> dict[str, object]:
        """Make a session; returns its credentials (raises SessionLimitReached when full)."""
        loop = asyncio.get_running_loop()
        served, credentials = self.endpoint.create_session(
            loop.time(), lambda session: _ServerSession(self, session)
        )
        served.driver.flush()  # arms the idle timer
        credentials.update(
            udp_port=self.udp_port, tcp_port=self.tcp_port, server_start=self.server_start
        )
        return credentials

    def close_session(self, session_id: bytes) -> bool:
        """Close a session with CLOSE code 0; False if unknown."""
        served = self.endpoint.get(session_id)
        if served is None or served.session.terminated:
            return False
        served.driver.close(CloseCode.NORMAL, "closed through the session API")
        return True

    def _forget(self, served: _ServerSession) -> None:
        session_id = served.session.session_id
        if not served.retired:
            # Once, whoever removed it first (the endpoint sweeps terminated sessions too).
            served.retired = True
            self.metrics.retire(served.session.stats(now=served.driver.now()))
        if self.endpoint.get(session_id) is served:
            self.endpoint.remove(session_id)

    # -- packets ---------------------------------------------------------------------------

    def _on_datagram(self, sock: DatagramSocket, data: bytes, path: UdpPath) -> None:
        self._on_packet(data, path)

    def _on_packet(self, data: bytes, path: UdpPath | TcpPath) -> bool:
        """Route one packet from ``path``; True if it named a live session."""
        routed = self.endpoint.route_untrusted(data)
        if routed is None:
            return False
        served, header = routed
        served.driver.datagram_received(data, path, header=header)
        return True

    def _transmit(self, data: bytes, path: Hashable) -> None:
        if isinstance(path, TcpPath):
            conn = self._conns.get(path.conn)
            if conn is not None:
                conn.send(data)  # gone or not reading: dropped like loss
        elif isinstance(path, UdpPath) and self._udp is not None:
            self._udp.send(data, path)

    async def _on_tcp_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        path = TcpPath(next(self._conn_ids), str(writer.get_extra_info("peername")))
        try:
            async with asyncio.timeout(TCP_UNROUTED_TIMEOUT) as deadline:

                def on_packet(conn: FramedTcpConnection, packet: bytes) -> None:
                    if self._on_packet(packet, path):
                        deadline.reschedule(None)

                conn = FramedTcpConnection(path, reader, writer, on_packet, _tcp_closed)
                self._conns[path.conn] = conn
                await conn.wait_ended()
        except TimeoutError:
            log.debug("closing fallback connection %s: no valid packet", path)
        finally:
            if (gone := self._conns.pop(path.conn, None)) is not None:
                gone.close()
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._conn_tasks.discard(task)


def _tcp_closed(conn: FramedTcpConnection, error: Exception | None) -> None:
    """A fallback connection ended by itself: say why, for debugging only."""
    if error is not None:
        log.debug("fallback connection %s ended: %s", conn.path, error)

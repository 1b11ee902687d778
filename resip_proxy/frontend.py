"""The local proxy listener: SOCKS5 and HTTP proxy requests on one port, spliced into channels.

Contract
--------
:class:`ProxyFrontend` listens on one TCP address (default ``127.0.0.1:1080``) and
tells the protocols apart by the first byte: ``0x05`` is SOCKS5 (RFC 1928), anything
else is an HTTP/1.x proxy request. Each accepted request becomes one channel of the
:class:`~resip_proxy.client.SessionManager`'s session:

- SOCKS5 CONNECT and HTTP CONNECT: a TCP channel to the target; host names are sent
  as names and resolved by the server (``socks5h`` semantics). The reply waits for
  the server's STARTED (``connect_timeout``, 30 s); a TERMINATE becomes the SOCKS5
  reply with the same code, or HTTP 403 (ACL), 504 (timeout) or 502 (anything else).
  Bytes the client pipelined after its request are forwarded, not dropped.
- HTTP absolute-URI requests (``GET http://host/...``): forwarded as an HTTP/1.1
  proxy does (:mod:`resip_proxy.http_forward`): the client connection stays open for
  the next request unless either side says ``Connection: close`` or speaks HTTP/1.0,
  and each origin connection is one channel, reused for the next request to the same
  ``host:port``. A CONNECT may follow on the same connection. An idle kept-alive
  connection is closed after ``keepalive_timeout`` (60 s).
- SOCKS5 UDP ASSOCIATE: a UDP relay socket on the listener's own address, accepting
  datagrams only from the control connection's client IP (and, after the first one,
  only from that port). Fragments and malformed headers are dropped. Each destination
  gets its own UDP channel; the association ends with the control connection.
- SOCKS5 BIND: ``COMMAND_NOT_SUPPORTED``.

Any client misbehaviour (garbage, truncated or oversized handshakes, vanishing
mid-handshake) gets the codec's error reply, if any, and a closed connection; it is
logged at debug level without a traceback and never affects other connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any, cast

from resip.aio.backlog import listen_backlog
from resip.aio.driver import Listener
from resip.core import events as ev
from resip.core.codes import TerminateCode
from resip.core.errors import ResipError
from resip.core.wire import Proto

from .client import Channel, ChannelFailed, SessionManager, target_host
from .http_connect import HttpError, HttpProxyServer, ProxyRequest, response
from .http_forward import HttpForwarder, OriginStream, error_response, http_status_for
from .socks5 import (
    Host,
    ProxyProtocolError,
    Reply,
    Socks5Command,
    Socks5Error,
    Socks5Request,
    Socks5Server,
    encode_udp_datagram,
    parse_udp_datagram_untrusted,
)

__all__ = ["ProxyFrontend"]

log = logging.getLogger(__name__)

#: TERMINATE codes (PROTOCOL.md §5.6) that are also SOCKS5 reply codes.
_SOCKS_REPLIES: dict[int, Reply] = {
    TerminateCode.NOT_ALLOWED: Reply.NOT_ALLOWED,
    TerminateCode.NETWORK_UNREACHABLE: Reply.NETWORK_UNREACHABLE,
    TerminateCode.HOST_UNREACHABLE: Reply.HOST_UNREACHABLE,
    TerminateCode.CONNECTION_REFUSED: Reply.CONNECTION_REFUSED,
    TerminateCode.TIMED_OUT: Reply.TTL_EXPIRED,
    TerminateCode.ADDRESS_TYPE_NOT_SUPPORTED: Reply.ADDRESS_TYPE_NOT_SUPPORTED,
}
_READ = 16 * 1024


def socks_reply_for(code: int) -> Reply:
    """The SOCKS5 reply for a channel TERMINATE code."""
    return _SOCKS_REPLIES.get(code, Reply.GENERAL_FAILURE)


class ProxyFrontend:
    """SOCKS5 + HTTP proxy on one local port, feeding a :class:`SessionManager`."""

    def __init__(
        self,
        manager: SessionManager,
        *,
        listen: tuple[str, int] = ("127.0.0.1", 1080),
        credentials: tuple[str, str] | None = None,
        connect_timeout: float = 30.0,
        handshake_timeout: float = 30.0,
        max_udp_channels: int = 64,
        keepalive_timeout: float = 60.0,
    ) -> None:
        """``credentials`` = (user, password) requires SOCKS5/HTTP proxy authentication.

        ``keepalive_timeout`` bounds how long a kept-alive HTTP client connection may
        wait for (and send) its next request head.
        """
        self._manager = manager
        self._listen = listen
        self._credentials = credentials
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.max_udp_channels = max_udp_channels
        self.keepalive_timeout = keepalive_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (after :meth:`start`)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the frontend is not listening")
        name = self._server.sockets[0].getsockname()
        return (str(name[0]), int(name[1]))

    async def start(self) -> None:
        """Start listening. Raises ``OSError`` if the address cannot be bound."""
        host, port = self._listen
        self._server = await asyncio.start_server(
            self._handle, host, port, backlog=listen_backlog()
        )
        log.info("proxy listening on %s:%d (SOCKS5 and HTTP)", *self.address)

    async def close(self) -> None:
        """Stop listening and end every connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _check(self) -> Callable[[str, str], bool] | None:
        if self._credentials is None:
            return None
        want_user, want_pass = (s.encode() for s in self._credentials)

        def check(user: str, password: str) -> bool:
            ok_user = hmac.compare_digest(user.encode(), want_user)
            ok_pass = hmac.compare_digest(password.encode(), want_pass)
            return ok_user and ok_pass

        return check

    # -- connections --------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.handshake_timeout
            first = await self._read(reader, deadline)
            if not first:
                return
            if first[0] == 5:
                await self._socks(first, reader, writer, deadline)
            else:
                await self._http(first, reader, writer, deadline)
        except asyncio.CancelledError:
            # close() ends us. Returning normally, not cancelled, keeps asyncio's
            # start_server callback from reporting the cancellation as an error.
            pass
        except TimeoutError:
            log.debug("client %s: handshake timed out", peer)
        except (ConnectionError, OSError) as exc:
            log.debug("client %s: %s", peer, exc)
        except Exception:  # a bug here must not take other connections down
            log.exception("unexpected failure serving %s", peer)
        finally:
            writer.close()
            # close() may cancel us again while we wait here (a second Ctrl-C, or the
            # loop's shutdown): this task ends either way, so a cancellation now would
            # only surface as a traceback from asyncio's connection callback.
            with contextlib.suppress(OSError, ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _read(reader: asyncio.StreamReader, deadline: float) -> bytes:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        return await asyncio.wait_for(reader.read(_READ), remaining)

    async def _open(self, host: Host, port: int, peer: object = None) -> Channel:
        """A started TCP channel to ``host:port``; raises ChannelFailed.

        ``peer`` (the local client's address) is kept on the session's channel for
        status views (``resip-proxy status``); failures go to the manager's event log.
        """
        channel = self._new_channel(host, port, peer)
        try:
            await channel.wait_started(self.connect_timeout)
        except asyncio.CancelledError:
            channel.reset(0, "cancelled")
            raise
        except ChannelFailed as exc:
            self._manager.note("channel-failed", f"{host}:{port}: {exc}")
            raise
        return channel

    async def _open_origin(self, host: Host, port: int, peer: object) -> OriginStream:
        """Like :meth:`_open`, as the stream of one origin connection of the HTTP proxy."""
        stream = OriginStream(host, port)
        channel = self._new_channel(host, port, peer, stream.on_event)
        try:
            await stream.start(channel, self.connect_timeout)
        except ChannelFailed as exc:
            self._manager.note("channel-failed", f"{host}:{port}: {exc}")
            raise
        return stream

    def _new_channel(
        self, host: Host, port: int, peer: object, listener: Listener | None = None
    ) -> Channel:
        try:
            channel = self._manager.open_channel(
                target_host(host), port, Proto.TCP, listener=listener
            )
        except ChannelFailed as exc:
            self._manager.note("channel-failed", f"{host}:{port}: {exc}")
            raise
        if isinstance(peer, tuple) and len(peer) >= 2:
            state = channel.driver.session.channels.get(channel.id)
            if state is not None:
                state.extra["local_peer"] = f"{peer[0]}:{peer[1]}"
        return channel

    # -- SOCKS5 -------------------------------------------------------------------------

    async def _socks(
        self,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
    ) -> None:
        codec = Socks5Server(credentials=self._check())
        while True:
            codec.receive_data(data)
            out = codec.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            event = codec.next_event()
            if isinstance(event, Socks5Error):
                log.debug("SOCKS5 handshake failed: %s", event.message)
                return
            if isinstance(event, Socks5Request):
                break
            data = await self._read(reader, deadline)
            if not data:
                return  # vanished mid-handshake
        if event.command is Socks5Command.CONNECT:
            await self._socks_connect(codec, event, reader, writer)
        elif event.command is Socks5Command.UDP_ASSOCIATE:
            await self._socks_udp(codec, reader, writer)
        else:
            writer.write(codec.reply(Reply.COMMAND_NOT_SUPPORTED))
            await writer.drain()

    async def _socks_connect(
        self,
        codec: Socks5Server,
        request: Socks5Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            channel = await self._open(
                request.host, request.port, writer.get_extra_info("peername")
            )
        except ChannelFailed as exc:
            log.info("SOCKS5 CONNECT %s:%d failed: %s", request.host, request.port, exc)
            writer.write(codec.reply(socks_reply_for(exc.code)))
            await writer.drain()
            return
        log.debug("SOCKS5 CONNECT %s:%d on channel %d", request.host, request.port, channel.id)
        writer.write(codec.reply(Reply.SUCCEEDED))
        await channel.splice(reader, writer).run(initial=codec.trailing_data())

    async def _socks_udp(
        self, codec: Socks5Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        local_ip = writer.get_extra_info("sockname")[0]
        client_ip = writer.get_extra_info("peername")[0]
        relay = _UdpRelay(self._manager, client_ip, self.max_udp_channels)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: relay, local_addr=(local_ip, 0)
            )
        except OSError as exc:
            log.info("cannot open a UDP relay socket: %s", exc)
            writer.write(codec.reply(Reply.GENERAL_FAILURE))
            await writer.drain()
            return
        try:
            bound = transport.get_extra_info("sockname")
            writer.write(codec.reply(Reply.SUCCEEDED, (ipaddress.ip_address(bound[0]), bound[1])))
            await writer.drain()
            # RFC 1928 §7: the association lives exactly as long as the control connection.
            while await reader.read(_READ):
                pass
        finally:
            relay.close()

    # -- HTTP ---------------------------------------------------------------------------

    async def _http(
        self,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
    ) -> None:
        peer = writer.get_extra_info("peername")
        forwarder = HttpForwarder(reader, writer, functools.partial(self._open_origin, peer=peer))
        kept_alive = False
        try:
            while True:
                try:
                    parsed = await self._http_request(data, reader, writer, deadline)
                except TimeoutError:
                    if not kept_alive:
                        raise
                    log.debug("client %s: idle kept-alive connection closed", peer)
                    return
                if parsed is None:
                    return
                request, data = parsed
                if request.is_connect:
                    forwarder.close()
                    await self._http_connect(request, data, reader, writer)
                    return
                rest = await forwarder.forward(request, data)
                if rest is None:
                    return
                data, kept_alive = rest, True
                # Kept alive: the next request head may take this long to arrive.
                deadline = asyncio.get_running_loop().time() + self.keepalive_timeout
        finally:
            forwarder.close()

    async def _http_request(
        self,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
    ) -> tuple[ProxyRequest, bytes] | None:
        """The next request head and the bytes after it; None once answered or gone."""
        codec = HttpProxyServer(credentials=self._check())
        while True:
            if data:
                codec.receive_data(data)
                event = codec.next_event()
                if isinstance(event, HttpError):
                    log.debug("HTTP proxy request rejected: %d %s", event.status, event.reason)
                    writer.write(event.response())
                    await writer.drain()
                    return None
                if isinstance(event, ProxyRequest):
                    return event, codec.trailing_data()
            data = await self._read(reader, deadline)
            if not data:
                return None  # vanished mid-request, or closed between requests

    async def _http_connect(
        self,
        request: ProxyRequest,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            channel = await self._open(
                request.host, request.port, writer.get_extra_info("peername")
            )
        except ChannelFailed as exc:
            log.info("HTTP CONNECT %s:%d failed: %s", request.host, request.port, exc)
            writer.write(error_response(http_status_for(exc.code), exc.reason))
            await writer.drain()
            return
        writer.write(response(200, "Connection established"))
        await channel.splice(reader, writer).run(initial=data)


class _UdpRelay(asyncio.DatagramProtocol):
    """One SOCKS5 UDP association: client datagrams <-> one UDP channel per destination."""

    def __init__(self, manager: SessionManager, client_ip: str, max_channels: int) -> None:
        self._manager = manager
        self._client_ip = client_ip
        self._client_port: int | None = None
        self._max_channels = max_channels
        self._transport: asyncio.DatagramTransport | None = None
        self._channels: dict[tuple[Host, int], Channel] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast("asyncio.DatagramTransport", transport)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP relay error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        ip, port = addr[0], addr[1]
        if ip != self._client_ip or (self._client_port is not None and port != self._client_port):
            return  # only the client that asked for this association may use it
        try:
            datagram = parse_udp_datagram_untrusted(data)
        except ProxyProtocolError:
            return
        if datagram.frag != 0 or datagram.port == 0:
            return  # we do not reassemble fragments (RFC 1928 §7 allows dropping them)
        self._client_port = port
        key = (datagram.host, datagram.port)
        channel = self._channels.get(key)
        if channel is None or channel.driver.closed:
            if len(self._channels) >= self._max_channels:
                return
            try:
                channel = self._manager.open_channel(
                    target_host(datagram.host),
                    datagram.port,
                    Proto.UDP,
                    listener=functools.partial(self._on_event, key),
                )
            except ChannelFailed as exc:
                log.debug("UDP channel to %s:%d refused: %s", *key, exc)
                return
            self._channels[key] = channel
        driver = channel.driver
        try:
            driver.session.send_datagram(channel.id, datagram.data, now=driver.now())
        except ResipError:
            self._channels.pop(key, None)
            return
        driver.flush()

    def _on_event(self, key: tuple[Host, int], event: ev.Event) -> None:
        channel = self._channels.get(key)
        match event:
            case ev.ChannelData(channel_id, data):
                if channel is not None and channel.id == channel_id:
                    channel.driver.session.consume(channel_id, len(data))
                transport = self._transport
                if transport is not None and self._client_port is not None:
                    transport.sendto(
                        encode_udp_datagram(key[0], key[1], data),
                        (self._client_ip, self._client_port),
                    )
            case ev.ChannelTerminated(channel_id) | ev.ChannelClosed(channel_id):
                if channel is not None and channel.id == channel_id:
                    self._channels.pop(key, None)
                    channel.driver.unlisten(channel.id)
            case _:
                pass

    def close(self) -> None:
        """End the association: every channel and the relay socket."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            channel.reset(0, "UDP association closed")
        if self._transport is not None:
            self._transport.close()
            self._transport = None

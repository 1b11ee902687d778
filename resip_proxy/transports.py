"""The client's two ways to the server: a connected UDP socket and a framed TCP connection.

Thin asyncio objects that only move bytes; which one the session uses is decided by
:class:`~resip_proxy.transport_policy.TransportPolicy`. Both report through callbacks
that receive the object itself, so the owner can ignore one it has already replaced.

- :class:`UdpSocket`: the datagram protocol of a socket connected to the server's UDP
  port. A send error that means the socket's source address vanished (the laptop left
  the network) is reported as ``on_dead``; other errors (ICMP port unreachable) are
  loss, which the session handles.
- :class:`FramedTcpConnection`: one TCP fallback connection (PROTOCOL.md §8): packets
  out as length-prefixed frames, frames in as packets. Beyond :data:`TCP_WRITE_CAP`
  queued bytes a packet is dropped like loss on UDP: the session retransmits, and the
  socket buffer never grows unbounded. ``on_closed`` fires once when the connection
  ends by itself (not after :meth:`~FramedTcpConnection.close`).
- :class:`ServerLinks`: the one UDP socket and the at most one TCP connection (numbered
  by the policy's attempts) a client has to its server. It carries out the policy's
  socket actions and reports back in the policy's inputs; the session's paths are the
  server's UDP address and ``("tcp", attempt)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable, Hashable
from typing import Any, cast

from resip.aio.socket_buffers import enlarge_buffers
from resip.errors import WireError
from resip.framing import FrameDecoder, encode_frame

from .session_api import describe_error
from .transport_events import Input, TcpClosed, TcpConnected, TcpFailed, UdpSocketDead, Via

__all__ = [
    "DEAD_SOCKET_ERRNOS",
    "TCP_WRITE_CAP",
    "FramedTcpConnection",
    "ServerLinks",
    "UdpSocket",
]

log = logging.getLogger(__name__)

#: Send errors that mean the UDP socket itself is unusable (its source address vanished).
DEAD_SOCKET_ERRNOS = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EINVAL})
#: Bytes queued on a TCP fallback connection beyond which packets are dropped.
TCP_WRITE_CAP = 1 << 20


def _sockname(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    name = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(name, tuple) or len(name) < 2:
        return None
    return str(name[0]), int(name[1])


class UdpSocket(asyncio.DatagramProtocol):
    """A UDP socket connected to one server address."""

    def __init__(
        self,
        on_datagram: Callable[[UdpSocket, bytes], None],
        on_dead: Callable[[UdpSocket], None],
    ) -> None:
        self._on_datagram = on_datagram
        self._on_dead = on_dead
        self._transport: asyncio.DatagramTransport | None = None
        #: A send failed because the socket's address is gone (reported once).
        self.dead = False

    @classmethod
    async def open(
        cls,
        remote: tuple[str, int],
        on_datagram: Callable[[UdpSocket, bytes], None],
        on_dead: Callable[[UdpSocket], None],
    ) -> UdpSocket:
        """A new socket (new local port) connected to ``remote``; raises OSError."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(on_datagram, on_dead), remote_addr=remote
        )
        enlarge_buffers(transport)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram transport, though not by class (CPython's is a plain Transport).
        self._transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._on_datagram(self, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the session treats silence as loss. But a
        # socket that cannot even send (its address is gone) needs replacing.
        log.debug("UDP error: %s", exc)
        if isinstance(exc, OSError) and exc.errno in DEAD_SOCKET_ERRNOS and not self.dead:
            self.dead = True  # once: every later send fails the same way
            self._on_dead(self)

    def send(self, data: bytes) -> None:
        """Send one datagram (dropped if the socket is closed)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data)

    def close(self) -> None:
        """Close the socket; nothing is reported after this."""
        self._on_datagram = lambda sock, data: None
        self._on_dead = lambda sock: None
        if self._transport is not None:
            self._transport.close()

    @property
    def sockname(self) -> tuple[str, int] | None:
        """The local ``(host, port)``, or None."""
        return _sockname(self._transport)


class FramedTcpConnection:
    """One TCP fallback connection carrying framed packets; see the module docstring."""

    def __init__(
        self,
        number: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_packet: Callable[[FramedTcpConnection, bytes], None],
        on_closed: Callable[[FramedTcpConnection], None],
    ) -> None:
        #: The owner's name for this connection (the policy's attempt number).
        self.number = number
        self._writer = writer
        self._on_packet = on_packet
        self._on_closed = on_closed
        self._closed = False
        self._reading = asyncio.create_task(self._read(reader), name=f"resip-tcp-{number}")

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        number: int,
        on_packet: Callable[[FramedTcpConnection, bytes], None],
        on_closed: Callable[[FramedTcpConnection], None],
    ) -> FramedTcpConnection:
        """Connect to ``host:port``; raises OSError (a timeout is the caller's business)."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(number, reader, writer, on_packet, on_closed)

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (or was closed)."""
        return self._closed or self._writer.is_closing()

    def send(self, packet: bytes) -> None:
        """Queue one packet as a frame; dropped like loss beyond the write cap."""
        if self.closed or self._writer.transport.get_write_buffer_size() > TCP_WRITE_CAP:
            return
        self._writer.write(encode_frame(packet))

    def close(self) -> None:
        """Close the connection; nothing is reported after this."""
        self._closed = True
        self._reading.cancel()
        self._writer.close()

    async def wait_closed(self) -> None:
        """Return once the connection is fully closed."""
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()

    @property
    def sockname(self) -> tuple[str, int] | None:
        """The local ``(host, port)``, or None."""
        return _sockname(self._writer.transport)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                for packet in decoder.feed_untrusted(data):
                    if self._closed:
                        return
                    self._on_packet(self, packet)
        except (OSError, WireError) as exc:
            log.info("TCP fallback connection failed: %s", exc)
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._on_closed(self)


class ServerLinks:
    """The client's UDP socket and TCP fallback connection to one server."""

    def __init__(
        self,
        host: str,
        udp_port: int,
        tcp_port: int,
        *,
        on_packet: Callable[[Via, bytes], None],
        report: Callable[[Input], None],
    ) -> None:
        self.host = host
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self._on_packet = on_packet
        self._report = report
        self.udp: UdpSocket | None = None
        self.tcp: FramedTcpConnection | None = None
        #: The TCP connection being established: (attempt, task).
        self._connecting: tuple[int, asyncio.Task[None]] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def udp_path(self) -> tuple[str, int]:
        """The server's UDP address."""
        return (self.host, self.udp_port)

    def path(self, via: Via) -> Hashable | None:
        """The session's path for ``via`` (None: no TCP connection right now)."""
        if via is Via.UDP:
            return self.udp_path
        return ("tcp", self.tcp.number) if self.tcp is not None else None

    def send(self, data: bytes, path: Hashable) -> None:
        """Send to the session's ``path``; a connection that is gone is like loss."""
        if isinstance(path, tuple) and path[:1] == ("tcp",):
            if self.tcp is not None and path[1] == self.tcp.number:
                self.tcp.send(data)
        elif self.udp is not None:
            self.udp.send(data)

    def sockname(self, via: Via) -> tuple[str, int] | None:
        """The local address packets over ``via`` leave from."""
        link = self.tcp if via is Via.TCP else self.udp
        return link.sockname if link is not None else None

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def open_udp(self) -> None:
        """Replace the UDP socket (new local address and port); raises OSError."""
        new = await UdpSocket.open(self.udp_path, self._on_udp_datagram, self._on_udp_dead)
        old, self.udp = self.udp, new
        if old is not None:
            old.close()

    async def reopen_udp(self) -> bool:
        """:meth:`open_udp`, a failure logged and reported as UdpSocketDead."""
        try:
            await self.open_udp()
        except OSError as exc:
            log.info("cannot open a new UDP socket: %s", describe_error(exc))
            self._report(UdpSocketDead(self._now()))
            return False
        return True

    def _on_udp_datagram(self, sock: UdpSocket, data: bytes) -> None:
        if sock is self.udp:
            self._on_packet(Via.UDP, data)

    def _on_udp_dead(self, sock: UdpSocket) -> None:
        if sock is self.udp:
            self._report(UdpSocketDead(self._now()))

    def connect_tcp(self, attempt: int) -> None:
        """Start TCP connection ``attempt``; reported as TcpConnected or TcpFailed."""
        task = asyncio.create_task(self._open_tcp(attempt), name=f"resip-tcp-connect-{attempt}")
        self._connecting = (attempt, task)

    async def _open_tcp(self, attempt: int) -> None:
        # No timeout here: the policy gives up with CloseTcp (TCP_CONNECT_TIMEOUT).
        try:
            tcp = await FramedTcpConnection.open(
                self.host, self.tcp_port, attempt, self._on_tcp_packet, self._on_tcp_closed
            )
        except OSError as exc:
            log.info("TCP fallback to port %d failed: %s", self.tcp_port, describe_error(exc))
            if self._connecting is not None and self._connecting[0] == attempt:
                self._connecting = None
                self._report(TcpFailed(self._now(), attempt))
            return
        if self._connecting is None or self._connecting[0] != attempt:
            tcp.close()  # given up on meanwhile
            return
        self._connecting, self.tcp = None, tcp
        self._report(TcpConnected(self._now(), attempt))

    def close_tcp(self, attempt: int) -> None:
        """Stop connecting or close connection ``attempt``; nothing about it is reported."""
        if self._connecting is not None and self._connecting[0] == attempt:
            self._connecting[1].cancel()
            self._connecting = None
        tcp = self.tcp
        if tcp is not None and tcp.number == attempt:
            self.tcp = None  # frames of the old connection are ignored from now on
            tcp.close()
            task = asyncio.create_task(tcp.wait_closed())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _on_tcp_packet(self, tcp: FramedTcpConnection, packet: bytes) -> None:
        if tcp is self.tcp:
            self._on_packet(Via.TCP, packet)

    def _on_tcp_closed(self, tcp: FramedTcpConnection) -> None:
        if tcp is self.tcp:
            self.tcp = None
            self._report(TcpClosed(self._now(), tcp.number))

    async def close(self) -> None:
        """Close everything; nothing is reported after this."""
        self._report = lambda event: None
        if self._connecting is not None:
            self._connecting[1].cancel()
            self._connecting = None
        if self.tcp is not None:
            self.tcp.close()
            self._closing.add(asyncio.create_task(self.tcp.wait_closed()))
            self.tcp = None
        for task in list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.udp is not None:
            self.udp.close()
            self.udp = None

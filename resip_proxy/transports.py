"""The client's two ways to the server: a connected UDP socket and a framed TCP connection.

The sockets themselves are :mod:`resip.aio.transport`'s, shared with the server; which
one the session uses is decided by
:class:`~resip_proxy.transport_policy.TransportPolicy`.
:class:`ServerLinks` holds the one UDP socket and the at most one TCP connection
(numbered by the policy's attempts) a client has to its server. It carries out the
policy's socket actions and reports back in the policy's inputs; the session's paths
are the server's :class:`~resip.core.paths.UdpPath` and ``TcpPath(attempt)``.

- A UDP send error that means the socket's source address vanished (the laptop left
  the network) is reported as UdpSocketDead, once per socket; other errors (ICMP port
  unreachable) are loss, which the session handles.
- A TCP connection that ends by itself is reported as TcpClosed; one closed on the
  policy's orders reports nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable

from resip.aio.transport import DEAD_SOCKET_ERRNOS, DatagramSocket, FramedTcpConnection
from resip.core.paths import TcpPath, UdpPath

from .session_api import describe_error
from .transport_events import Input, TcpClosed, TcpConnected, TcpFailed, UdpSocketDead, Via

__all__ = [
    "DEAD_SOCKET_ERRNOS",
    "ServerLinks",
]

log = logging.getLogger(__name__)


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
        self.udp: DatagramSocket | None = None
        self.tcp: FramedTcpConnection | None = None
        #: The TCP connection being established: (attempt, task).
        self._connecting: tuple[int, asyncio.Task[None]] | None = None
        self._closing: set[asyncio.Task[None]] = set()

        #: The server's UDP address: the session's path when on UDP.
        self.udp_path = UdpPath(host, udp_port)

    def path(self, via: Via) -> UdpPath | TcpPath | None:
        """The session's path for ``via`` (None: no TCP connection right now)."""
        if via is Via.UDP:
            return self.udp_path
        return self.tcp.path if self.tcp is not None else None

    def send(self, data: bytes, path: Hashable) -> None:
        """Send to the session's ``path``; a connection that is gone is like loss."""
        if isinstance(path, TcpPath):
            if self.tcp is not None and path == self.tcp.path:
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
        new = await DatagramSocket.open(
            self._on_udp_datagram, self._on_udp_dead, remote=self.udp_path
        )
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

    def _on_udp_datagram(self, sock: DatagramSocket, data: bytes, path: UdpPath) -> None:
        if sock is self.udp:
            self._on_packet(Via.UDP, data)

    def _on_udp_dead(self, sock: DatagramSocket) -> None:
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
                self.host,
                self.tcp_port,
                TcpPath(attempt),
                self._on_tcp_packet,
                self._on_tcp_closed,
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
        if tcp is not None and tcp.path.conn == attempt:
            self.tcp = None  # frames of the old connection are ignored from now on
            tcp.close()
            task = asyncio.create_task(tcp.wait_closed())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _on_tcp_packet(self, tcp: FramedTcpConnection, packet: bytes) -> None:
        if tcp is self.tcp:
            self._on_packet(Via.TCP, packet)

    def _on_tcp_closed(self, tcp: FramedTcpConnection, error: Exception | None) -> None:
        if error is not None:
            log.info("TCP fallback connection failed: %s", error)
        if tcp is self.tcp:
            self.tcp = None
            self._report(TcpClosed(self._now(), tcp.path.conn))

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

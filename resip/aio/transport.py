"""The asyncio sockets a session's packets travel over, shared by the server and the client.

Two thin objects that only move bytes; which path a session uses is its owner's
business. Both report through callbacks that receive the object itself, so an owner can
ignore one it has already replaced.

- :class:`DatagramSocket`: one UDP socket, bound (the server's port) or connected (the
  client's socket to the server). Datagrams arrive as ``(socket, data, UdpPath)``. An
  error that means the socket's own address is gone (:data:`DEAD_SOCKET_ERRNOS`: the
  laptop left the network) is reported once through ``on_dead`` when the owner asks for
  it; every other error (ICMP port unreachable about one peer) is loss, which the session
  handles, and is only logged.
- :class:`FramedTcpConnection`: one TCP fallback connection (PROTOCOL.md §8), named by
  its :class:`~resip.core.paths.TcpPath`: packets out as length-prefixed frames, frames in as
  packets. ``on_closed`` fires once, with the error if any, when the connection ends by
  itself (a frame error, EOF, a socket error), never after :meth:`close`.

Beyond :data:`FRAMED_WRITE_CAP` bytes queued on a connection a packet is dropped, as a
full socket buffer drops it on UDP: the session retransmits and backs off, and a peer
that stops reading cannot make us buffer without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from resip.aio.socket_buffers import BUFFER_BYTES, enlarge_buffers
from resip.core.errors import WireError
from resip.core.framing import FrameDecoder, encode_frame
from resip.core.paths import TcpPath, UdpPath

__all__ = [
    "DEAD_SOCKET_ERRNOS",
    "FRAMED_WRITE_CAP",
    "READ_CHUNK",
    "DatagramSocket",
    "FramedTcpConnection",
]

log = logging.getLogger(__name__)

#: Send errors that mean a UDP socket itself is unusable (its source address vanished).
DEAD_SOCKET_ERRNOS = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EINVAL})
#: Bytes queued (in asyncio, beyond the kernel's buffer) on one fallback connection past
#: which packets are dropped like loss. The same room the kernel gets for a UDP socket
#: (:data:`~resip.aio.socket_buffers.BUFFER_BYTES`), so the fallback is neither more
#: lossy nor more bloated than UDP. It is a backstop for a peer that stopped reading:
#: the session's congestion window keeps a healthy link far below it, and a smaller cap
#: (the client had 1 MiB) could drop packets the window allows on a long fat link.
FRAMED_WRITE_CAP = BUFFER_BYTES
#: Largest single read from a fallback connection (also its StreamReader limit).
READ_CHUNK = 64 * 1024


def _sockname(transport: asyncio.BaseTransport | None) -> tuple[str, int] | None:
    name = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(name, tuple) or len(name) < 2:
        return None
    return str(name[0]), int(name[1])


class DatagramSocket(asyncio.DatagramProtocol):
    """One UDP socket carrying a session's packets; see the module docstring."""

    def __init__(
        self,
        on_datagram: Callable[[DatagramSocket, bytes, UdpPath], None],
        on_dead: Callable[[DatagramSocket], None] | None = None,
    ) -> None:
        self._on_datagram = on_datagram
        self._on_dead = on_dead
        self._transport: asyncio.DatagramTransport | None = None
        #: A send failed because the socket's address is gone (reported once).
        self.dead = False
        # close() only schedules the socket's release; wait_closed() waits for it, so a
        # new server can bind the same port as soon as the old one says it stopped.
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls,
        on_datagram: Callable[[DatagramSocket, bytes, UdpPath], None],
        on_dead: Callable[[DatagramSocket], None] | None = None,
        *,
        local: tuple[str, int] | None = None,
        remote: UdpPath | None = None,
    ) -> DatagramSocket:
        """A socket bound to ``local`` or connected to ``remote``; raises OSError."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: cls(on_datagram, on_dead),
            local_addr=local,
            remote_addr=remote.address if remote is not None else None,
        )
        enlarge_buffers(transport)
        return protocol

    # -- asyncio.DatagramProtocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio callback)."""
        # A datagram transport, though not by class (CPython's is a plain Transport).
        self._transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Hand a datagram and its source to ``on_datagram`` (asyncio callback)."""
        self._on_datagram(self, data, UdpPath.from_address(addr))

    def error_received(self, exc: Exception) -> None:
        """Log an error; report a dead socket once (asyncio callback)."""
        log.debug("UDP error: %s", exc)
        if self._on_dead is None or self.dead:
            return
        if isinstance(exc, OSError) and exc.errno in DEAD_SOCKET_ERRNOS:
            self.dead = True  # once: every later send fails the same way
            self._on_dead(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the socket released (asyncio callback)."""
        if not self._closed.done():
            self._closed.set_result(None)

    # -- API --
    def send(self, data: bytes, path: UdpPath | None = None) -> None:
        """Send one datagram to ``path`` (None: the connected peer); dropped once closed."""
        if self._transport is not None and not self._transport.is_closing():
            if path is None:
                self._transport.sendto(data)
            else:
                self._transport.sendto(data, path.address)

    def close(self) -> None:
        """Close the socket; nothing is reported after this."""
        self._on_datagram = lambda sock, data, path: None
        self._on_dead = None
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Return once the kernel released the socket (after :meth:`close`)."""
        if self._transport is not None:
            await self._closed

    @property
    def sockname(self) -> tuple[str, int] | None:
        """The local ``(host, port)``, or None."""
        return _sockname(self._transport)


class FramedTcpConnection:
    """One TCP fallback connection carrying framed packets; see the module docstring."""

    def __init__(
        self,
        path: TcpPath,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_packet: Callable[[FramedTcpConnection, bytes], None],
        on_closed: Callable[[FramedTcpConnection, Exception | None], None],
    ) -> None:
        #: The session's name for this connection.
        self.path = path
        self._writer = writer
        self._on_packet = on_packet
        self._on_closed = on_closed
        self._closed = False
        # Packets are small and paced by the session: Nagle would only add delay.
        with contextlib.suppress(OSError, AttributeError):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reading = asyncio.create_task(self._read(reader), name=f"resip-tcp-{path.conn}")

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: TcpPath,
        on_packet: Callable[[FramedTcpConnection, bytes], None],
        on_closed: Callable[[FramedTcpConnection, Exception | None], None],
    ) -> FramedTcpConnection:
        """Connect to ``host:port``; raises OSError (a timeout is the caller's business)."""
        reader, writer = await asyncio.open_connection(host, port, limit=READ_CHUNK)
        return cls(path, reader, writer, on_packet, on_closed)

    @property
    def closed(self) -> bool:
        """Whether the connection has ended (or was closed)."""
        return self._closed or self._writer.is_closing()

    def send(self, packet: bytes) -> None:
        """Queue one packet as a frame; dropped like loss beyond :data:`FRAMED_WRITE_CAP`."""
        if self.closed or self._writer.transport.get_write_buffer_size() > FRAMED_WRITE_CAP:
            return
        self._writer.write(encode_frame(packet))

    def close(self) -> None:
        """Close the connection; nothing is reported after this."""
        self._closed = True
        self._reading.cancel()
        self._writer.close()

    async def wait_ended(self) -> None:
        """Return once reading has stopped; cancelling this wait leaves the connection be."""
        await asyncio.wait({self._reading})

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
        error: Exception | None = None
        try:
            while data := await reader.read(READ_CHUNK):
                for packet in decoder.feed_untrusted(data):
                    if self._closed:
                        return
                    self._on_packet(self, packet)
        except (OSError, WireError) as exc:
            error = exc
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._on_closed(self, error)

"""Opening channel targets (TCP streams and UDP datagram sockets) under the server's ACL.

Contract:

- ``host`` is an :class:`~ipaddress.IPv4Address`/:class:`~ipaddress.IPv6Address` or a
  string. A numeric spelling (including ``127.1``, ``0x7f.1``, ``[::1]``) is decoded with
  :func:`~resip.server.acl.parse_numeric_host` and never reaches DNS; anything else is a
  host name resolved with ``loop.getaddrinfo`` (the server does the DNS, as ``socks5h``
  clients expect).
- :meth:`Acl.check <resip.server.acl.Acl.check>` runs on **every** resolved address and
  only allowed ones are tried, in resolver order. The connection is made to exactly the
  checked numeric address on a socket we create ourselves, so nothing re-resolves the name
  and a rebinding resolver cannot slip a second, unchecked answer in (security-anchors T18).
- Every failure raises :class:`ConnectError` with the TERMINATE code of PROTOCOL.md §5.6
  and a reason fit to show the user (no secrets, no tracebacks). ``timeout`` bounds the
  whole operation, name resolution included.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import cast

from resip.core.codes import TerminateCode
from resip.core.errors import ResipError
from resip.server.acl import Acl, parse_numeric_host

__all__ = [
    "ConnectError",
    "UdpTarget",
    "format_target",
    "open_tcp",
    "open_udp",
    "resolve",
]

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address

#: Largest datagram read from a UDP target (the largest a UDP/IPv4 datagram can carry).
MAX_UDP_PAYLOAD = 65507

_NET_UNREACH = {errno.ENETUNREACH, errno.ENETDOWN}
_HOST_UNREACH = {errno.EHOSTUNREACH, errno.EHOSTDOWN}


class ConnectError(ResipError):
    """A target could not be opened; ``code`` is the TERMINATE code to send."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def format_target(host: IPAddress | str, port: int) -> str:
    """``host:port`` with IPv6 addresses bracketed, for messages."""
    if isinstance(host, IPv6Address) or (isinstance(host, str) and ":" in host):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


async def resolve(
    host: IPAddress | str,
    port: int,
    *,
    kind: socket.SocketKind,
    timeout: float,  # noqa: ASYNC109
) -> list[IPAddress]:
    """The addresses ``host`` stands for, in resolver order, without duplicates.

    Raises :class:`ConnectError` (4 when the name does not resolve, 6 on timeout).
    """
    if isinstance(host, (IPv4Address, IPv6Address)):
        return [host]
    numeric = parse_numeric_host(host)
    if numeric is not None:
        return [numeric]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=kind)
    except TimeoutError:
        raise ConnectError(
            TerminateCode.TIMED_OUT, f"resolving {host!r} timed out after {timeout:g} s"
        ) from None
    except (socket.gaierror, UnicodeError) as exc:
        detail = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid name"
        raise ConnectError(
            TerminateCode.HOST_UNREACHABLE, f"name {host!r} does not resolve: {detail}"
        ) from None
    addresses: list[IPAddress] = []
    for _, _, _, _, sockaddr in infos:
        try:
            # AF_INET/AF_INET6 only (asyncio filters the rest); a scope id is kept.
            addr = ip_address(sockaddr[0])
        except ValueError:
            continue
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise ConnectError(
            TerminateCode.HOST_UNREACHABLE, f"name {host!r} has no IPv4 or IPv6 address"
        )
    return addresses


def _allowed(
    addresses: list[IPAddress], host: IPAddress | str, port: int, acl: Acl
) -> list[IPAddress]:
    allowed: list[IPAddress] = []
    first_denial: str | None = None
    for addr in addresses:
        decision = acl.check(addr, port)
        if decision.allowed:
            allowed.append(addr)
        elif first_denial is None:
            shown = format_target(addr, port)
            if isinstance(host, str) and parse_numeric_host(host) is None:
                shown = f"{format_target(host, port)} ({addr})"
            first_denial = f"target {shown} not allowed: {decision.reason}"
    if not allowed:
        assert first_denial is not None  # addresses is never empty
        log.info("%s", first_denial)
        raise ConnectError(TerminateCode.NOT_ALLOWED, first_denial)
    return allowed


def _classify(exc: OSError, addr: IPAddress, port: int) -> ConnectError:
    target = format_target(addr, port)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(TerminateCode.CONNECTION_REFUSED, f"connection refused by {target}")
    if isinstance(exc, TimeoutError):
        return ConnectError(TerminateCode.TIMED_OUT, f"connection to {target} timed out")
    if exc.errno in _NET_UNREACH:
        return ConnectError(TerminateCode.NETWORK_UNREACHABLE, f"network unreachable for {target}")
    if exc.errno in _HOST_UNREACH:
        return ConnectError(TerminateCode.HOST_UNREACHABLE, f"host unreachable: {target}")
    return ConnectError(
        TerminateCode.GENERAL_FAILURE, f"cannot connect to {target}: {exc.strerror or exc}"
    )


def _family(addr: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET6 if isinstance(addr, IPv6Address) else socket.AF_INET


async def _connect_tcp(
    addr: IPAddress, port: int, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    sock = socket.socket(_family(addr), socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        # A numeric address: sock_connect does not consult DNS for it.
        await loop.sock_connect(sock, (str(addr), port))
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return await asyncio.open_connection(sock=sock, limit=limit)
    except BaseException:  # also on cancellation (timeout): never leak the socket
        sock.close()
        raise


async def open_tcp(
    host: IPAddress | str,
    port: int,
    *,
    acl: Acl,
    # The deadline is ours, not the caller's: it goes into the TERMINATE reason.
    timeout: float,  # noqa: ASYNC109
    limit: int = 1 << 16,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``host:port`` over TCP if the ACL allows it.

    Allowed addresses are tried in resolver order until one connects; the error of the
    last attempt is raised if none does. Raises :class:`ConnectError`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    addresses = await resolve(host, port, kind=socket.SOCK_STREAM, timeout=timeout)
    error = ConnectError(
        TerminateCode.GENERAL_FAILURE, f"cannot connect to {format_target(host, port)}"
    )
    for addr in _allowed(addresses, host, port, acl):
        remaining = deadline - loop.time()
        if remaining <= 0:
            error = ConnectError(
                TerminateCode.TIMED_OUT, f"connection to {format_target(addr, port)} timed out"
            )
            break
        try:
            async with asyncio.timeout(remaining):
                return await _connect_tcp(addr, port, limit)
        except TimeoutError:
            error = ConnectError(
                TerminateCode.TIMED_OUT,
                f"connection to {format_target(addr, port)} timed out after {timeout:g} s",
            )
        except OSError as exc:
            error = _classify(exc, addr, port)
    raise error


class UdpTarget(asyncio.DatagramProtocol):
    """A connected UDP socket to one checked target address.

    Datagrams from the target go to ``on_datagram``; only the connected address can
    reach it (the kernel filters others). ICMP errors (port unreachable) are reported to
    ``on_error`` if given and otherwise ignored, as UDP applications expect.
    """

    def __init__(
        self,
        on_datagram: Callable[[bytes], None],
        on_error: Callable[[OSError], None] | None = None,
    ) -> None:
        self._on_datagram = on_datagram
        self._on_error = on_error
        self.transport: asyncio.DatagramTransport | None = None
        self.address: tuple[IPAddress, int] | None = None
        self._closed = asyncio.get_running_loop().create_future()

    # -- asyncio.DatagramProtocol --
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (asyncio callback)."""
        # asyncio's selector datagram transport does not subclass DatagramTransport.
        self.transport = cast("asyncio.DatagramTransport", transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        """Hand a reply to ``on_datagram`` (asyncio callback)."""
        self._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        """Report an ICMP error (asyncio callback)."""
        if self._on_error is not None and isinstance(exc, OSError):
            self._on_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the socket closed (asyncio callback)."""
        if not self._closed.done():
            self._closed.set_result(None)

    # -- API --
    def send(self, data: bytes) -> None:
        """Send one datagram to the target; silently dropped once closed."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data)

    def close(self) -> None:
        """Close the socket."""
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        """Return once the socket is closed."""
        await self._closed


async def _bind_udp(
    loop: asyncio.AbstractEventLoop, target: UdpTarget, addr: IPAddress, port: int
) -> None:
    sock = socket.socket(_family(addr), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        # connect() on a datagram socket only sets the peer (no DNS: numeric address).
        sock.connect((str(addr), port))
        await loop.create_datagram_endpoint(lambda: target, sock=sock)
    except BaseException:
        sock.close()
        raise


async def open_udp(
    host: IPAddress | str,
    port: int,
    *,
    acl: Acl,
    # The deadline is ours, not the caller's: it goes into the TERMINATE reason.
    timeout: float,  # noqa: ASYNC109
    on_datagram: Callable[[bytes], None],
    on_error: Callable[[OSError], None] | None = None,
) -> UdpTarget:
    """A UDP socket connected to ``host:port`` if the ACL allows it.

    Raises :class:`ConnectError`; a UDP "connection" fails only on resolution, the ACL,
    or a local routing error (no route to the network).
    """
    loop = asyncio.get_running_loop()
    addresses = await resolve(host, port, kind=socket.SOCK_DGRAM, timeout=timeout)
    error = ConnectError(
        TerminateCode.GENERAL_FAILURE, f"cannot open UDP to {format_target(host, port)}"
    )
    for addr in _allowed(addresses, host, port, acl):
        target = UdpTarget(on_datagram, on_error)
        try:
            await _bind_udp(loop, target, addr, port)
        except OSError as exc:
            error = _classify(exc, addr, port)
            continue
        target.address = (addr, port)
        return target
    raise error

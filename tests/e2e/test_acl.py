"""The server's DEFAULT ACL, exercised through the real proxy: every special range is refused.

Safety: before a case is sent, the pure :class:`Acl` must already deny every address
the server could derive from it (numeric spellings decoded the way the server decodes
them). A case the pure ACL would allow fails the test *without* being sent, so no
test can ever make the server connect to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from resip.server.acl import Acl, parse_numeric_host

from .conftest import ResipPair, TcpServer
from .helpers import STEP_TIMEOUT, close, read_to_eof, socks_connect, socks_request

NOT_ALLOWED = 0x02

IPV4 = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3",
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254",
    "192.168.0.1", "192.168.255.255", "100.64.0.1", "100.127.255.254",
    "169.254.169.254", "169.254.0.1", "224.0.0.1", "239.255.255.250",
    "255.255.255.255", "240.0.0.1", "192.0.0.1", "192.0.2.1",
    "198.18.0.1", "198.51.100.1", "203.0.113.1", "192.88.99.1",
]  # fmt: skip
IPV6 = [
    "::1", "::", "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1",
    "2001:db8::1", "64:ff9b:1::1", "100::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "::ffff:0:127.0.0.1",  # SIIT
    "::127.0.0.1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]  # fmt: skip
#: Sent as SOCKS5 domain names (ATYP 3): the server must decode them, never resolve them.
NAMES = [
    "127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "0x7f000001",
    "017700000001", "0x7F.0.0.1", "10.1", "0xa9.0xfe.0xa9.0xfe", "3232235521",
    "0", "::1", "::ffff:127.0.0.1", "::ffff:7f00:1",
    "localhost",
]  # fmt: skip
CASES = [(h, 1) for h in IPV4] + [(h, 4) for h in IPV6] + [(h, 3) for h in NAMES]


def addresses_server_would_use(
    host: str, atyp: int
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """What the server connects to for this case, computed without touching the network."""
    if atyp != 3:
        return [ipaddress.ip_address(host)]
    numeric = parse_numeric_host(host)
    if numeric is not None:
        return [numeric]
    assert host == "localhost", f"{host!r} would go to DNS: not allowed in this test"
    infos = socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def test_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len(set(CASES)) == len(CASES)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("host", "atyp"), CASES, ids=[f"{a}:{h}" for h, a in CASES])
async def test_default_acl_refuses(
    host: str, atyp: int, default_acl_pair: ResipPair, tcp_listener: TcpServer
) -> None:
    port = tcp_listener.port
    # The guard: refuse to send anything the policy would let through.
    for addr in addresses_server_would_use(host, atyp):
        decision = Acl().check(addr, port)
        assert not decision.allowed, f"default ACL allows {addr} ({host!r}): {decision.reason}"
    rep, reader, writer = await socks_connect(
        default_acl_pair.proxy, socks_request(host, port, atyp=atyp)
    )
    try:
        assert rep == NOT_ALLOWED, f"{host!r} (ATYP {atyp}): SOCKS reply {rep:#04x}"
        assert await read_to_eof(reader, STEP_TIMEOUT) == b""
    finally:
        await close(writer)
    assert tcp_listener.connections == 0


@pytest.mark.timeout(30)
async def test_http_proxy_refused_by_default_acl(
    default_acl_pair: ResipPair, tcp_listener: TcpServer
) -> None:
    for head in (
        f"CONNECT 127.0.0.1:{tcp_listener.port} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET http://localhost:{tcp_listener.port}/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection(*default_acl_pair.proxy)
        try:
            writer.write(head.encode())
            answer = await read_to_eof(reader)
        finally:
            await close(writer)
        assert answer.startswith(b"HTTP/1.1 403 "), answer[:100]
    assert tcp_listener.connections == 0


@pytest.mark.timeout(30)
async def test_control_loopback_allowed_reaches_listener(
    pair: ResipPair, tcp_listener: TcpServer
) -> None:
    # The same request with loopback allowed does connect: the counting above can fail.
    rep, reader, writer = await socks_connect(
        pair.proxy, socks_request("2130706433", tcp_listener.port, atyp=3)
    )
    try:
        assert rep == 0
        assert await read_to_eof(reader) == b""
    finally:
        await close(writer)
    assert tcp_listener.connections == 1

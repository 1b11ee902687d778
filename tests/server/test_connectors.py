"""Connectors: ACL before any connect, DNS through the ACL, error codes from real sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from ipaddress import IPv4Address
from typing import Any, cast

import pytest

from resip.server.acl import Acl
from resip.server.connectors import ConnectError, format_target, open_tcp, open_udp

LOOPBACK_OK = Acl.from_config(["allow 127.0.0.1/32"])
DEFAULT = Acl()


class Listener:
    """A loopback TCP server that counts accepted connections and echoes."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    lst = Listener()
    lst.server = await asyncio.start_server(lst.handle, "127.0.0.1", 0)
    yield lst
    lst.server.close()
    await lst.server.wait_closed()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


async def test_connects_to_an_allowed_target(listener: Listener) -> None:
    reader, writer = await open_tcp(
        IPv4Address("127.0.0.1"), listener.port, acl=LOOPBACK_OK, timeout=2
    )
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    await close(writer)
    assert listener.accepted == 1


@pytest.mark.parametrize(
    "host", [IPv4Address("127.0.0.1"), "127.0.0.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"]
)
async def test_default_acl_denies_loopback_before_any_connect(
    listener: Listener, host: IPv4Address | str
) -> None:
    with pytest.raises(ConnectError) as info:
        await open_tcp(host, listener.port, acl=DEFAULT, timeout=2)
    assert info.value.code == 2
    assert "not allowed" in info.value.reason
    assert "loopback" in info.value.reason
    await asyncio.sleep(0)  # give a (wrong) connection the chance to be accepted
    assert listener.accepted == 0


async def test_localhost_name_resolves_and_is_denied(listener: Listener) -> None:
    with pytest.raises(ConnectError) as info:
        await open_tcp("localhost", listener.port, acl=DEFAULT, timeout=2)
    assert info.value.code == 2
    assert info.value.reason.startswith(f"target localhost:{listener.port} (")
    assert "loopback" in info.value.reason
    assert listener.accepted == 0


async def test_private_target_denied_without_contact(monkeypatch: pytest.MonkeyPatch) -> None:
    # 10.0.0.1 must never be contacted: the ACL answers before any socket exists.
    def no_sockets(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was created for a denied target")

    monkeypatch.setattr(socket, "socket", no_sockets)
    with pytest.raises(ConnectError) as info:
        await open_tcp("10.0.0.1", 22, acl=LOOPBACK_OK, timeout=2)
    assert info.value.code == 2
    assert (
        info.value.reason
        == "target 10.0.0.1:22 not allowed: default deny: 10.0.0.0/8 private (RFC 1918)"
    )


async def test_refused() -> None:
    # A bound socket that does not listen answers SYN with RST, and keeps the port ours.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(ConnectError) as info:
            await open_tcp("127.0.0.1", port, acl=LOOPBACK_OK, timeout=2)
    assert info.value.code == 5
    assert info.value.reason == f"connection refused by 127.0.0.1:{port}"


async def test_timeout_against_a_full_backlog() -> None:
    # A listener whose accept queue is full drops further SYNs: the connect hangs.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        port = sock.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                filler = socket.socket()
                filler.setblocking(False)
                fillers.append(filler)
                filler.connect_ex(("127.0.0.1", port))
            with pytest.raises(ConnectError) as info:
                await open_tcp("127.0.0.1", port, acl=LOOPBACK_OK, timeout=0.3)
        finally:
            for filler in fillers:
                filler.close()
    assert info.value.code == 6
    assert "timed out" in info.value.reason


async def test_unresolvable_name_is_code_4(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()

    async def no_such_name(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", no_such_name)
    with pytest.raises(ConnectError) as info:
        await open_tcp("no-such-host.invalid", 80, acl=LOOPBACK_OK, timeout=2)
    assert info.value.code == 4
    assert "does not resolve" in info.value.reason


async def test_name_is_resolved_once_and_only_checked_addresses_are_used(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A rebinding-style answer: a denied private address first, then an allowed one.
    loop = asyncio.get_running_loop()
    calls: list[str] = []

    async def fake(host: str, port: int, **kwargs: Any) -> list[Any]:
        calls.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(loop, "getaddrinfo", fake)
    reader, writer = await open_tcp("rebind.example", listener.port, acl=LOOPBACK_OK, timeout=2)
    assert writer.get_extra_info("peername")[0] == "127.0.0.1"
    assert calls == ["rebind.example"]
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    await close(writer)


async def test_udp_target_round_trip_and_acl() -> None:
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast("asyncio.DatagramTransport", transport)

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data.upper(), addr)

    echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo_transport.get_extra_info("sockname")[1]
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        with pytest.raises(ConnectError) as info:
            await open_udp(
                "127.0.0.1", port, acl=DEFAULT, timeout=2, on_datagram=replies.put_nowait
            )
        assert info.value.code == 2
        target = await open_udp(
            "127.0.0.1", port, acl=LOOPBACK_OK, timeout=2, on_datagram=replies.put_nowait
        )
        target.send(b"hello")
        assert await asyncio.wait_for(replies.get(), 2) == b"HELLO"
        target.close()
        await target.wait_closed()
    finally:
        echo_transport.close()


def test_format_target_brackets_ipv6() -> None:
    assert format_target("::1", 80) == "[::1]:80"
    assert format_target("example.com", 443) == "example.com:443"

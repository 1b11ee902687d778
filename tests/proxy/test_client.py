"""The session manager: session API (pinning, errors), TCP fallback, server restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from python_socks.async_.asyncio import Proxy

from resip.core.enrol import Enrolment
from resip_proxy.client import ClientError, SessionManager
from resip_proxy.frontend import ProxyFrontend
from resip_proxy.transport_events import Outage

from .fixture import FixtureServer, StubApi, echo_server
from .test_frontend import free_port, roundtrip

pytestmark = pytest.mark.timeout(30)

KEY = "k" * 32


@pytest.fixture
async def api(server: FixtureServer, tmp_path: Path) -> AsyncIterator[StubApi]:
    stub = StubApi(server, tmp_path, KEY)
    await stub.start()
    yield stub
    await stub.close()


def enrolment(api: StubApi, *, key: str = KEY, fingerprint: str | None = "pinned") -> Enrolment:
    return Enrolment(
        api_key=key,
        host="127.0.0.1",
        api_port=api.port,
        udp_port=api.server.udp_port,
        tcp_port=api.server.tcp_port,
        fingerprint=api.fingerprint if fingerprint == "pinned" else fingerprint,
    )


async def through(manager: SessionManager) -> None:
    """One echo round trip through a frontend on ``manager``."""
    frontend = ProxyFrontend(manager, listen=("127.0.0.1", 0), connect_timeout=5.0)
    await frontend.start()
    try:
        async with echo_server() as port:
            host, pport = frontend.address
            sock = await Proxy.from_url(f"socks5://{host}:{pport}", rdns=True).connect(
                "127.0.0.1", port
            )
            reader, writer = await asyncio.open_connection(sock=sock)
            await roundtrip(reader, writer, 50_000)
    finally:
        await frontend.close()


async def test_session_from_the_api_with_a_pinned_certificate(api: StubApi) -> None:
    manager = SessionManager(enrolment(api))
    await manager.start()
    try:
        assert await manager.wait_connected(5)
        await through(manager)
    finally:
        await manager.close()
    assert api.posts == 1


async def test_trust_on_first_use_pins_and_reports_the_fingerprint(api: StubApi) -> None:
    pinned: list[str] = []
    manager = SessionManager(enrolment(api, fingerprint=None), on_pin=pinned.append)
    await manager.start()
    await manager.close()
    assert pinned == [api.fingerprint]


async def test_wrong_key_is_a_clear_error(api: StubApi) -> None:
    manager = SessionManager(enrolment(api, key="x" * 32))
    with pytest.raises(ClientError, match="refused the API key"):
        await manager.start()
    await manager.close()


async def test_pin_mismatch_names_both_fingerprints(api: StubApi) -> None:
    wrong = "ab" * 32
    manager = SessionManager(enrolment(api, fingerprint=wrong))
    with pytest.raises(ClientError) as info:
        await manager.start()
    await manager.close()
    message = str(info.value)
    assert "mismatch" in message
    assert wrong in message
    assert api.fingerprint in message
    assert KEY not in message


async def test_unreachable_api_is_a_clear_error() -> None:
    port = await free_port()
    manager = SessionManager(
        Enrolment(api_key=KEY, host="127.0.0.1", api_port=port, fingerprint="00" * 32)
    )
    with pytest.raises(ClientError, match="cannot reach the session API"):
        await manager.start()
    await manager.close()


async def test_tcp_fallback_when_udp_is_blocked() -> None:
    server = FixtureServer(block_udp=True)
    await server.start()
    manager = SessionManager.from_credentials(
        server.new_session(), "127.0.0.1", udp_timeout=0.3, udp_retry=0.5
    )
    await manager.start()
    try:
        assert await manager.wait_transport("tcp", 5)
        await through(manager)
        # UDP comes back: the manager notices at its next retry
        server.block_udp = False
        assert await manager.wait_transport("udp", 5)
        await through(manager)
    finally:
        await manager.close()
        await server.close()


async def test_server_restart_ends_channels_and_creates_a_new_session(
    api: StubApi, server: FixtureServer
) -> None:
    manager = SessionManager(enrolment(api), udp_timeout=0.3, udp_retry=0.5)
    await manager.start()
    frontend = ProxyFrontend(manager, listen=("127.0.0.1", 0), connect_timeout=5.0)
    await frontend.start()
    try:
        assert await manager.wait_connected(5)
        async with echo_server() as port:
            host, pport = frontend.address
            sock = await Proxy.from_url(f"socks5://{host}:{pport}").connect("127.0.0.1", port)
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"before")
            assert await asyncio.wait_for(reader.readexactly(6), 5) == b"before"
            first = manager.generation
            server.restart()
            # The old session now gets no answer; start the check at once instead of
            # waiting for the 10 s outage rule.
            manager._feed(Outage(asyncio.get_running_loop().time()))
            # The application sees its connection closed (EOF), not a hang.
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
            await writer.wait_closed()
            assert await manager.wait_connected(5)
            assert manager.generation == first + 1
        await through(manager)
    finally:
        await frontend.close()
        await manager.close()
    assert api.posts == 2

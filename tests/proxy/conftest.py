"""Fixtures: the in-process server, a client session manager and the proxy frontend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from resip_proxy.client import SessionManager
from resip_proxy.frontend import ProxyFrontend

from .fixture import FixtureServer


@pytest.fixture
async def server() -> AsyncIterator[FixtureServer]:
    s = FixtureServer()
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def manager(server: FixtureServer) -> AsyncIterator[SessionManager]:
    m = SessionManager.from_credentials(server.new_session(), "127.0.0.1", udp_timeout=1.0)
    await m.start()
    yield m
    await m.close()


@pytest.fixture
async def proxy(manager: SessionManager) -> AsyncIterator[ProxyFrontend]:
    f = ProxyFrontend(manager, listen=("127.0.0.1", 0), connect_timeout=5.0)
    await f.start()
    yield f
    await f.close()

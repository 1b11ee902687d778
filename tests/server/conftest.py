"""Shared fixtures for server tests: a TLS-ready config and a client built from API credentials."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Hashable
from pathlib import Path

import pytest

from resip.aio.driver import SessionDriver
from resip.core import events as ev
from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection, Suite
from resip.core.session import Role, Session
from resip.server.config import ServerConfig, init_server


@pytest.fixture(scope="session")
def server_config(tmp_path_factory: pytest.TempPathFactory) -> ServerConfig:
    """A real config (certificate, key, API keys) bound to loopback."""
    directory: Path = tmp_path_factory.mktemp("server")
    config, _ = init_server(directory, public_host="127.0.0.1", listen_host="127.0.0.1")
    return config


def sha(data: bytes | bytearray) -> str:
    """Hex SHA-256, what data tests compare."""
    return hashlib.sha256(data).hexdigest()


def client_session(credentials: dict[str, object], *, peer: Hashable, now: float) -> Session:
    """A CLIENT session from the session API's JSON answer (as resip/testing/pair.py does)."""
    key_id = int(credentials["hp_key_id"])  # type: ignore[call-overload]
    hp = HeaderProtection({key_id: bytes.fromhex(str(credentials["hp_key"]))}, key_id)
    return Session(
        SessionConfig(),
        role=Role.CLIENT,
        session_id=bytes.fromhex(str(credentials["session_id"])),
        session_secret=bytes.fromhex(str(credentials["secret"])),
        hp=hp,
        suite=Suite(int(credentials["suite"])),  # type: ignore[call-overload]
        now=now,
        peer=peer,
    )


class ChannelProbe:
    """Client-side application for one channel: records what the server sends back."""

    def __init__(self, driver: SessionDriver, channel_id: int) -> None:
        self.driver = driver
        self.channel_id = channel_id
        self.received = bytearray()
        self.datagrams: list[bytes] = []
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.terminated: asyncio.Future[tuple[int, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self.writable = asyncio.Event()
        self.changed = asyncio.Event()
        driver.listen(channel_id, self.on_event)

    def on_event(self, event: ev.Event) -> None:
        match event:
            case ev.ChannelStarted():
                self.started.set()
            case ev.ChannelData(_, data):
                self.received += data
                self.datagrams.append(data)
                self.driver.session.consume(self.channel_id, len(data))
            case ev.ChannelEnded():
                self.ended.set()
            case ev.ChannelWritable():
                self.writable.set()
            case ev.ChannelTerminated(_, code, reason):
                if not self.terminated.done():
                    self.terminated.set_result((code, reason))
                self.ended.set()
                self.writable.set()
            case _:
                pass
        self.changed.set()

    async def send_all(self, data: bytes, *, shutdown: bool = True) -> None:
        """Send every byte with backpressure, then half-close."""
        session = self.driver.session
        view = memoryview(data)
        while view:
            if self.terminated.done():
                raise AssertionError(f"channel terminated: {self.terminated.result()}")
            self.writable.clear()
            n = session.send(self.channel_id, bytes(view[: 256 * 1024]), now=self.driver.now())
            self.driver.flush()
            view = view[n:]
            if view and n == 0:
                await self.writable.wait()
        if shutdown:
            session.shutdown(self.channel_id, now=self.driver.now())
            self.driver.flush()

    async def wait_received(self, size: int) -> None:
        """Until ``size`` bytes have arrived (or the channel ended)."""
        while len(self.received) < size and not self.terminated.done():
            self.changed.clear()
            await self.changed.wait()

"""Fixtures for status tests: the documented schema, sample snapshots, and a live stack.

The live stack is the real thing in one process: a ResipServer on loopback, a
SessionManager that gets its session through the HTTPS API, the proxy frontend, the
control socket, and an echo server as the target.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resip.server.acl import Acl
from resip.server.app import ResipServer
from resip.server.config import ServerConfig, init_server
from resip_proxy.client import SessionManager
from resip_proxy.control import ControlServer
from resip_proxy.frontend import ProxyFrontend

ROOT = Path(__file__).resolve().parents[2]


def documented_schema() -> dict[str, Any]:
    """The ```json status-schema``` block of docs/STATUS.md."""
    text = (ROOT / "docs" / "STATUS.md").read_text()
    match = re.search(r"```json status-schema\n(.*?)\n```", text, re.S)
    assert match, "docs/STATUS.md lost its status-schema block"
    schema: dict[str, Any] = json.loads(match.group(1))
    return schema


def _type_ok(value: object, spec: str) -> bool:
    for alt in spec.split("|"):
        if alt == "null" and value is None:
            return True
        if alt == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if alt == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if alt == "str" and isinstance(value, str):
            return True
        if alt == "bool" and isinstance(value, bool):
            return True
    return False


def validate(doc: object, schema: object, where: str = "$") -> list[str]:
    """Problems of ``doc`` against the documented ``schema`` (empty when it conforms)."""
    problems: list[str] = []
    if isinstance(schema, str):
        if not _type_ok(doc, schema):
            problems.append(f"{where}: {doc!r} is not {schema}")
    elif isinstance(schema, list):
        if not isinstance(doc, list):
            return [f"{where}: expected a list, got {type(doc).__name__}"]
        for i, item in enumerate(doc):
            problems += validate(item, schema[0], f"{where}[{i}]")
    elif isinstance(schema, dict):
        if not isinstance(doc, dict):
            return [f"{where}: expected an object, got {type(doc).__name__}"]
        for key, sub in schema.items():
            if key not in doc:
                problems.append(f"{where}.{key}: missing")
            elif where == "$" and key == "session" and doc[key] is None:
                continue  # documented: null before the first session
            else:
                problems += validate(doc[key], sub, f"{where}.{key}")
    return problems


def sample_channel(i: int, **overrides: Any) -> dict[str, Any]:
    ch = {
        "id": i,
        "kind": "tcp",
        "local_peer": f"127.0.0.1:{40000 + i % 20000}",
        "target": f"host{i}.example:443",
        "state": "open",
        "bytes_sent": i * 10,
        "bytes_received": i,
        "in_flight": 0,
        "retransmissions": 0,
        "age_s": 100.0,
        "idle_s": 50.0 + i % 1000,
    }
    ch.update(overrides)
    return ch


def sample_snapshot(channels: list[dict[str, Any]] | None = None, **session: Any) -> dict[str, Any]:
    s: dict[str, Any] = {
        "state": "connected",
        "server": "vpn.example.net",
        "session_id": "0123456789abcdef",
        "local_address": "192.0.2.10:40000",
        "address_history": [{"t": 0.0, "address": "192.0.2.10:40000"}],
        "transport": "udp",
        "uptime_s": 60.0,
        "last_packet_age_s": 0.2,
        "rtt_ms": {"smoothed": 42.5, "min": 30.0},
        "loss": 0.125,
        "loss_in": 0.25,
        "send_rate_bps": 8_000_000.0,
        "bytes": {"sent": 3 << 20, "received": 5 << 20},
        "packets": {"sent": 3000, "received": 5000},
        "bytes_in_flight": 0,
        "retransmissions": 17,
        "duplicates": 2,
        "invalid_dropped": 0,
        "key_epoch": 1,
        "outages": 1,
        "generation": 1,
    }
    s.update(session)
    return {
        "version": 1,
        "resip_version": "0.1.0",
        "uptime_s": 61.0,
        "session": s,
        "channels": channels if channels is not None else [sample_channel(1)],
        "events": [
            {"t": 1.0, "kind": "connected", "text": "connected over UDP"},
            {"t": 30.0, "kind": "outage", "text": "no answer from the server: outage began"},
            {"t": 42.0, "kind": "outage-ended", "text": "outage ended after 12.0 s"},
        ],
    }


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short private directory: unix socket paths are limited to ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="rst-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def status_server_config(tmp_path_factory: pytest.TempPathFactory) -> ServerConfig:
    config, _ = init_server(
        tmp_path_factory.mktemp("srv"), public_host="127.0.0.1", listen_host="127.0.0.1"
    )
    return config


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@dataclass
class Stack:
    server: ResipServer
    manager: SessionManager
    frontend: ProxyFrontend
    control: ControlServer
    echo_port: int

    async def socks_connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A SOCKS5 CONNECT through the proxy to the echo server."""
        host, port = self.frontend.address
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x01\x00")
        assert await reader.readexactly(2) == b"\x05\x00"
        writer.write(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + self.echo_port.to_bytes(2, "big"))
        reply = await asyncio.wait_for(reader.readexactly(10), 10)
        assert reply[1] == 0, f"SOCKS5 CONNECT failed: {reply!r}"
        return reader, writer


@pytest.fixture
async def stack(status_server_config: ServerConfig, short_dir: Path) -> AsyncIterator[Stack]:
    acl = Acl.from_config(["allow 127.0.0.0/8"])
    server = ResipServer(
        status_server_config, acl=acl, api_port=0, resip_port=0, listen_host="127.0.0.1"
    )
    await server.start()
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    enrolment = dataclasses.replace(
        status_server_config.enrolment(),
        api_port=server.api_port,
        udp_port=server.udp_port,
        tcp_port=server.tcp_port,
    )
    manager = SessionManager(enrolment)
    frontend = ProxyFrontend(manager, listen=("127.0.0.1", 0), connect_timeout=5.0)
    control = ControlServer(manager, short_dir / "proxy.sock")
    try:
        await manager.start()
        assert await manager.wait_connected(5.0)
        await frontend.start()
        await control.start()
        yield Stack(server, manager, frontend, control, echo.sockets[0].getsockname()[1])
    finally:
        await control.close()
        await frontend.close()
        await manager.close()
        await server.stop("test over")
        echo.close()
        await echo.wait_closed()

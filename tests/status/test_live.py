"""Live status over the real stack: server + proxy in-process, data through a channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from resip.server.admin import fetch_admin_status
from resip.server.certs import cert_fingerprint
from resip_proxy.cli import app as proxy_app
from resip_proxy.control import (
    ControlError,
    ControlServer,
    default_socket_path,
    fetch_status,
)

from .conftest import Stack, documented_schema, validate

pytestmark = pytest.mark.timeout(30)

PAYLOAD = os.urandom(200_000)


async def echo_through(stack: Stack) -> tuple[asyncio.StreamWriter, str]:
    """Send PAYLOAD through a SOCKS5 channel and read it back; the connection stays open."""
    reader, writer = await stack.socks_connect()
    writer.write(PAYLOAD)
    await writer.drain()
    back = await asyncio.wait_for(reader.readexactly(len(PAYLOAD)), 15)
    assert back == PAYLOAD
    host, port = writer.get_extra_info("sockname")[:2]
    return writer, f"{host}:{port}"


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_live_snapshot_matches_the_documented_schema(stack: Stack) -> None:
    writer, local = await echo_through(stack)
    try:
        doc = await fetch_status(stack.control.path)
        schema = documented_schema()
        assert validate(doc, schema) == []
        # Every key served is documented (and the other way round).
        assert set(doc) == set(schema)
        assert set(doc["session"]) == set(schema["session"])
        assert set(doc["channels"][0]) == set(schema["channels"][0])
        session = doc["session"]
        assert session["state"] == "connected"
        assert session["transport"] == "udp"
        assert session["session_id"] == stack.manager.session.session_id.hex()
        assert session["bytes"]["sent"] >= len(PAYLOAD)
        assert session["bytes"]["received"] >= len(PAYLOAD)
        assert session["local_address"] == stack.manager.local_address
        target = f"127.0.0.1:{stack.echo_port}"
        [channel] = [ch for ch in doc["channels"] if ch["target"] == target]
        assert channel["kind"] == "tcp"
        assert channel["local_peer"] == local
        assert channel["bytes_sent"] == len(PAYLOAD)
        assert channel["bytes_received"] == len(PAYLOAD)
        kinds = [e["kind"] for e in doc["events"]]
        assert "session" in kinds and "connected" in kinds
        mode = stat.S_IMODE(stack.control.path.stat().st_mode)
        assert mode == 0o600, oct(mode)
    finally:
        await close(writer)


async def test_admin_status_lists_the_session_channel_and_bytes(stack: Stack) -> None:
    writer, _ = await echo_through(stack)
    try:
        cfg = stack.server.config
        doc = await fetch_admin_status(
            f"https://127.0.0.1:{stack.server.api_port}/v1/admin/status",
            admin_key=cfg.admin_key,
            fingerprint=cert_fingerprint(cfg.tls_cert.read_bytes()),
        )
        [session] = doc["sessions"]
        assert session["id"] == stack.manager.session.session_id.hex()
        assert session["client_addresses"] == [stack.manager.local_address]
        assert session["bytes"]["received"] >= len(PAYLOAD)
        [channel] = session["channels"]
        assert channel["target"] == f"127.0.0.1:{stack.echo_port}"
        assert channel["bytes_received"] == len(PAYLOAD)  # server side: from the client
        assert channel["bytes_sent"] == len(PAYLOAD)
    finally:
        await close(writer)


async def run_cli(*args: str) -> tuple[int, str, str]:
    # In a thread: the command runs its own event loop (and no interpreter start).
    runner = CliRunner()
    result = await asyncio.to_thread(
        runner.invoke, proxy_app, list(args), env={"COLUMNS": "120", "LINES": "40"}
    )
    return result.exit_code, result.stdout, result.stderr


async def test_status_json_and_once_commands_read_the_live_proxy(stack: Stack) -> None:
    writer, _ = await echo_through(stack)
    try:
        path = str(stack.control.path)
        code, out, err = await run_cli("status", "--json", "--control-socket", path)
        assert code == 0, err
        doc = json.loads(out)
        assert validate(doc, documented_schema()) == []
        assert any(ch["bytes_sent"] == len(PAYLOAD) for ch in doc["channels"])
        code, out, err = await run_cli("status", "--once", "--control-socket", path)
        assert code == 0, err
        assert "CONNECTED" in out
        assert f"127.0.0.1:{stack.echo_port}" in out
        assert "195.3 KiB" in out  # the channel's 200,000 bytes each way
    finally:
        await close(writer)


@pytest.mark.parametrize("flag", ["--once", "--json", None])
def test_status_without_a_running_proxy_says_so_and_exits_1(
    short_dir: Path, flag: str | None
) -> None:
    path = short_dir / "nothing.sock"
    args = ["status", "--control-socket", str(path)] + ([flag] if flag else [])
    result = CliRunner().invoke(proxy_app, args)
    assert result.exit_code == 1
    assert result.output.strip() == f"no resip-proxy is running (no control socket at {path})"


def test_status_with_a_stale_socket_file_says_no_proxy_runs(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))  # bound, never listening: what a crashed proxy leaves behind
    result = CliRunner().invoke(proxy_app, ["status", "--once", "--control-socket", str(path)])
    assert result.exit_code == 1
    assert "no resip-proxy is running" in result.output
    assert "Traceback" not in result.output


async def test_stale_socket_is_replaced_and_a_live_one_is_refused(
    stack: Stack, short_dir: Path
) -> None:
    # Another proxy on the same path: refused, the first keeps serving.
    other = ControlServer(stack.manager, stack.control.path)
    with pytest.raises(ControlError, match="another resip-proxy"):
        await other.start()
    assert (await fetch_status(stack.control.path))["session"] is not None
    # A stale file: replaced.
    stale = short_dir / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    fresh = ControlServer(stack.manager, stale)
    await fresh.start()
    try:
        assert (await fetch_status(stale))["version"] == 1
    finally:
        await fresh.close()
    assert not stale.exists()


async def test_default_path_is_a_private_dir_in_the_runtime_dir(
    stack: Stack, short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESIP_CONTROL_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_dir))
    path = default_socket_path()
    assert path == short_dir / "resip" / "proxy.sock"
    server = ControlServer(stack.manager)
    await server.start()
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        async with (
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as http,
            http.get("http://x/status") as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["session"]["state"] == "connected"
    finally:
        await server.close()

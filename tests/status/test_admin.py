"""Server admin endpoint and Prometheus metrics on a real ResipServer (loopback HTTPS)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from resip.server.acl import Acl
from resip.server.app import ResipServer
from resip.server.certs import cert_fingerprint
from resip.server.cli import app as server_app
from resip.server.config import ServerConfig, init_server
from resip.server.endpoint import EndpointStats
from resip.server.metrics import ServerMetrics, render_metrics

pytestmark = pytest.mark.timeout(30)

_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
LINE = re.compile(rf"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{{{_LABEL}(,{_LABEL})*\}})? -?[0-9.e+]+$")


def parse_metrics(text: str) -> dict[str, float]:
    """``name{labels}`` -> value; fails on any line that is not valid text format."""
    values: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            parts = line.split(" ", 3)
            assert len(parts) == 4 and parts[3], line
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge"), line
                typed.add(parts[2])
            continue
        assert LINE.match(line), f"not a metrics line: {line!r}"
        name, value = line.rsplit(" ", 1)
        assert name.split("{")[0] in typed, f"{name} has no # TYPE"
        values[name] = float(value)
    return values


def fingerprint(cfg: ServerConfig) -> aiohttp.Fingerprint:
    return aiohttp.Fingerprint(bytes.fromhex(cert_fingerprint(cfg.tls_cert.read_bytes())))


@pytest.fixture
async def server(status_server_config: ServerConfig) -> AsyncIterator[ResipServer]:
    srv = ResipServer(
        status_server_config,
        acl=Acl.from_config([]),
        api_port=0,
        resip_port=0,
        listen_host="127.0.0.1",
        admin_loopback=False,
    )
    await srv.start()
    yield srv
    await srv.stop("test over")


async def get(server: ResipServer, path: str, key: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"https://127.0.0.1:{server.api_port}{path}",
            headers=headers,
            ssl=fingerprint(server.config),
        ) as resp,
    ):
        return resp.status, await resp.text()


@pytest.mark.parametrize("path", ["/v1/admin/status", "/metrics"])
async def test_admin_routes_need_the_admin_key_when_loopback_is_not_exempt(
    server: ResipServer, path: str
) -> None:
    assert (await get(server, path, None))[0] == 401
    assert (await get(server, path, "wrong-key"))[0] == 401
    # The client API key opens sessions, not the admin view.
    assert (await get(server, path, server.config.api_key))[0] == 401
    status, body = await get(server, path, server.config.admin_key)
    assert status == 200, body
    assert server.config.admin_key not in body and server.config.api_key not in body


async def test_loopback_is_exempt_by_default(status_server_config: ServerConfig) -> None:
    srv = ResipServer(
        status_server_config, acl=Acl.from_config([]), api_port=0, resip_port=0,
        listen_host="127.0.0.1",
    )  # fmt: skip
    await srv.start()
    try:
        status, body = await get(srv, "/v1/admin/status", None)
        assert status == 200
        assert json.loads(body)["sessions"] == []
    finally:
        await srv.stop("test over")


async def test_metrics_parse_and_count_sessions(server: ResipServer) -> None:
    key = server.config.admin_key
    values = parse_metrics((await get(server, "/metrics", key))[1])
    assert values["resip_sessions"] == 0
    server.create_session()
    server.create_session()
    text = (await get(server, "/metrics", key))[1]
    values = parse_metrics(text)
    assert values["resip_sessions"] == 2
    assert values["resip_channels"] == 0
    for name in (
        'resip_bytes_total{direction="sent"}',
        'resip_bytes_total{direction="received"}',
        "resip_retransmissions_total",
        "resip_invalid_packets_total",
        "resip_address_changes_total",
        "resip_outages_total",
    ):
        assert name in values, f"{name} missing from:\n{text}"
    # Garbage to the UDP port counts as invalid packets.
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.udp_port)
    )
    try:
        before = server.endpoint.stats.dropped
        transport.sendto(os.urandom(64))
        async with asyncio.timeout(5):
            while server.endpoint.stats.dropped == before:  # noqa: ASYNC110 - no drop event
                await asyncio.sleep(0.01)
    finally:
        transport.close()
    values = parse_metrics((await get(server, "/metrics", key))[1])
    assert values["resip_invalid_packets_total"] >= 1
    status, body = await get(server, "/v1/admin/status", key)
    assert status == 200
    assert len(json.loads(body)["sessions"]) == 2


def test_counters_keep_the_totals_of_ended_sessions() -> None:
    retired = ServerMetrics(bytes_sent=100, bytes_received=50, outages=2)
    values = parse_metrics(render_metrics(retired, [], EndpointStats(malformed=3)))
    assert values['resip_bytes_total{direction="sent"}'] == 100
    assert values["resip_outages_total"] == 2
    assert values["resip_invalid_packets_total"] == 3
    assert values["resip_sessions"] == 0


async def test_resip_server_status_command(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path / "srv", public_host="127.0.0.1", listen_host="127.0.0.1")
    srv = ResipServer(cfg, acl=Acl.from_config([]), api_port=0, resip_port=0, admin_loopback=False)
    await srv.start()
    try:
        srv.create_session()
        # Point the config file at the ports actually bound.
        config_file = tmp_path / "srv" / "config.toml"
        text = config_file.read_text()
        text = re.sub(r"(?m)^api_port = \d+$", f"api_port = {srv.api_port}", text)
        config_file.write_text(text)

        async def cli(*args: str) -> tuple[int, str, str]:
            # In a thread: the command runs its own event loop (and no interpreter start).
            runner = CliRunner()
            result = await asyncio.to_thread(
                runner.invoke,
                server_app,
                ["status", "--config", str(config_file), *args],
                env={"COLUMNS": "120", "LINES": "40"},
            )
            return result.exit_code, result.stdout, result.stderr

        code, out, err = await cli("--json")
        assert code == 0, err
        [session] = json.loads(out)["sessions"]
        code, out, err = await cli("--once")
        assert code == 0, err
        assert session["id"] in out
        assert "1 sessions, 0 channels" in out
    finally:
        await srv.stop("test over")
    # Nothing listens any more: one line, exit 1.
    code, out, err = await cli("--once")
    assert code == 1
    assert err.startswith("resip-server status: cannot reach the server")
    assert "Traceback" not in err

"""The command lines as users run them: init, connect (a real subprocess), demo, run errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from python_socks.async_.asyncio import Proxy
from typer.testing import CliRunner

from resip.core.enrol import Enrolment, format_uri
from resip_proxy.cli import app
from resip_proxy.config import init_client, load_client_config

from .fixture import FixtureServer, StubApi, echo_server
from .test_frontend import free_port, roundtrip

pytestmark = pytest.mark.timeout(30)
runner = CliRunner()
KEY = "k" * 32


@pytest.fixture
async def api(server: FixtureServer, tmp_path: Path) -> AsyncIterator[StubApi]:
    stub = StubApi(server, tmp_path, KEY)
    await stub.start()
    yield stub
    await stub.close()


def uri(api: StubApi, *, fingerprint: bool = True) -> str:
    return format_uri(
        Enrolment(
            api_key=KEY,
            host="127.0.0.1",
            api_port=api.port,
            udp_port=api.server.udp_port,
            tcp_port=api.server.tcp_port,
            fingerprint=api.fingerprint if fingerprint else None,
        )
    )


def test_init_writes_a_private_config(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "proxy.toml"
    fp = "ab" * 32
    result = runner.invoke(
        app, ["init", f"resip://{KEY}@vpn.example.org:4443/?fp={fp}&udp=5000", "--config",
              str(path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    cfg = load_client_config(path)
    assert (cfg.enrolment.host, cfg.enrolment.api_port, cfg.enrolment.udp_port) == (
        "vpn.example.org", 4443, 5000)  # fmt: skip
    assert cfg.enrolment.fingerprint == fp
    assert cfg.listen == ("127.0.0.1", 1080)
    again = runner.invoke(app, ["init", f"resip://{KEY}@h:1/", "--config", str(path)])
    assert again.exit_code == 1
    assert "already exists" in again.output
    assert KEY not in again.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nhost = 'h'\n", "api_key is missing"),
        ("[server]\nhost = 'h'\napi_key = 'kkkkkkkkkkkkkkkk'\nport = 1\n", "unknown key"),
        ("[server]\nhost = 'h'\napi_key = 'kkkkkkkkkkkkkkkk'\napi_port = 'x'\n", "must be a int"),
        ("[server]\nhost = 'h'\napi_key = 'kkkkkkkkkkkkkkkk'\nfingerprint = 'zz'\n",
         "fingerprint"),
        ("not toml [", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_config_is_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    result = runner.invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_missing_config_says_to_run_init(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert "resip-proxy init" in result.output


async def cli(*args: str, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resip_proxy.cli", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(stdin), 20)
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_connect_pipes_stdin_and_stdout(api: StubApi, tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    init_client(uri(api, fingerprint=False), path)
    payload = os.urandom(200_000)
    async with echo_server() as port:
        code, out, err = await cli("connect", "127.0.0.1", str(port), "--config", str(path),
                                   stdin=payload)  # fmt: skip
    assert code == 0, err.decode(errors="replace")[-9000:]
    assert out == payload
    # trust on first use: the certificate is pinned in the config now
    assert load_client_config(path).enrolment.fingerprint == api.fingerprint


async def test_connect_failure_is_a_message_and_exit_1(api: StubApi, tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    init_client(uri(api), path)
    port = await free_port()
    code, out, err = await cli("connect", "127.0.0.1", str(port), "--config", str(path))
    assert code == 1
    assert out == b""
    assert b"cannot connect to 127.0.0.1" in err
    assert b"Traceback" not in err


async def test_run_with_a_wrong_key_fails_cleanly(api: StubApi, tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    init_client(uri(api).replace(KEY, "w" * 32), path)
    code, _, err = await cli("run", "--config", str(path), "--listen", "127.0.0.1:0")
    assert code == 1
    assert b"refused the API key" in err
    assert b"Traceback" not in err


async def test_demo_serves_and_stops_on_sigint() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "resip_proxy.cli", "demo", "--listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        lines = []
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            assert line, "demo exited early"
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        assert "curl --socks5-hostname" in text
        assert "ProxyCommand='resip-proxy connect" in text
        assert "chromium --proxy-server=socks5://" in text
        match = re.search(r"proxy on (127\.0\.0\.1):(\d+)", text)
        assert match is not None
        async with echo_server() as port:
            sock = await Proxy.from_url(f"socks5://{match[1]}:{match[2]}", rdns=True).connect(
                "127.0.0.1", port
            )
            reader, writer = await asyncio.open_connection(sock=sock)
            await roundtrip(reader, writer, 100_000)
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

"""``resip-server run``: clear failure on a bad config; serves until SIGTERM, then exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from resip.server.cli import app
from resip.server.config import init_server


def test_missing_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("resip-server run: ")
    assert "cannot read" in lines[0]
    assert "Traceback" not in result.output


def test_invalid_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\napi_port = "many"\n')
    result = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert result.exit_code == 1
    assert "api_port: must be an integer" in result.output
    assert len(result.output.strip().splitlines()) == 1


SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def accept_queue_limit(port: int) -> int:
    """The backlog of the TCP listener on ``port`` (``ss``: Send-Q of a listening socket)."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    [line] = out.strip().splitlines()
    return int(line.split()[2])


def check_backlogs(*ports: int) -> None:
    """A burst of connections must not overflow asyncio's default queue of 100."""
    if shutil.which("ss"):
        for port in ports:
            assert accept_queue_limit(port) == int(SOMAXCONN.read_text()), port


def _free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(30)
def test_runs_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    api_port = _free_port(socket.SOCK_STREAM)
    resip_port = _free_port(socket.SOCK_DGRAM)
    config, _ = init_server(
        tmp_path / "srv",
        public_host="127.0.0.1",
        listen_host="127.0.0.1",
        api_port=api_port,
        resip_port=resip_port,
    )
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "resip.server.cli",
            "run",
            "--config",
            str(tmp_path / "srv" / "config.toml"),
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "listening: API https://" in line:
                break
        assert any("listening: API https://" in line for line in seen), "".join(seen)
        # Really listening: TCP on both ports.
        for port in (api_port, resip_port):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        check_backlogs(api_port, resip_port)
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=15) == 0, rest
        assert "Traceback" not in rest
        # The start-up is logged once (the CLI used to log it again after the server).
        started = [line for line in seen + rest.splitlines() if f":{api_port}" in line]
        assert len(started) == 1, "".join(seen) + rest
        assert config.api_key not in "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

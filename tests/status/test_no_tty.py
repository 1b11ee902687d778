"""Both status commands without a terminal (pipes, cron, ssh without -t): one frame, exit 0."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from resip.server.acl import Acl
from resip.server.app import ResipServer
from resip.server.config import init_server

from .conftest import Stack

pytestmark = pytest.mark.timeout(30)


async def run_piped(module: str, *args: str) -> tuple[int, str, str]:
    """``python -m module args`` with stdin, stdout and stderr all pipes; must end in 10 s."""
    # Without COLUMNS/LINES: rich's size for a non-terminal (80x25) applies.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{module} {' '.join(args)} did not exit without a terminal") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_proxy_status_without_a_terminal_prints_one_frame(stack: Stack) -> None:
    code, out, err = await run_piped(
        "resip_proxy.cli", "status", "--control-socket", str(stack.control.path)
    )
    assert code == 0, err
    assert out.count("resip-proxy 0.") == 1, out  # the header panel's title: one frame
    assert "CONNECTED" in out
    assert "\x1b" not in out  # plain text for a pipe: no cursor movement, no colours
    assert max(len(line) for line in out.splitlines()) <= 80


async def test_server_status_without_a_terminal_prints_one_frame(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path / "srv", public_host="127.0.0.1", listen_host="127.0.0.1")
    srv = ResipServer(cfg, acl=Acl.from_config([]), api_port=0, resip_port=0)
    await srv.start()
    try:
        session_id = str(srv.create_session()["session_id"])
        config_file = tmp_path / "srv" / "config.toml"
        text = re.sub(
            r"(?m)^api_port = \d+$", f"api_port = {srv.api_port}", config_file.read_text()
        )
        config_file.write_text(text)
        code, out, err = await run_piped("resip.server.cli", "status", "--config", str(config_file))
    finally:
        await srv.stop("test over")
    assert code == 0, err
    assert out.count("resip-server 0.") == 1, out  # one frame
    assert "1 sessions, 0 channels" in out
    assert session_id[:8] in out, (session_id, out)
    assert "\x1b" not in out
    assert max(len(line) for line in out.splitlines()) <= 80

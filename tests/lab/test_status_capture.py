"""The status view of a real proxy while a download crosses a lossy link (issue: live status)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.conftest import Stack

pytestmark = pytest.mark.lab


@pytest.mark.timeout(120)
def test_status_view_during_a_lossy_download(stack: Stack) -> None:
    stack.lab.set(loss=0.10, delay=0.05, rate_bps=20e6, queue_bytes=64 * 1024)
    control = stack.workdir / "proxy.sock"
    download = stack.download(small=True)
    download.wait_bytes(2 << 20, 60)
    frames = []
    for _ in range(2):
        shown = subprocess.run(
            [sys.executable, "-m", "resip_proxy.cli", "status", "--once",
             "--control-socket", str(control)],
            capture_output=True, text=True, timeout=30,
            env={**os.environ, "COLUMNS": "110", "LINES": "30"},
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        frames.append(shown.stdout)
        time.sleep(1.0)  # two frames a second apart: the view must move with the data
    download.finish(100)
    text = frames[-1]
    assert "connected" in text or "outage" in text
    assert "10.200.2.1" in text  # the server, through the impaired link
    assert frames[0] != frames[1], "the view did not change while data moved"
    out = os.environ.get("RESIP_STATUS_CAPTURE")
    if out:
        Path(out).write_text(frames[0])

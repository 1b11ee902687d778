"""curl through the real proxy and server: SOCKS5, SOCKS5h, HTTP forwarding, CONNECT."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from .conftest import HttpFiles, ResipPair, sha

CURL = "/usr/bin/curl"

pytestmark = pytest.mark.skipif(
    not os.access(CURL, os.X_OK), reason=f"{CURL} is missing (apt-get install curl)"
)


def _env() -> dict[str, str]:
    # A proxy variable from the environment must not change what curl does.
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


def _mode_args(mode: str, pair: ResipPair) -> list[str]:
    proxy = pair.proxy_url_host
    return {
        "socks5": ["--socks5", proxy],
        "socks5h": ["--socks5-hostname", proxy],
        "http": ["-x", f"http://{proxy}"],
        "connect": ["-p", "-x", f"http://{proxy}"],
    }[mode]


async def curl(args: list[str], out: Path, timeout: float = 60.0) -> None:  # noqa: ASYNC109
    """Run curl quietly into ``out``; fails with curl's stderr on a non-zero exit."""
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--fail", "--max-time", str(int(timeout)), "-o", str(out), *args,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=_env(),
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout + 5):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"curl {args} exited {proc.returncode}: {err.decode()!r}"


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


async def _fetch_and_compare(
    mode: str, pair: ResipPair, http_files: HttpFiles, name: str, tmp_path: Path
) -> None:
    # socks5h sends the name: the server resolves "localhost" (its ACL allows loopback).
    host = "localhost" if mode == "socks5h" else "127.0.0.1"
    out = tmp_path / name
    await curl([*_mode_args(mode, pair), http_files.url(name, host)], out)
    assert out.stat().st_size == len(http_files.blobs[name])
    assert file_sha(out) == sha(http_files.blobs[name])
    assert http_files.requests == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_curl_socks5_hostname_50mib(
    pair: ResipPair, http_files: HttpFiles, tmp_path: Path
) -> None:
    # One big transfer only: the machine is shared and every byte crosses Python four times.
    await _fetch_and_compare("socks5h", pair, http_files, "big", tmp_path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["socks5", "socks5h", "http", "connect"])
async def test_curl_modes_2mib(
    mode: str, pair: ResipPair, http_files: HttpFiles, tmp_path: Path
) -> None:
    await _fetch_and_compare(mode, pair, http_files, "medium", tmp_path)


@pytest.mark.timeout(60)
async def test_fifty_parallel_curls(pair: ResipPair, http_files: HttpFiles, tmp_path: Path) -> None:
    modes = ["socks5", "socks5h", "http", "connect"]
    jobs = []
    for i in range(50):
        mode = modes[i % len(modes)]
        host = "localhost" if mode == "socks5h" else "127.0.0.1"
        out = tmp_path / f"small-{i}"
        jobs.append(curl([*_mode_args(mode, pair), http_files.url("small", host)], out))
    await asyncio.gather(*jobs)
    want = sha(http_files.blobs["small"])
    for i in range(50):
        assert file_sha(tmp_path / f"small-{i}") == want, f"curl #{i} got different bytes"
    assert http_files.requests == 50

"""Real resip-server and resip-proxy through an impaired link (scripts/netlab; needs root).

Every download is a 20 MiB random file fetched with ``curl --socks5-hostname`` through the
proxy and checked byte for byte (SHA-256). The link is 20 Mbit/s each way with a 64 KiB
queue and 100 ms RTT unless a test says otherwise. The blackhole lasts 30 s instead of the
issue's 90 s to keep CI time sane: the outage machinery (probe backoff capped at 30 s) is
already fully engaged after 30 s.
"""

from __future__ import annotations

import time

import pytest

from .conftest import BLOB_SIZE, Stack, record

pytestmark = [pytest.mark.lab]

LINK = {"delay": 0.05, "rate_bps": 20e6, "queue_bytes": 64 * 1024}
#: Seconds of total outage (the issue asks for 90; see the module docstring).
BLACKHOLE = 30.0
#: The issue's limit for moving to the TCP fallback once UDP is blocked.
FALLBACK_LIMIT = 5.0


def _goodput(seconds: float) -> float:
    return round(BLOB_SIZE * 8 / seconds / 1e6, 2)


@pytest.fixture
def link(stack: Stack) -> Stack:
    stack.reset()
    return stack


@pytest.mark.timeout(120)
def test_download_at_10_percent_loss(link: Stack, request: pytest.FixtureRequest) -> None:
    link.lab.set(loss=0.10, **LINK)
    seconds = link.download().finish(100)
    record(
        request, loss=0.10, rtt_ms=100, seconds=round(seconds, 1), goodput_mbit=_goodput(seconds)
    )


@pytest.mark.timeout(150)
def test_download_at_30_percent_loss(link: Stack, request: pytest.FixtureRequest) -> None:
    link.lab.set(loss=0.30, **LINK)
    seconds = link.download().finish(130)
    record(
        request, loss=0.30, rtt_ms=100, seconds=round(seconds, 1), goodput_mbit=_goodput(seconds)
    )


@pytest.mark.timeout(150)
def test_blackhole_mid_download_resumes(link: Stack, request: pytest.FixtureRequest) -> None:
    link.lab.set(loss=0.05, **LINK)
    download = link.download(small=True)
    download.wait_bytes(2 << 20, 40)
    at = download.size()
    link.lab.set(blackhole=True)
    hole_started = time.monotonic()
    time.sleep(BLACKHOLE)  # the outage itself is the scenario: nothing to wait for
    link.lab.set(blackhole=False)
    assert download.size() - at < 512 * 1024, "data kept flowing through the blackhole"
    resumed_from = download.size()
    download.wait_bytes(resumed_from + 256 * 1024, 60)
    resumed = time.monotonic() - hole_started - BLACKHOLE
    seconds = download.finish(120)
    record(
        request, blackhole_s=BLACKHOLE, resumed_after_s=round(resumed, 1),
        seconds=round(seconds, 1), size_mib=8,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_client_address_change_mid_download(link: Stack, request: pytest.FixtureRequest) -> None:
    link.lab.set(loss=0.05, **LINK)
    download = link.download(small=True)
    download.wait_bytes(2 << 20, 40)
    moved = time.monotonic()
    at = download.size()
    link.lab.move_client(drop_old=True)
    download.wait_bytes(at + 256 * 1024, 60)
    resumed = time.monotonic() - moved
    seconds = download.finish(100)
    record(request, resumed_after_s=round(resumed, 1), seconds=round(seconds, 1), size_mib=8)


@pytest.mark.timeout(120)
def test_nat_rebinding_mid_download(link: Stack, request: pytest.FixtureRequest) -> None:
    link.lab.set(loss=0.05, **LINK)
    download = link.download(small=True)
    download.wait_bytes(2 << 20, 40)
    moved = time.monotonic()
    at = download.size()
    link.lab.rebind_nat("10.200.1.77", 40001)
    download.wait_bytes(at + 256 * 1024, 60)
    resumed = time.monotonic() - moved
    seconds = download.finish(100)
    record(request, resumed_after_s=round(resumed, 1), seconds=round(seconds, 1), size_mib=8)


@pytest.mark.timeout(150)
def test_udp_blocked_falls_back_to_tcp(link: Stack, request: pytest.FixtureRequest) -> None:
    link.lab.set(loss=0.05, **LINK)
    download = link.download(small=True)
    download.wait_bytes(2 << 20, 40)
    blocked = time.monotonic()
    link.lab.set(block_udp=True)
    fallback = link.proxy_log.wait_for("using the TCP fallback", 60, after=blocked)
    assert fallback is not None, f"no TCP fallback:\n{link.proxy_log.text()[-2000:]}"
    tcp_before = link.lab.stats()["s2c"]["bytes_by_proto"].get("6", 0)
    seconds = download.finish(120)
    tcp_bytes = link.lab.stats()["s2c"]["bytes_by_proto"].get("6", 0) - tcp_before
    assert tcp_bytes > 1 << 20, "the rest of the download did not go over TCP"
    record(
        request, fallback_after_s=round(fallback - blocked, 1), seconds=round(seconds, 1),
        size_mib=8,
    )  # fmt: skip
    assert fallback - blocked < FALLBACK_LIMIT, f"fallback took {fallback - blocked:.1f} s"

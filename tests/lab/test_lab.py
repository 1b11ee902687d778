"""Real resip-server and resip-proxy through an impaired link (scripts/netlab; needs root).

Every download is a 20 MiB random file fetched with ``curl --socks5-hostname`` through the
proxy and checked byte for byte (SHA-256). The link is 20 Mbit/s each way with a 64 KiB
queue and 100 ms RTT unless a test says otherwise. The blackhole lasts 30 s instead of the
issue's 90 s to keep CI time sane: the outage machinery (probe backoff capped at 30 s) is
already fully engaged after 30 s.
"""

from __future__ import annotations

import os
import time

import pytest

from .conftest import BLOB_SIZE, Stack, record

pytestmark = [pytest.mark.lab]

LINK = {"delay": 0.05, "rate_bps": 20e6, "queue_bytes": 64 * 1024}
#: Seconds of total outage (the issue asks for 90; see the module docstring).
#: RESIP_LAB_BLACKHOLE=90 runs the full-length scenario.
BLACKHOLE = float(os.environ.get("RESIP_LAB_BLACKHOLE", "30"))
#: The issue's limit for moving to the TCP fallback once UDP is blocked.
FALLBACK_LIMIT = 5.0
#: Mid-transfer the same limit holds: silent UDP (2 s) -> fresh socket (1 s) -> TCP.
MID_TRANSFER_FALLBACK_LIMIT = FALLBACK_LIMIT


def _goodput(seconds: float) -> float:
    return round(BLOB_SIZE * 8 / seconds / 1e6, 2)


@pytest.mark.timeout(120)
def test_download_at_10_percent_loss(stack: Stack, request: pytest.FixtureRequest) -> None:
    stack.lab.set(loss=0.10, **LINK)
    seconds = stack.download().finish(100)
    record(
        request, loss=0.10, rtt_ms=100, seconds=round(seconds, 1), goodput_mbit=_goodput(seconds)
    )


@pytest.mark.timeout(150)
def test_download_at_30_percent_loss(stack: Stack, request: pytest.FixtureRequest) -> None:
    stack.lab.set(loss=0.30, **LINK)
    seconds = stack.download().finish(130)
    record(
        request, loss=0.30, rtt_ms=100, seconds=round(seconds, 1), goodput_mbit=_goodput(seconds)
    )


@pytest.mark.timeout(120 + BLACKHOLE)
def test_blackhole_mid_download_resumes(stack: Stack, request: pytest.FixtureRequest) -> None:
    stack.lab.set(loss=0.05, **LINK)
    download = stack.download(small=True)
    download.wait_bytes(2 << 20, 40)
    at = download.size()
    stack.lab.set(blackhole=True)
    hole_started = time.monotonic()
    time.sleep(BLACKHOLE)  # the outage itself is the scenario: nothing to wait for
    stack.lab.set(blackhole=False)
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
def test_client_address_change_mid_download(stack: Stack, request: pytest.FixtureRequest) -> None:
    stack.lab.set(loss=0.05, **LINK)
    download = stack.download(small=True)
    download.wait_bytes(2 << 20, 40)
    moved = time.monotonic()
    at = download.size()
    stack.lab.move_client(drop_old=True)
    download.wait_bytes(at + 256 * 1024, 60)
    resumed = time.monotonic() - moved
    seconds = download.finish(100)
    via_tcp = stack.proxy_log.wait_for("using the TCP fallback", 0, after=moved) is not None
    record(
        request, resumed_after_s=round(resumed, 1), seconds=round(seconds, 1), size_mib=8,
        via_tcp_fallback=via_tcp,
    )  # fmt: skip


@pytest.mark.timeout(120)
def test_nat_rebinding_mid_download(stack: Stack, request: pytest.FixtureRequest) -> None:
    stack.lab.set(loss=0.05, **LINK)
    download = stack.download(small=True)
    download.wait_bytes(2 << 20, 40)
    moved = time.monotonic()
    at = download.size()
    stack.lab.rebind_nat("10.200.1.77", 40001)
    download.wait_bytes(at + 256 * 1024, 60)
    resumed = time.monotonic() - moved
    seconds = download.finish(100)
    # The server must follow the new address over UDP (roaming), not need the fallback.
    assert stack.proxy_log.wait_for("TCP fallback", 0, after=moved) is None
    assert stack.lab.stats()["s2c"]["bytes_by_proto"].get("6", 0) < 64 * 1024
    record(request, resumed_after_s=round(resumed, 1), seconds=round(seconds, 1), size_mib=8)


@pytest.mark.timeout(150)
def test_udp_blocked_mid_download_falls_back_to_tcp(
    stack: Stack, request: pytest.FixtureRequest
) -> None:
    stack.lab.set(loss=0.05, **LINK)
    download = stack.download(small=True)
    download.wait_bytes(2 << 20, 40)
    blocked = time.monotonic()
    stack.lab.set(block_udp=True)
    fallback = stack.proxy_log.wait_for("using the TCP fallback", 60, after=blocked)
    assert fallback is not None, f"no TCP fallback:\n{stack.proxy_log.text()[-2000:]}"
    tcp_before = stack.lab.stats()["s2c"]["bytes_by_proto"].get("6", 0)
    seconds = download.finish(120)
    tcp_bytes = stack.lab.stats()["s2c"]["bytes_by_proto"].get("6", 0) - tcp_before
    assert tcp_bytes > 1 << 20, "the rest of the download did not go over TCP"
    record(
        request, fallback_after_s=round(fallback - blocked, 1), seconds=round(seconds, 1),
        size_mib=8,
    )  # fmt: skip
    assert fallback - blocked < MID_TRANSFER_FALLBACK_LIMIT, (
        f"fallback took {fallback - blocked:.1f} s"
    )


@pytest.mark.timeout(120)
def test_udp_blocked_from_start_uses_tcp_within_5_s(
    stack_without_proxy: Stack, request: pytest.FixtureRequest
) -> None:
    stack = stack_without_proxy
    stack.lab.set(block_udp=True, **LINK)
    stack.start_proxy()
    # From the moment the session exists (UDP is tried first): process start-up and the
    # HTTPS session request are not part of the fallback.
    started = stack.proxy_log.wait_for(r"session \S+ created", 0)
    assert started is not None
    fallback = stack.proxy_log.wait_for("using the TCP fallback", 30, after=started)
    assert fallback is not None, f"no TCP fallback:\n{stack.proxy_log.text()[-2000:]}"
    seconds = stack.download(small=True).finish(100)
    assert stack.lab.stats()["s2c"]["bytes_by_proto"].get("6", 0) > 8 << 20
    record(
        request, fallback_after_s=round(fallback - started, 1), seconds=round(seconds, 1),
        goodput_mbit=round(8 * 8 * 1.048576 / seconds, 2), size_mib=8,
    )  # fmt: skip
    assert fallback - started < FALLBACK_LIMIT, f"fallback took {fallback - started:.1f} s"

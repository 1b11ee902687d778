"""Headless Chromium through ``resip-proxy run``, as SOCKS5 and as an HTTP proxy.

A local HTTP server (127.0.0.1, ephemeral port, a thread of the test) serves a page whose
JavaScript fetches a 5 MiB random asset and writes its length and FNV-1a checksum into the
DOM; ``chromium --dump-dom`` prints the DOM, which must show the numbers computed here.
``--proxy-bypass-list=<-loopback>`` makes Chromium send loopback through the proxy, and
the HTTP server checks that every request it answers arrives on a connection owned by the
``resip-server`` process (found through /proc), so a Chromium that bypassed the proxy
fails the test instead of passing it. ``--virtual-time-budget`` makes ``--dump-dom`` wait
for the fetch (virtual time stands still while network requests are pending). Skipped
with the reason when Chromium is not installed (``scripts/install-test-deps``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import ProxyHandle, ServerHandle

# Debian's /usr/bin/chromium is a wrapper adding flags (remote extensions, Google API keys)
# that make the browser call Google; the binary itself is started with only ours.
CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"))
        if p and Path(p).is_file()
    ),
    "/usr/bin/chromium",
)
ASSET_SIZE = 5 << 20
CHROMIUM_TIMEOUT = 60.0

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason="chromium not installed (apt-get install chromium; scripts/install-test-deps)",
)

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>resip e2e</title></head><body>
<pre id="result">pending</pre>
<script>
// FNV-1a 32-bit: cheap, order-sensitive, and exact in JS with Math.imul.
fetch("/asset.bin", {cache: "no-store"})
  .then(r => r.ok ? r.arrayBuffer() : Promise.reject(new Error("HTTP " + r.status)))
  .then(buf => {
    const bytes = new Uint8Array(buf);
    let h = 0x811c9dc5;
    for (let i = 0; i < bytes.length; i++) { h = Math.imul(h ^ bytes[i], 16777619) >>> 0; }
    document.getElementById("result").textContent =
      "length=" + bytes.length + " fnv1a=" + h.toString(16).padStart(8, "0");
  })
  .catch(e => { document.getElementById("result").textContent = "error: " + e; });
</script>
</body></html>
"""


def fnv1a(data: bytes) -> int:
    """32-bit FNV-1a, as the page computes it."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """Inode of the IPv4 TCP socket 127.0.0.1:local_port -> 127.0.0.1:remote_port."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.split(":")[1], 16) == local_port and (
                int(remote.split(":")[1], 16) == remote_port
            ):
                return inode
    return None


def _owned_by(pid: int, inode: str) -> bool:
    target = f"socket:[{inode}]"
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


@dataclass
class Site:
    """The local web server: what it served, and whether each request came via ResIP."""

    port: int
    asset: bytes
    #: (path, came from the resip-server process) for each request answered.
    requests: list[tuple[str, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class Asset:
    """The random asset and the DOM text the page must produce for it."""

    data: bytes
    expected: str


@pytest.fixture(scope="module")
def asset() -> Asset:
    """5 MiB of random bytes; the checksum (slow in pure Python) is computed once."""
    data = os.urandom(ASSET_SIZE)
    return Asset(data, f"length={len(data)} fnv1a={fnv1a(data):08x}")


@pytest.fixture
def site(resip_server: ServerHandle, asset: Asset) -> Iterator[Site]:
    """A threaded HTTP server on 127.0.0.1 serving the page and the asset."""
    state = Site(port=0, asset=asset.data)
    server_pid = resip_server.process.pid

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            peer_port = self.client_address[1]
            inode = _socket_inode(peer_port, state.port)
            state.requests.append((self.path, inode is not None and _owned_by(server_pid, inode)))
            if self.path == "/":
                body, kind = PAGE, "text/html; charset=utf-8"
            elif self.path == "/asset.bin":
                body, kind = state.asset, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output clean; failures report state.requests

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.port = httpd.socket.getsockname()[1]
    thread = threading.Thread(target=httpd.serve_forever, name="e2e-site", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


_RESULT = re.compile(r'<pre id="result">([^<]*)</pre>')


def _dump_dom(proxy: str, url: str, profile: Path) -> tuple[str, str]:
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        # Less background traffic (it would only reach the proxy, which refuses non-loopback).
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-client-side-phishing-detection",
        "--disable-domain-reliability",
        "--disable-breakpad",
        "--no-pings",
        "--metrics-recording-only",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        f"--user-data-dir={profile}",
        f"--proxy-server={proxy}",
        # Chromium never proxies loopback unless told to: "<-loopback>" removes that rule.
        # Its background calls to Google (which no flag fully stops) bypass the proxy
        # instead, and the resolver rule fails them on the spot, so neither the test
        # machine nor the ResIP server looks up or contacts anything but 127.0.0.1.
        "--proxy-bypass-list=<-loopback>;*.google.com;*.googleapis.com;*.gvt1.com",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        # Wait for the fetch: virtual time does not advance while requests are pending.
        "--virtual-time-budget=30000",
        "--dump-dom",
        url,
    ]
    # run() kills Chromium (and reaps it) when the timeout expires; its helper processes
    # exit with the browser. Without Google API keys Chromium makes fewer Google calls.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOOGLE_")}
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=CHROMIUM_TIMEOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    return result.stdout, f"exit {result.returncode}; stderr tail:\n{result.stderr[-3000:]}"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("scheme", ["socks5", "http"])
def test_chromium_loads_page_and_5_mib_asset(
    scheme: str,
    site: Site,
    asset: Asset,
    resip_proxy: ProxyHandle,
    resip_server: ServerHandle,
    tmp_path: Path,
) -> None:
    proxy = f"{scheme}://127.0.0.1:{resip_proxy.port}"
    dom, details = _dump_dom(proxy, f"http://127.0.0.1:{site.port}/", tmp_path / "profile")
    context = (
        f"chromium {details}\nrequests: {site.requests}\n"
        f"{resip_proxy.process.describe()}\n{resip_server.process.describe()}"
    )
    match = _RESULT.search(dom)
    assert match is not None, f"no result element in the DOM:\n{dom[-2000:]}\n{context}"
    assert match.group(1) == asset.expected, context
    paths = [path for path, _ in site.requests]
    assert "/" in paths and "/asset.bin" in paths, context
    assert all(via_resip for _, via_resip in site.requests), (
        f"a request did not come through resip-server:\n{context}"
    )

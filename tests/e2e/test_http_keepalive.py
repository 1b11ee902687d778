"""curl through the real proxy's plain-HTTP mode (``-x http://``): keep-alive both ways.

One curl invocation fetches many URLs; ``%{num_connects}`` says how many connections
it opened to the proxy, and the origin (an h11 server counting its connections) says
how many channels the proxy opened. Bodies are checked byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest

from .conftest import ResipPair, TcpServer, tcp_server

CURL = "/usr/bin/curl"

pytestmark = [
    pytest.mark.skipif(not os.access(CURL, os.X_OK), reason=f"{CURL} is missing"),
    pytest.mark.timeout(60),
]

log = logging.getLogger(__name__)

ETAG = b'"v1"'


def body_for(path: str, size: int) -> bytes:
    """The deterministic body the origin sends for ``path``."""
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[h11.Request, bytes] | None:
    request: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(1 << 16))
        elif isinstance(event, h11.Request):
            request = event
            if conn.they_are_waiting_for_100_continue:
                writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            return request, bytes(body)
        else:  # ConnectionClosed, PAUSED
            return None


def _answer(conn: h11.Connection, request: h11.Request, body: bytes) -> bytes | None:
    """The response bytes; ``None``: answer close-delimited (raw), then close."""
    kind, _, size_text = request.target.decode().strip("/").partition("/")
    if kind == "close":
        return None
    if kind == "echo":
        text = f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
        head = h11.Response(status_code=200, headers=[("Content-Length", str(len(text)))])
        return conn.send(head) + conn.send(h11.Data(data=text)) + conn.send(h11.EndOfMessage())
    if kind == "etag" and dict(request.headers).get(b"if-none-match") == ETAG:
        head = h11.Response(status_code=304, headers=[("ETag", ETAG)])
        return conn.send(head) + conn.send(h11.EndOfMessage())
    data = body_for(request.target.decode(), int(size_text or 1000))
    fields = [("ETag", ETAG), ("Keep-Alive", "timeout=60"), ("X-Kind", kind)]
    if kind != "chunked":
        fields.append(("Content-Length", str(len(data))))
    out = conn.send(h11.Response(status_code=200, headers=fields))
    if request.method != b"HEAD":
        # Several pieces: a chunked answer really has several chunks.
        for i in range(0, len(data), 40_000):
            out += conn.send(h11.Data(data=data[i : i + 40_000]))
    return out + conn.send(h11.EndOfMessage())


async def origin_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An HTTP/1.1 origin: /cl/N, /chunked/N, /close/N, /etag/N, POST /echo."""
    conn = h11.Connection(h11.SERVER)
    while (got := await _next_request(conn, reader, writer)) is not None:
        request, body = got
        out = _answer(conn, request, body)
        if out is None:
            # No length at all: the end of the body is the end of the connection.
            data = body_for(request.target.decode(), int(request.target.split(b"/")[-1]))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\nConnection: close\r\n\r\n")
            writer.write(data)
            await writer.drain()
            return
        writer.write(out)
        await writer.drain()
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


@pytest.fixture
async def origin() -> AsyncIterator[TcpServer]:
    """The counting h11 origin on 127.0.0.1."""
    async with tcp_server(origin_handler) as state:
        yield state


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


async def curl_many(
    pair: ResipPair, jobs: list[list[str]], proxy_args: list[str] | None = None
) -> list[tuple[int, int]]:
    """One curl run of several transfers (``--next`` between them).

    Each job is its own arguments (URL, ``-o``, options); returns each transfer's
    ``(num_connects, http_code)``.
    """
    proxy = proxy_args or ["-x", f"http://{pair.proxy_url_host}"]
    argv: list[str] = []
    for i, job in enumerate(jobs):
        if i:
            argv.append("--next")
        argv += ["-sS", "--fail", *proxy, "-w", "%{num_connects} %{http_code}\\n", *job]
    proc = await asyncio.create_subprocess_exec(
        CURL, *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_env()
    )
    async with asyncio.timeout(50):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"curl exited {proc.returncode}: {err.decode()[-2000:]}"
    lines = out.decode().split()
    return [(int(a), int(b)) for a, b in zip(lines[::2], lines[1::2], strict=True)]


def _url(server: TcpServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.mark.parametrize(
    ("kind", "origin_connections"), [("cl", 1), ("chunked", 1), ("close", 100)]
)
async def test_100_gets_reuse_one_client_connection(
    pair: ResipPair, origin: TcpServer, tmp_path: Path, kind: str, origin_connections: int
) -> None:
    paths = [f"/{kind}/{1000 + 997 * i}" for i in range(100)]
    jobs = [[_url(origin, p), "-o", str(tmp_path / f"{i}")] for i, p in enumerate(paths)]
    results = await curl_many(pair, jobs)
    assert [code for _, code in results] == [200] * 100
    assert sum(n for n, _ in results) == 1, "curl had to open a new connection to the proxy"
    for i, path in enumerate(paths):
        want = body_for(path, int(path.rsplit("/", 1)[1]))
        assert (tmp_path / f"{i}").read_bytes() == want, f"transfer {i} ({path})"
    # A kept-alive origin is reused through one channel; one that closes cannot be.
    assert origin.connections == origin_connections


async def test_head_and_304_keep_the_connection(
    pair: ResipPair, origin: TcpServer, tmp_path: Path
) -> None:
    headers = tmp_path / "head"
    if_none_match = ["-H", f"If-None-Match: {ETAG.decode()}"]
    jobs = [
        ["-I", _url(origin, "/cl/5000"), "-o", str(headers)],
        [_url(origin, "/cl/5000"), "-o", str(tmp_path / "after-head")],
        [*if_none_match, _url(origin, "/etag/7"), "-o", str(tmp_path / "304")],
        ["-I", _url(origin, "/chunked/9000"), "-o", str(tmp_path / "head-chunked")],
        [_url(origin, "/chunked/9000"), "-o", str(tmp_path / "after-304")],
    ]
    results = await curl_many(pair, jobs)
    assert [code for _, code in results] == [200, 200, 304, 200, 200]
    assert sum(n for n, _ in results) == 1
    head = headers.read_bytes().lower()
    assert b"content-length: 5000" in head
    assert b"keep-alive" not in head, "a hop-by-hop field of the origin reached the client"
    assert (tmp_path / "after-head").read_bytes() == body_for("/cl/5000", 5000)
    assert not (tmp_path / "304").exists(), "a 304 has no body (curl writes no file)"
    assert (tmp_path / "after-304").read_bytes() == body_for("/chunked/9000", 9000)
    assert origin.connections == 1


@pytest.mark.parametrize("chunked", [False, True])
async def test_post_bodies_then_get_on_the_same_connection(
    pair: ResipPair, origin: TcpServer, tmp_path: Path, chunked: bool
) -> None:
    # 3 MiB: curl asks "Expect: 100-continue" first, which the origin answers.
    small, large = os.urandom(20_000), os.urandom(3 << 20)
    (tmp_path / "small").write_bytes(small)
    (tmp_path / "large").write_bytes(large)
    extra = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    echo = _url(origin, "/echo")
    jobs = [
        [*extra, "--data-binary", f"@{tmp_path / 'small'}", echo, "-o", str(tmp_path / "r1")],
        [*extra, "--data-binary", f"@{tmp_path / 'large'}", echo, "-o", str(tmp_path / "r2")],
        [_url(origin, "/cl/3000"), "-o", str(tmp_path / "r3")],
    ]
    results = await curl_many(pair, jobs)
    assert [code for _, code in results] == [200, 200, 200]
    assert sum(n for n, _ in results) == 1
    assert (tmp_path / "r1").read_text() == f"{len(small)} {hashlib.sha256(small).hexdigest()}"
    assert (tmp_path / "r2").read_text() == f"{len(large)} {hashlib.sha256(large).hexdigest()}"
    assert (tmp_path / "r3").read_bytes() == body_for("/cl/3000", 3000)
    assert origin.connections == 1


async def test_a_new_channel_when_the_origin_changes(pair: ResipPair, tmp_path: Path) -> None:
    async with tcp_server(origin_handler) as a, tcp_server(origin_handler) as b:
        order = [a, a, b, b, a]
        jobs = [
            [_url(s, f"/cl/{100 + i}"), "-o", str(tmp_path / f"{i}")] for i, s in enumerate(order)
        ]
        results = await curl_many(pair, jobs)
        assert sum(n for n, _ in results) == 1
        for i in range(len(order)):
            assert (tmp_path / f"{i}").read_bytes() == body_for(f"/cl/{100 + i}", 100 + i)
        assert (a.connections, b.connections) == (2, 1)


async def test_100_gets_timed_http_against_socks5(
    pair: ResipPair, origin: TcpServer, tmp_path: Path
) -> None:
    jobs = [[_url(origin, f"/cl/{2000 + i}"), "-o", os.devnull] for i in range(100)]
    started = time.perf_counter()
    http = await curl_many(pair, jobs)
    middle = time.perf_counter()
    socks = await curl_many(pair, jobs, ["--socks5", pair.proxy_url_host])
    ended = time.perf_counter()
    log.warning(
        "100 GETs: http:// %.3f s (%d connections), socks5 %.3f s (%d connections)",
        middle - started, sum(n for n, _ in http), ended - middle, sum(n for n, _ in socks),
    )  # fmt: skip
    assert sum(n for n, _ in http) == 1

"""The plain-HTTP forward mode with keep-alive, over raw sockets and scripted origins.

Each origin answers with bytes a test chose, so every framing and failure the proxy
must handle is reached on purpose; h11 reads the proxy's answers on the client side.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h11
import pytest

from resip_proxy.frontend import ProxyFrontend

pytestmark = pytest.mark.timeout(30)

STEP = 10.0

#: ``(n, request) -> raw answer`` for the n-th request (from 0) on one origin
#: connection; ``None`` closes that connection without answering.
Script = Callable[[int, h11.Request], bytes | None]


def ok(body: bytes, *fields: str) -> bytes:
    """A raw 200 with Content-Length and extra ``fields``."""
    head = ["HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Origin:
    """A scripted origin: its port, connections accepted and requests seen."""

    port: int = 0
    connections: int = 0
    requests: list[h11.Request] = field(default_factory=list)


async def _serve(
    origin: Origin, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    origin.connections += 1
    leftover = b""
    try:
        for n in range(100):
            conn = h11.Connection(h11.SERVER)
            if leftover:
                conn.receive_data(leftover)
            request = None
            while not isinstance(event := conn.next_event(), h11.EndOfMessage):
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.ConnectionClosed):
                    return
            assert request is not None
            origin.requests.append(request)
            leftover = conn.trailing_data[0]
            answer = script(n, request)
            if answer is None:
                return
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer.lower():
                return
    except (ConnectionError, h11.RemoteProtocolError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def origin_server(script: Script) -> AsyncIterator[Origin]:
    """Run a scripted origin on 127.0.0.1."""
    origin = Origin()
    server = await asyncio.start_server(lambda r, w: _serve(origin, script, r, w), "127.0.0.1", 0)
    origin.port = server.sockets[0].getsockname()[1]
    try:
        yield origin
    finally:
        server.close()
        await server.wait_closed()


class Client:
    """A raw client connection to the proxy, reading answers with h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._buffer = b""

    def get(self, port: int, path: str, *fields: str, version: str = "1.1") -> bytes:
        """A GET head for the origin on ``port``."""
        lines = [f"GET http://127.0.0.1:{port}{path} HTTP/{version}", *fields]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def response(self, method: bytes = b"GET") -> tuple[h11.Response, bytes]:
        """The next complete response and its body."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target=b"/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        if self._buffer:  # b"" would mean EOF to h11
            conn.receive_data(self._buffer)
        head, body = None, bytearray()
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await asyncio.wait_for(self.reader.read(65536), STEP))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
        assert head is not None
        self._buffer = conn.trailing_data[0]
        return head, bytes(body)

    async def closed(self) -> bool:
        """True once the proxy closed the connection with nothing more to say."""
        rest = self._buffer + await asyncio.wait_for(self.reader.read(), STEP)
        return rest == b""


@pytest.fixture
async def client(proxy: ProxyFrontend) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(*proxy.address)
    yield Client(reader, writer)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def fields_of(message: h11.Request | h11.Response) -> dict[bytes, bytes]:
    return dict(message.headers)


async def test_pipelined_requests_are_answered_in_order_then_a_bad_one_gets_400(
    client: Client,
) -> None:
    async with origin_server(lambda n, r: ok(r.target)) as origin:
        client.writer.write(
            client.get(origin.port, "/one") + client.get(origin.port, "/two") + b"BAD\r\n\r\n"
        )
        assert (await client.response())[1] == b"/one"
        assert (await client.response())[1] == b"/two"
        head, _ = await client.response()
        assert head.status_code == 400
        assert await client.closed()
    assert origin.connections == 1


async def test_hop_by_hop_fields_do_not_cross(client: Client) -> None:
    hops = ["Connection: keep-alive, X-Resp-Hop", "X-Resp-Hop: 1", "Keep-Alive: 5"]
    answer = ok(b"x", *hops, "Proxy-Authenticate: Basic", "X-End: 1")
    asked = ["Proxy-Connection: keep-alive", "Keep-Alive: 300", "Connection: X-Hop", "X-Hop: 1"]
    async with origin_server(lambda n, r: answer) as origin:
        client.writer.write(client.get(origin.port, "/", *asked, "TE: trailers", "X-Mine: 2"))
        head, body = await client.response()
        client.writer.write(client.get(origin.port, "/again"))
        assert (await client.response())[1] == b"x"
    seen = fields_of(origin.requests[0])
    assert seen[b"x-mine"] == b"2"
    assert not {b"proxy-connection", b"keep-alive", b"connection", b"x-hop", b"te"} & set(seen)
    got = fields_of(head)
    assert (body, got[b"x-end"]) == (b"x", b"1")
    assert not {b"connection", b"x-resp-hop", b"keep-alive", b"proxy-authenticate"} & set(got)
    assert origin.connections == 1


async def test_client_connection_close_ends_after_that_response(client: Client) -> None:
    async with origin_server(lambda n, r: ok(b"r%d" % n)) as origin:
        client.writer.write(client.get(origin.port, "/"))
        assert (await client.response())[1] == b"r0"
        client.writer.write(client.get(origin.port, "/", "Connection: close"))
        head, body = await client.response()
        assert (body, fields_of(head)[b"connection"]) == (b"r1", b"close")
        assert await client.closed()
    assert fields_of(origin.requests[1])[b"connection"] == b"close"


async def test_an_http10_client_never_gets_chunked(client: Client) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    async with origin_server(lambda n, r: chunked) as origin:
        client.writer.write(client.get(origin.port, "/", version="1.0"))
        answer = await asyncio.wait_for(client.reader.read(), STEP)  # the proxy closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"chunked" not in head.lower()
    assert body == b"hello"


async def test_origin_connection_close_keeps_the_client_connection(client: Client) -> None:
    async with origin_server(lambda n, r: ok(r.target, "Connection: close")) as origin:
        for path in ("/a", "/b", "/c"):
            client.writer.write(client.get(origin.port, path))
            head, body = await client.response()
            assert body == path.encode()
            assert b"connection" not in fields_of(head)
    assert origin.connections == 3


async def test_a_stale_reused_origin_connection_is_retried_on_a_new_channel(
    client: Client,
) -> None:
    # The second request on each origin connection finds it closed: an idle timeout.
    async with origin_server(lambda n, r: ok(r.target) if n == 0 else None) as origin:
        for path in ("/a", "/b"):
            client.writer.write(client.get(origin.port, path))
            assert (await client.response())[1] == path.encode()
    assert origin.connections == 2
    assert [r.target for r in origin.requests] == [b"/a", b"/b", b"/b"]


async def test_garbage_from_the_origin_gets_502(client: Client) -> None:
    async with origin_server(lambda n, r: ok(b"fine") if n == 0 else b"NOT HTTP\r\n\r\n") as o:
        client.writer.write(client.get(o.port, "/"))
        assert (await client.response())[1] == b"fine"
        client.writer.write(client.get(o.port, "/"))
        head, body = await client.response()
        assert head.status_code == 502
        assert b"malformed response" in body
        assert await client.closed()


async def test_an_early_answer_to_an_upload_is_not_lost(client: Client) -> None:
    refusal = b"HTTP/1.1 413 Too Big\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"

    def script(n: int, request: h11.Request) -> bytes:
        return ok(b"fine") if request.method == b"GET" else refusal

    async with origin_server(script) as origin:
        client.writer.write(client.get(origin.port, "/"))
        assert (await client.response())[1] == b"fine"
        body = b"u" * (4 << 20)
        head = f"POST http://127.0.0.1:{origin.port}/up HTTP/1.1\r\n"
        client.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())

        async def upload() -> None:
            with contextlib.suppress(ConnectionError):
                client.writer.write(body)
                await client.writer.drain()

        sending = asyncio.create_task(upload())
        answer, got = await client.response()
        await sending
    assert (answer.status_code, got) == (413, b"nope")


async def test_an_idle_kept_alive_connection_is_closed(
    client: Client, proxy: ProxyFrontend
) -> None:
    proxy.keepalive_timeout = 0.2
    async with origin_server(lambda n, r: ok(b"x")) as origin:
        client.writer.write(client.get(origin.port, "/"))
        head, _ = await client.response()
        assert b"connection" not in fields_of(head)
        assert await client.closed()

"""Plain-HTTP forward proxying (``GET http://host/...``) with keep-alive on both sides.

Contract
--------
:class:`HttpForwarder` serves the absolute-URI requests of one client connection, one
after the other, as an HTTP/1.1 proxy does:

- h11 frames every message. The client side is a server-role ``h11.Connection`` fed
  the request head that :class:`~resip_proxy.http_connect.HttpProxyServer` already
  validated and rewrote (``forward_head``), then the client's bytes; the origin side
  is a client-role ``h11.Connection`` per origin connection. Content-Length and
  chunked bodies (with trailers), responses without a body (HEAD, 1xx, 204, 304) and
  close-delimited responses are all delimited exactly. h11 writes the framing the
  client needs: a close-delimited origin response reaches an HTTP/1.1 client
  chunked, so the client connection stays open even then, and an aborted origin shows
  as a truncated message, never as a complete one.
- One channel per origin connection (:class:`OriginStream`). The next request to the
  same ``host:port`` on the same client connection reuses it while the origin keeps
  it alive and has sent nothing unasked; another target, or an origin that closed,
  gets a new channel. A body-less request that a reused origin connection closes
  without answering is sent once more on a new channel: the race every keep-alive
  client has with an origin's idle timeout.
- ``Connection: close`` or HTTP/1.0 from the client ends the client connection after
  the response; from the origin it ends that origin connection only. Hop-by-hop
  fields never cross: the codec removed them from requests; from responses
  ``Connection`` and the fields it lists, ``Keep-Alive``, ``Proxy-Connection``,
  ``Proxy-Authenticate``, ``TE``, ``Transfer-Encoding`` and ``Upgrade`` are removed.
- Failures before a response has begun are answered with an error and a close: the
  channel's TERMINATE code as 403/502/504, a malformed request body 400 (or h11's
  status hint), a malformed or missing origin response 502. The close lingers, so an
  answer sent while the client is still uploading is not lost to a TCP reset. After
  the response has begun, a failure aborts the client connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import Final

import h11

from resip.core import events as ev
from resip.core.codes import TerminateCode
from resip.core.errors import LocalProtocolError

from .client import Channel, ChannelFailed
from .http_connect import DEFAULT_MAX_HEAD, ProxyRequest, response
from .socks5 import Host

__all__ = ["HttpForwarder", "OriginGone", "OriginStream", "error_response", "http_status_for"]

log = logging.getLogger(__name__)

_READ: Final = 64 * 1024
#: Largest origin response head (cookies and CSP headers can be long).
_MAX_RESPONSE_HEAD: Final = 64 * 1024
#: How long, and for how many bytes, a closing connection keeps reading the client.
_LINGER_SECONDS: Final = 2.0
_LINGER_BYTES: Final = 1 << 20
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")
_RESPONSE_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"te",
        b"transfer-encoding",
        b"upgrade",
    }
)

Headers = list[tuple[bytes, bytes]]
#: What ``h11.Connection.next_event`` returns.
_Next = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]

#: HTTP status for a TERMINATE code; anything else is 502.
_HTTP_STATUSES: dict[int, int] = {TerminateCode.NOT_ALLOWED: 403, TerminateCode.TIMED_OUT: 504}


def http_status_for(code: int) -> int:
    """The HTTP status for a channel TERMINATE code: 403 ACL, 504 timeout, else 502."""
    return _HTTP_STATUSES.get(code, 502)


def error_response(status: int, reason: str) -> bytes:
    """A complete text/plain error response with ``Connection: close``."""
    text = _UNPRINTABLE.sub("?", reason)[:200] or "error"
    return response(
        status,
        HTTPStatus(status).phrase,
        headers=[("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
        body=f"{text}\n".encode(),
    )


def _end_to_end(fields: Iterable[tuple[bytes, bytes]]) -> Headers:
    """A response's fields without the hop-by-hop ones; framing is left to h11."""
    items = list(fields)
    dropped = set(_RESPONSE_HOP_BY_HOP)
    for name, value in items:
        if name.lower() == b"connection":
            dropped.update(token.strip().lower() for token in value.split(b","))
    # Content-Length is framing, not the Connection field's to remove; but next to
    # Transfer-Encoding it is wrong (RFC 9112 §6.3), and h11 must not be told it.
    dropped.discard(b"content-length")
    if any(name.lower() == b"transfer-encoding" for name, _ in items):
        dropped.add(b"content-length")
    return [(name, value) for name, value in items if name.lower() not in dropped]


class OriginGone(Exception):
    """The origin channel was aborted (TERMINATE) or its session ended."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class OriginStream:
    """A TCP channel used as the byte stream of one origin connection.

    Create it, pass :meth:`on_event` as the ``listener`` of
    ``SessionManager.open_channel``, then ``await start(channel, timeout)``.
    """

    def __init__(self, host: Host, port: int) -> None:
        """An unopened stream to ``host:port`` (its :attr:`target`)."""
        self.target: tuple[Host, int] = (host, port)
        self._channel: Channel | None = None
        self._inbox: asyncio.Queue[ev.Event] = asyncio.Queue()
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable = asyncio.Event()
        self._failure: tuple[int, str] | None = None
        self._eof = False

    def on_event(self, event: ev.Event) -> None:
        """The channel's listener: every event of the channel comes here."""
        match event:
            case ev.ChannelStarted():
                if not self._started.done():
                    self._started.set_result(None)
            case ev.ChannelWritable():
                self._writable.set()
            case ev.ChannelTerminated(_, code, reason):
                self._failure = (code, reason)
                if not self._started.done():
                    self._started.set_result(None)
                self._writable.set()  # a blocked send() must see the failure
                self._inbox.put_nowait(event)
            case _:
                self._inbox.put_nowait(event)

    async def start(self, channel: Channel, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until the server connected the origin; raise :class:`ChannelFailed` if not.

        A timeout aborts the channel and raises ``ChannelFailed(6, ...)``.
        """
        self._channel = channel
        try:
            await asyncio.wait_for(asyncio.shield(self._started), timeout)
        except TimeoutError:
            channel.reset(6, "timed out waiting for the server")
            raise ChannelFailed(6, f"no answer from the server within {timeout:g} s") from None
        except asyncio.CancelledError:
            channel.reset(0, "cancelled")
            raise
        if self._failure is not None:
            channel.driver.unlisten(channel.id)
            code, reason = self._failure
            raise ChannelFailed(code, reason or "refused by the server")

    def _live(self) -> Channel:
        channel = self._channel
        if self._failure is not None:
            raise OriginGone(*self._failure)
        if channel is None:
            raise OriginGone(1, "the channel is not open")
        session = channel.driver.session
        if session.terminated or session.channels.get(channel.id) is None:
            raise OriginGone(1, "the channel is closed")
        return channel

    @property
    def reusable(self) -> bool:
        """True while the origin connection is open and idle: nothing from it is pending."""
        try:
            self._live()
        except OriginGone:
            return False
        return not self._eof and self._inbox.empty()

    async def send(self, data: bytes) -> None:
        """Queue ``data`` on the channel, waiting while the session has no room."""
        while data:
            channel = self._live()
            driver = channel.driver
            # Cleared before sending: a ChannelWritable for this very call must stick.
            self._writable.clear()
            try:
                accepted = driver.session.send(channel.id, data, now=driver.now())
            except LocalProtocolError:
                raise OriginGone(1, "the channel is closed") from None
            driver.flush()
            data = data[accepted:]
            if data:
                await self._writable.wait()

    async def receive(self) -> bytes:
        """What the origin sent next (all that is queued); ``b""`` once it closed its side.

        Raises :class:`OriginGone` when the channel was aborted. Call :meth:`consume`
        with the length once the bytes are passed on.
        """
        chunks: list[bytes] = []
        while not self._eof:
            if chunks and self._inbox.empty():
                break
            event = await self._inbox.get()
            match event:
                case ev.ChannelData(_, data):
                    chunks.append(data)
                case ev.ChannelEnded() | ev.ChannelClosed():
                    self._eof = True
                case ev.ChannelTerminated(_, code, reason):
                    self._inbox.put_nowait(event)  # every later call fails the same way
                    if chunks:
                        break
                    raise OriginGone(code, reason)
                case _:
                    pass
        return b"".join(chunks)

    def consume(self, n: int) -> None:
        """``n`` received bytes were passed on: the origin may send that much more."""
        channel = self._channel
        if channel is None or n <= 0:
            return
        channel.driver.session.consume(channel.id, n)
        channel.driver.flush()

    def close(self, reason: str) -> None:
        """End the origin connection (the server closes its socket) and stop listening."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.reset(0, reason)


OpenOrigin = Callable[[Host, int], Awaitable[OriginStream]]


class _Failed(Exception):
    """One exchange failed; ``status`` is the answer if no response has begun."""

    def __init__(self, status: int, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: The origin closed or aborted before sending a single byte.
        self.retryable = retryable
        #: The response had begun: the client connection must be aborted instead.
        self.started = False


async def _first_failure(main: asyncio.Task[None], side: asyncio.Task[None] | None) -> None:
    """Wait for ``main``; ``side`` may finish first, and its failure ends both.

    Once ``main`` is done, ``side`` no longer matters: it is cancelled.
    """
    tasks = [task for task in (main, side) if task is not None]
    pending = set(tasks)
    try:
        while not main.done():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if main not in done:
                for task in done:
                    task.result()
        main.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Exchange:
    """One request and its response, between the client connection and one origin."""

    def __init__(
        self,
        forwarder: HttpForwarder,
        client: h11.Connection,
        request: h11.Request,
        first: _Next,
        origin: OriginStream,
        origin_h11: h11.Connection,
    ) -> None:
        self._reader = forwarder.reader
        self._writer = forwarder.writer
        self._client = client
        self._request = request
        #: The client event after the request head: EndOfMessage if it has no body.
        self._first = first
        self._origin = origin
        self._origin_h11 = origin_h11
        #: The final response head went to the client: errors can no longer be answered.
        self.response_started = False
        self._got_any = False
        self._origin_eof = False

    async def run(self) -> None:
        """Forward the request, relay the response; raises :class:`_Failed`."""
        head = self._request
        headers = list(head.headers.raw_items())
        await self._to_origin(h11.Request(method=head.method, target=head.target, headers=headers))
        up = None
        if isinstance(self._first, h11.EndOfMessage):
            await self._to_origin(h11.EndOfMessage())
        else:
            # The origin may answer (or refuse) before the body is complete: both at once.
            up = asyncio.create_task(self._relay_body())
        await _first_failure(asyncio.create_task(self._relay_response()), up)

    # -- client -> origin ------------------------------------------------------------

    async def _relay_body(self) -> None:
        event = self._first
        while not isinstance(event, h11.EndOfMessage):
            if isinstance(event, h11.Data):
                await self._to_origin(h11.Data(data=event.data))
            elif event is h11.NEED_DATA:
                self._client.receive_data(await self._reader.read(_READ))
            else:  # ConnectionClosed; PAUSED cannot come before the end of the request
                raise _Failed(400, "the client closed the connection mid-request")
            try:
                event = self._client.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Failed(exc.error_status_hint, f"malformed request body: {exc}") from None
        await self._to_origin(h11.EndOfMessage(headers=_end_to_end(event.headers.raw_items())))

    async def _to_origin(self, event: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        try:
            data = self._origin_h11.send(event)
        except h11.LocalProtocolError as exc:
            raise _Failed(502, f"cannot forward the request: {exc}") from None
        try:
            await self._origin.send(data)
        except OriginGone as exc:
            raise self._gone(exc) from None

    def _gone(self, exc: OriginGone) -> _Failed:
        reason = f"the origin connection failed: {exc.reason}"
        return _Failed(http_status_for(exc.code), reason, retryable=not self._got_any)

    # -- origin -> client ------------------------------------------------------------

    async def _relay_response(self) -> None:
        unconsumed = 0
        while True:
            event = self._next_origin_event()
            if event is h11.NEED_DATA:
                # Credit goes back only for bytes the client took: a slow client
                # slows the origin instead of filling our memory.
                await self._writer.drain()
                self._origin.consume(unconsumed)
                data = await self._receive()
                unconsumed = len(data)
                self._origin_h11.receive_data(data)
            elif self._deliver(event):
                break
        await self._writer.drain()
        self._origin.consume(unconsumed)

    async def _receive(self) -> bytes:
        try:
            data = await self._origin.receive()
        except OriginGone as exc:
            raise self._gone(exc) from None
        self._got_any = self._got_any or bool(data)
        self._origin_eof = not data
        return data

    def _next_origin_event(self) -> _Next:
        try:
            return self._origin_h11.next_event()
        except h11.RemoteProtocolError as exc:
            if self._origin_eof and not self._got_any:
                reason = "the origin closed the connection without answering"
                raise _Failed(502, reason, retryable=True) from None
            raise _Failed(502, f"malformed response from the origin: {exc}") from None

    def _deliver(self, event: _Next) -> bool:
        """Pass one origin event on to the client; True once the response is complete."""
        modern = self._client.their_http_version == b"1.1"
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                raise _Failed(502, "the origin switched protocols unasked")
            if modern:  # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
                fields = _end_to_end(event.headers.raw_items())
                code, reason = event.status_code, event.reason
                self._write(
                    h11.InformationalResponse(status_code=code, headers=fields, reason=reason)
                )
        elif isinstance(event, h11.Response):
            fields = _end_to_end(event.headers.raw_items())
            code, reason = event.status_code, event.reason
            self._write(h11.Response(status_code=code, headers=fields, reason=reason))
            self.response_started = True
        elif isinstance(event, h11.Data):
            self._write(h11.Data(data=event.data))
        elif isinstance(event, h11.EndOfMessage):
            # Trailers need chunked, which an HTTP/1.0 client does not get.
            trailers = _end_to_end(event.headers.raw_items()) if modern else []
            self._write(h11.EndOfMessage(headers=trailers))
            return True
        else:  # ConnectionClosed or PAUSED: h11 gives neither before EndOfMessage
            raise _Failed(502, "the origin response ended early")
        return False

    def _write(
        self, event: h11.InformationalResponse | h11.Response | h11.Data | h11.EndOfMessage
    ) -> None:
        try:
            self._writer.write(self._client.send(event))
        except h11.LocalProtocolError as exc:
            raise _Failed(502, f"cannot relay the response: {exc}") from None


class HttpForwarder:
    """Serves the absolute-URI requests of one client connection (see the module doc)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        open_origin: OpenOrigin,
        *,
        max_head: int = DEFAULT_MAX_HEAD,
    ) -> None:
        """``open_origin(host, port)`` returns a started :class:`OriginStream`.

        It raises :class:`ChannelFailed` when the channel cannot be opened.
        ``max_head`` is the request head limit the codec applied.
        """
        self.reader = reader
        self.writer = writer
        self._open = open_origin
        # forward_head can be a little longer than the head the codec limited.
        self._max_event = 2 * max_head
        self._origin: OriginStream | None = None
        self._origin_h11: h11.Connection | None = None

    def close(self) -> None:
        """End the origin connection, if one is open; the client connection is the caller's."""
        self._drop_origin("the client connection ended")

    async def forward(self, request: ProxyRequest, data: bytes) -> bytes | None:
        """Serve ``request`` (not CONNECT); ``data`` is what the client sent after its head.

        Returns the client's bytes after this request (the start of the next one, maybe
        empty) when the connection stays open, or ``None`` when the caller must close it.
        """
        client = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_event)
        client.receive_data(request.forward_head + data)
        try:
            head = client.next_event()
            first = client.next_event()
        except h11.RemoteProtocolError as exc:
            await self._refuse(client, exc.error_status_hint, f"bad request: {exc}")
            return None
        if not isinstance(head, h11.Request):  # forward_head is a whole head: cannot happen
            await self._refuse(client, 400, "bad request")
            return None
        where = f"HTTP {request.method} {request.host}:{request.port}"
        try:
            exchange = await self._exchange(request, client, head, first)
        except ChannelFailed as exc:
            log.info("%s failed: %s", where, exc)
            await self._refuse(client, http_status_for(exc.code), exc.reason)
            return None
        except _Failed as exc:
            log.info("%s failed: %s", where, exc.reason)
            self._drop_origin(exc.reason)
            if exc.started:
                # A truncated response must not pass for a complete one.
                self.writer.transport.abort()
                return None
            await self._refuse(client, exc.status, exc.reason)
            return None
        log.debug("%s answered (%s origin connection)", where, exchange)
        self._settle_origin()
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            return client.trailing_data[0]
        if client.their_state is h11.SEND_BODY:
            await self._linger()
        return None

    async def _exchange(
        self, request: ProxyRequest, client: h11.Connection, head: h11.Request, first: _Next
    ) -> str:
        """Run the exchange, once more on a new channel if a reused one was stale."""
        bodyless = isinstance(first, h11.EndOfMessage)
        while True:
            origin, origin_h11, reused = await self._origin_for(request)
            exchange = _Exchange(self, client, head, first, origin, origin_h11)
            try:
                await exchange.run()
            except _Failed as exc:
                if exc.retryable and reused and bodyless:
                    log.debug("reused origin connection was stale (%s): new channel", exc.reason)
                    self._drop_origin(exc.reason)
                    continue
                exc.started = exchange.response_started
                raise
            return "reused" if reused else "new"

    async def _origin_for(self, request: ProxyRequest) -> tuple[OriginStream, h11.Connection, bool]:
        origin, conn = self._origin, self._origin_h11
        target = (request.host, request.port)
        if origin is not None and conn is not None and origin.target == target and origin.reusable:
            return origin, conn, True
        self._drop_origin("the client moved on to another origin connection")
        origin = await self._open(request.host, request.port)
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_RESPONSE_HEAD)
        self._origin, self._origin_h11 = origin, conn
        return origin, conn, False

    def _settle_origin(self) -> None:
        """Keep the origin connection for the next request if both sides allow it."""
        conn = self._origin_h11
        if conn is None:
            return
        done = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        # Bytes after the response were never asked for: that connection is confused.
        if done and not conn.trailing_data[0]:
            conn.start_next_cycle()
            return
        self._drop_origin("the origin connection cannot be reused")

    def _drop_origin(self, reason: str) -> None:
        origin, self._origin, self._origin_h11 = self._origin, None, None
        if origin is not None:
            origin.close(reason)

    async def _refuse(self, client: h11.Connection, status: int, reason: str) -> None:
        """Answer ``status`` and leave the connection to be closed."""
        self.writer.write(error_response(status, reason))
        await self.writer.drain()
        if client.their_state is not h11.DONE:
            await self._linger()

    async def _linger(self) -> None:
        """Half-close, then read what the client still sends before the caller closes.

        Closing with unread bytes makes the kernel send a reset, which can destroy our
        last answer in the client's receive buffer before it reads it.
        """
        with contextlib.suppress(OSError, ConnectionError, TimeoutError):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(_LINGER_SECONDS):
                budget = _LINGER_BYTES
                while budget > 0:
                    data = await self.reader.read(_READ)
                    if not data:
                        break
                    budget -= len(data)

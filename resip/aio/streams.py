"""Splice one stream channel to an asyncio socket pair, with backpressure both ways.

- Socket -> session: read only as much as ``send_capacity`` allows; when the
  session is full, wait for :class:`ChannelWritable`. A long outage therefore
  stops reading the local socket instead of buffering without bound.
- Session -> socket: write each :class:`ChannelData`, ``drain()``, and only then
  ``consume()`` it, so a slow local reader shrinks the remote sender's credit.
- Half-close travels both ways (socket EOF -> STOP; ChannelEnded -> write_eof).
- An abort on either side (ChannelTerminated, a socket error) ends both.
- Events that arrive before the splice exists (the first data often shares a packet
  with STARTED; a client may send before the server's target is connected) are held
  by an :class:`EarlyEvents` registered when the channel opens, and handed to the
  splice, in order, when it starts. This is the one place that holds early events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from resip.aio.driver import Listener, SessionDriver
from resip.core import events as ev
from resip.core.errors import LocalProtocolError

log = logging.getLogger(__name__)

#: Largest single read from the local socket.
READ_CHUNK = 64 * 1024


@dataclass(slots=True)
class SpliceResult:
    """How a spliced channel ended."""

    bytes_up: int = 0
    bytes_down: int = 0
    #: Set when the channel was aborted (by the peer or by a local error).
    terminated: tuple[int, str] | None = None


class EarlyEvents:
    """Holds one channel's events until whoever serves the channel is ready for them.

    Register :meth:`on_event` as the channel's listener (or call it from one) when the
    channel opens; :meth:`hand_over` later delivers what it holds and makes the new
    listener the channel's.
    """

    def __init__(self) -> None:
        self._events: deque[ev.Event] = deque()
        #: The channel ended (terminated or closed) while its events were held.
        self.aborted = False

    def on_event(self, event: ev.Event) -> None:
        """Hold one event."""
        if isinstance(event, (ev.ChannelTerminated, ev.ChannelClosed)):
            self.aborted = True
        self._events.append(event)

    def hand_over(self, driver: SessionDriver, channel_id: int, listener: Listener) -> None:
        """Deliver the held events to ``listener`` in order, then route the channel to it."""
        # Whatever arrives while draining (a listener may flush the driver) is still
        # routed to the old listener, which ends up here: appended, so order holds.
        while self._events:
            listener(self._events.popleft())
        driver.listen(channel_id, listener)


class ChannelSplice:
    """Moves bytes between ``channel_id`` and ``(reader, writer)`` until both directions end."""

    def __init__(
        self,
        driver: SessionDriver,
        channel_id: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        early: EarlyEvents | None = None,
    ) -> None:
        """Take over ``channel_id``'s events, first those ``early`` held, if given."""
        self._driver = driver
        self._channel = channel_id
        self._reader = reader
        self._writer = writer
        self._writable = asyncio.Event()
        self._inbox: asyncio.Queue[ev.Event] = asyncio.Queue()
        self.result = SpliceResult()
        if early is not None:
            early.hand_over(driver, channel_id, self._on_event)
        else:
            driver.listen(channel_id, self._on_event)

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.ChannelWritable):
            self._writable.set()
        else:
            self._inbox.put_nowait(event)

    async def run(self, *, initial: bytes = b"") -> SpliceResult:
        """Splice until both directions are finished or the channel is aborted."""
        up = asyncio.create_task(self._upstream(initial))
        down = asyncio.create_task(self._downstream())
        pending: set[asyncio.Task[None]] = {up, down}
        try:
            while pending:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if self.result.terminated is not None or down.done():
                    # Aborted, or the channel is fully closed: nothing more will flow.
                    for task in pending:
                        task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
        finally:
            self._driver.unlisten(self._channel)
            self._writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await self._writer.wait_closed()
        return self.result

    async def _upstream(self, initial: bytes) -> None:
        session = self._driver.session
        pending = initial
        try:
            while True:
                if not pending:
                    pending = await self._reader.read(READ_CHUNK)
                    if not pending:
                        break
                while pending:
                    if session.terminated or session.channels.get(self._channel) is None:
                        return
                    accepted = session.send(self._channel, pending, now=self._driver.now())
                    self._driver.flush()
                    self.result.bytes_up += accepted
                    pending = pending[accepted:]
                    if pending:
                        self._writable.clear()
                        await self._writable.wait()
        except (ConnectionError, OSError) as exc:
            self._abort(1, f"local socket error: {exc}")
            return
        except LocalProtocolError:
            return  # channel closed underneath us; the downstream side reports why
        if not session.terminated and session.channels.get(self._channel) is not None:
            session.shutdown(self._channel, now=self._driver.now())
            self._driver.flush()

    async def _downstream(self) -> None:
        session = self._driver.session
        while True:
            event = await self._inbox.get()
            match event:
                case ev.ChannelData(_, data):
                    try:
                        self._writer.write(data)
                        await self._writer.drain()
                    except (ConnectionError, OSError) as exc:
                        self._abort(1, f"local socket error: {exc}")
                        return
                    self.result.bytes_down += len(data)
                    session.consume(self._channel, len(data))
                    self._driver.flush()
                case ev.ChannelEnded():
                    with contextlib.suppress(OSError, ConnectionError):
                        if self._writer.can_write_eof():
                            self._writer.write_eof()
                case ev.ChannelClosed():
                    return
                case ev.ChannelTerminated(_, code, reason):
                    self.result.terminated = (code, reason)
                    self._writable.set()
                    return
                case _:
                    pass
            if session.terminated:
                self.result.terminated = (1, "session closed")
                self._writable.set()
                return

    def _abort(self, code: int, reason: str) -> None:
        self.result.terminated = (code, reason)
        session = self._driver.session
        if not session.terminated:
            session.reset_channel(self._channel, code, reason, now=self._driver.now())
            self._driver.flush()
        self._inbox.put_nowait(ev.ChannelTerminated(self._channel, code, reason))

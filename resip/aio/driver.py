"""Runs one sans-IO :class:`~resip.core.session.Session` on an asyncio loop.

The only place (with the other ``resip/aio`` modules) that reads ``loop.time()``.
After every input it flushes ``datagrams_to_send`` through ``transmit`` and
re-arms a single timer at ``next_timer()`` (aioquic's ``asyncio/protocol.py``
shape). Events are routed: channel events to the listener registered for that
channel, everything else (and channel events nobody listens to) to
``on_event``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from resip.core import events as ev
from resip.core.codes import CloseCode, TerminateCode
from resip.core.crypto import Header
from resip.core.session import Session

log = logging.getLogger(__name__)

Transmit = Callable[[bytes, Hashable], None]
Listener = Callable[[ev.Event], None]

_CHANNEL_EVENTS = (
    ev.ChannelStarted,
    ev.ChannelData,
    ev.ChannelEnded,
    ev.ChannelWritable,
    ev.ChannelClosed,
    ev.ChannelTerminated,
)


class SessionDriver:
    """Feeds a session with datagrams and timer ticks; sends what it produces."""

    def __init__(
        self,
        session: Session,
        transmit: Transmit,
        *,
        on_event: Listener | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.session = session
        self.transmit = transmit
        self.on_event = on_event
        self._loop = loop or asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._listeners: dict[int, Listener] = {}
        self._closed = asyncio.Event()
        self._flushing = False

    def now(self) -> float:
        """The loop's monotonic clock: the ``now`` every session input gets."""
        return self._loop.time()

    # -- inputs -------------------------------------------------------------------

    def datagram_received(
        self, data: bytes, path: Hashable, *, header: Header | None = None
    ) -> bool:
        """A datagram (or TCP-fallback frame) arrived from ``path``; whether it authenticated.

        ``header``: the datagram's header, if the caller already unmasked it to route it.
        """
        authenticated = self.session.receive_datagram(data, path, now=self.now(), header=header)
        self.flush()
        return authenticated

    def listen(self, channel_id: int, listener: Listener) -> None:
        """Route the events of ``channel_id`` to ``listener``."""
        self._listeners[channel_id] = listener

    def unlisten(self, channel_id: int) -> None:
        """Stop routing a channel's events."""
        self._listeners.pop(channel_id, None)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close the session (a CLOSE goes out) and stop the timer."""
        self.session.close(code, reason, now=self.now())
        self.flush()

    async def wait_closed(self) -> None:
        """Return once the session has terminated."""
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        """Whether the session has terminated."""
        return self._closed.is_set()

    # -- outputs ------------------------------------------------------------------

    def flush(self) -> None:
        """Deliver events, send what is due and re-arm the timer. Call after any API call."""
        if self._flushing:
            return  # a listener called back into us; the outer loop picks it up
        self._flushing = True
        try:
            session = self.session
            while True:
                self._dispatch_events()
                datagrams = session.datagrams_to_send(now=self.now())
                for data, path in datagrams:
                    try:
                        self.transmit(data, path)
                    except OSError as exc:  # unreachable network, no route: like loss
                        log.debug("send to %s failed: %s", path, exc)
                if not datagrams and not self._has_events():
                    break
        finally:
            self._flushing = False
        self._arm()

    def _has_events(self) -> bool:
        event = self.session.next_event()
        if event is None:
            return False
        self._route(event)
        return True

    def _dispatch_events(self) -> None:
        while (event := self.session.next_event()) is not None:
            self._route(event)

    def _route(self, event: ev.Event) -> None:
        if isinstance(event, ev.SessionTerminated):
            self._closed.set()
            # Every open channel ends with the session: tell whoever splices them.
            for channel_id, channel_listener in list(self._listeners.items()):
                gone = ev.ChannelTerminated(
                    channel_id, TerminateCode.GENERAL_FAILURE, f"session closed: {event.reason}"
                )
                self._call(channel_listener, gone)
        listener = None
        if isinstance(event, _CHANNEL_EVENTS):
            listener = self._listeners.get(event.channel_id)
        target = listener or self.on_event
        if target is not None:
            self._call(target, event)

    @staticmethod
    def _call(target: Listener, event: ev.Event) -> None:
        try:
            target(event)
        except Exception:  # a broken listener must not kill the session
            log.exception("event handler failed for %s", type(event).__name__)

    def _arm(self) -> None:
        at = self.session.next_timer()
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        # The loop may wake a hair early; the session treats early calls as no-ops.
        self.session.handle_timer(now=max(self.now(), self.session.next_timer() or 0.0))
        self.flush()

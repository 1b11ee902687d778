"""Channels of the client session: a handle per channel, and how it joins a local socket.

:meth:`SessionManager.open_channel <resip_proxy.client.SessionManager.open_channel>`
returns a :class:`Channel`; ``await channel.wait_started(timeout)`` returns once the
server connected the target or raises :class:`ChannelFailed` with the TERMINATE code
(SOCKS5 reply codes, PROTOCOL.md §5.6); ``channel.splice(reader, writer)`` then pipes it
to a local socket without losing what arrived in between.
"""

from __future__ import annotations

import asyncio
import ipaddress
from ipaddress import IPv4Address, IPv6Address

from resip.aio.driver import SessionDriver
from resip.aio.streams import ChannelSplice, EarlyEvents
from resip.core import events as ev
from resip.core.codes import TerminateCode
from resip.core.errors import ResipError
from resip.core.wire import Proto

__all__ = ["Channel", "ChannelFailed", "Host", "target_host"]

Host = IPv4Address | IPv6Address | str


class ChannelFailed(ResipError):
    """A channel was refused or aborted; ``code`` is the TERMINATE code (PROTOCOL.md §5.6)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (code {code})")
        self.code = code
        self.reason = reason


def target_host(host: Host) -> Host:
    """IP literals as address objects (sent as addresses), anything else as a name."""
    if isinstance(host, str):
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return host
    return host


class Channel:
    """A channel opened by :meth:`SessionManager.open_channel`, bound to one session."""

    def __init__(
        self, driver: SessionDriver, channel_id: int, host: Host, port: int, proto: Proto
    ) -> None:
        self.driver = driver
        self.id = channel_id
        self.host = host
        self.port = port
        self.proto = proto
        # What arrives before splice(): ChannelSplice takes it over from here.
        self._early = EarlyEvents()
        self._outcome: asyncio.Future[ev.ChannelTerminated | None] = (
            asyncio.get_running_loop().create_future()
        )

    def __repr__(self) -> str:
        return f"Channel({self.id}, {self.proto.name} {self.host}:{self.port})"

    def _on_event(self, event: ev.Event) -> None:
        # Until splice() takes over, keep everything: a STARTED and the first data
        # (an SSH banner, say) often arrive in the same packet.
        if isinstance(event, ev.ChannelStarted):
            if not self._outcome.done():
                self._outcome.set_result(None)
            return
        if isinstance(event, ev.ChannelTerminated) and not self._outcome.done():
            self._outcome.set_result(event)
            return
        self._early.on_event(event)

    async def wait_started(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the server connected the target; raise :class:`ChannelFailed` otherwise.

        A timeout aborts the channel and raises ``ChannelFailed(6, ...)``.
        """
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except TimeoutError:
            self.reset(TerminateCode.TIMED_OUT, "timed out waiting for the server")
            raise ChannelFailed(
                TerminateCode.TIMED_OUT, f"no answer from the server within {timeout:g} s"
            ) from None
        if outcome is not None:
            self.driver.unlisten(self.id)
            raise ChannelFailed(outcome.code, outcome.reason or "refused by the server")

    def splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ChannelSplice:
        """A :class:`ChannelSplice` to ``(reader, writer)``; call its ``run()``."""
        return ChannelSplice(self.driver, self.id, reader, writer, early=self._early)

    def reset(self, code: int = TerminateCode.NORMAL, reason: str = "") -> None:
        """Abort the channel (TERMINATE) and stop listening to it."""
        self.driver.unlisten(self.id)
        session = self.driver.session
        if not session.terminated:
            session.reset_channel(self.id, code, reason, now=self.driver.now())
            self.driver.flush()

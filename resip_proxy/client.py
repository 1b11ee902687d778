"""The client's session manager: one session kept alive across outages, blocks and restarts.

Contract
--------
:class:`SessionManager` owns the one client :class:`~resip.core.session.Session` of a proxy
and the :class:`~resip.aio.driver.SessionDriver` that runs it:

- :meth:`SessionManager.start` asks the server's HTTPS session API for a session
  (``POST /v1/sessions``, PROTOCOL.md §7) over a connection pinned to the server
  certificate's SHA-256 (:mod:`resip_proxy.session_api`). Without a pinned fingerprint
  it trusts the first certificate it sees, hands its fingerprint to ``on_pin`` (the
  config stores it) and enforces it from then on. Every failure (unreachable, wrong
  key, pin mismatch, malformed answer) is a :class:`ClientError` with a one-line
  message; the API key and the session secret are never logged.
- Transports: UDP first, the TCP fallback (PROTOCOL.md §8) when UDP gets no answer,
  back to UDP when it answers again (docs/ARCHITECTURE.md §8). The choice is made by
  the sans-IO :class:`~resip_proxy.transport_policy.TransportPolicy`; this module is
  its asyncio adapter: it feeds the policy what happens (authenticated packets, socket
  and connection events, timers with the session's statistics) and executes what the
  policy asks for (:mod:`resip_proxy.transports` holds the sockets).
- Server restart: when neither transport gets an answer, ``GET /v1/info`` tells
  whether the server restarted (``server_start`` changed). Then the session is gone:
  every open channel is terminated (applications see their sockets closed) and a new
  session is created. A session that ends for any other reason is replaced too.
- Channels: :meth:`SessionManager.open_channel` returns a :class:`Channel` handle
  (:mod:`resip_proxy.channels`).

:meth:`SessionManager.from_credentials` builds a manager from session credentials
directly (no API): used by tests and embedders that create sessions themselves; such
a manager cannot re-create its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import replace
from typing import Any, Literal

from resip.aio.driver import Listener, SessionDriver
from resip.core import events as ev
from resip.core.codes import CloseCode, TerminateCode
from resip.core.config import SessionConfig
from resip.core.crypto import HeaderProtection
from resip.core.enrol import Enrolment
from resip.core.errors import ResipError
from resip.core.paths import UdpPath
from resip.core.session import Role, Session, State
from resip.core.wire import Proto

from .channels import Channel, ChannelFailed, Host, target_host
from .session_api import (
    ClientError,
    SessionApi,
    SessionCredentials,
    describe_error,
    fetch_fingerprint,
)
from .transport_events import (
    Action,
    AskServerStart,
    AuthenticatedPacket,
    Close,
    CloseTcp,
    ConnectTcp,
    Input,
    Notice,
    OpenUdpSocket,
    Outage,
    PolicyConfig,
    Probe,
    RecreateFailed,
    RecreateSession,
    ServerRestartAnswer,
    SessionEnded,
    SessionStarted,
    SessionView,
    Timer,
    UdpSocketDead,
    UsePath,
    Via,
)
from .transport_policy import TransportPolicy
from .transports import ServerLinks

__all__ = [
    "Channel",
    "ChannelFailed",
    "ClientError",
    "SessionCredentials",
    "SessionManager",
    "fetch_fingerprint",
    "target_host",
]

log = logging.getLogger(__name__)

Transport = Literal["udp", "tcp"]

_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def session_view(session: Session, now: float) -> SessionView:
    """The statistics the policy's silence rules read, taken from ``session``."""
    stats = session.stats(now=now)
    return SessionView(
        srtt=stats.rtt_smoothed,
        # Loss either way counts: a download's client sends little of its own.
        loss=max(stats.loss_estimate, stats.receive_loss),
        bytes_in_flight=stats.bytes_in_flight,
        last_activity=max((c.last_activity for c in stats.channels), default=-math.inf),
        in_outage=session.state is State.OUTAGE,
    )


class SessionManager:
    """One client session to one server, kept alive across outages, blocks and restarts."""

    def __init__(
        self,
        enrolment: Enrolment,
        *,
        on_pin: Callable[[str], None] | None = None,
        session_config: SessionConfig | None = None,
        udp_timeout: float = 3.0,
        udp_retry: float = 30.0,
    ) -> None:
        """``on_pin(fingerprint)`` is called when a certificate is pinned on first use."""
        self.enrolment = enrolment
        self.fingerprint = enrolment.fingerprint
        self._on_pin = on_pin
        self._base_config = session_config or SessionConfig()
        self.udp_timeout = udp_timeout
        self.udp_retry = udp_retry
        self._api: SessionApi | None = None
        self._credentials: SessionCredentials | None = None
        self._driver: SessionDriver | None = None
        self._links: ServerLinks | None = None
        self._policy: TransportPolicy | None = None
        #: The policy's actions, executed in order by one worker task.
        self._actions: deque[Action] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closing = False
        #: The transport of the packet being processed (for the events it may raise).
        self._receiving_via = Via.UDP
        self._connected = asyncio.Event()
        self._transport: Transport = "udp"
        self._transport_changed = asyncio.Event()
        #: Sessions created so far (1 after start; grows when the server lost ours).
        self.generation = 0
        #: Recent notable happenings for status views (``resip_proxy.control``):
        #: ``(time.monotonic(), kind, text)``, oldest first, at most 200.
        self.event_log: deque[tuple[float, str, str]] = deque(maxlen=200)

    @classmethod
    def from_credentials(
        cls,
        credentials: SessionCredentials,
        server_host: str,
        *,
        udp_timeout: float = 3.0,
        udp_retry: float = 30.0,
    ) -> SessionManager:
        """A manager for a session created elsewhere; it cannot re-create it (no API)."""
        manager = cls(
            Enrolment(
                api_key="unused",
                host=server_host,
                udp_port=credentials.udp_port,
                tcp_port=credentials.tcp_port,
            ),
            udp_timeout=udp_timeout,
            udp_retry=udp_retry,
        )
        manager._credentials = credentials
        return manager

    # -- properties ---------------------------------------------------------------------

    @property
    def driver(self) -> SessionDriver:
        """The driver of the current session (raises if not started)."""
        if self._driver is None:
            raise ClientError("the session manager is not started")
        return self._driver

    @property
    def session(self) -> Session:
        """The current session."""
        return self.driver.session

    @property
    def transport(self) -> Transport:
        """The transport packets currently go over: ``"udp"`` or ``"tcp"`` (fallback)."""
        return self._transport

    def note(self, kind: str, text: str) -> None:
        """Append one entry to :attr:`event_log` (status views show it; never secrets)."""
        log.debug("%s: %s", kind, text)
        self.event_log.append((time.monotonic(), kind, text))

    @property
    def local_address(self) -> str | None:
        """``host:port`` our packets currently leave from, or None when not connected."""
        links = self._links
        if links is None:
            return None
        name = links.sockname(Via.TCP) if self._transport == "tcp" else None
        name = name or links.sockname(Via.UDP)
        if name is None:
            return None
        host, port = name
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def wait_transport(self, transport: Transport, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether the manager is on ``transport`` within ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._transport != transport:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._transport_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._transport_changed.wait(), remaining)
        return True

    @property
    def udp_path(self) -> UdpPath:
        """The server's UDP address (the session's path when on UDP)."""
        assert self._links is not None
        return self._links.udp_path

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the session (via the API unless built from credentials) and start it.

        Raises :class:`ClientError`. Returns without waiting for the first packet.
        """
        if self._credentials is None:
            if self.fingerprint is None:
                fingerprint = await fetch_fingerprint(self.enrolment.host, self.enrolment.api_port)
                log.warning("trusting the server certificate on first use: SHA-256 %s", fingerprint)
                self.fingerprint = fingerprint
                if self._on_pin is not None:
                    self._on_pin(fingerprint)
            self._api = SessionApi(self.enrolment, self.fingerprint)
            self._credentials = await self._api.create_session()
        creds = self._credentials
        server_ip = await self._resolve(self.enrolment.host, creds.udp_port)
        self._links = ServerLinks(
            server_ip, creds.udp_port, creds.tcp_port, on_packet=self._received, report=self._feed
        )
        try:
            await self._links.open_udp()
        except OSError as exc:
            raise ClientError(
                f"cannot open a UDP socket to the server: {describe_error(exc)}"
            ) from None
        config = PolicyConfig(self.udp_timeout, self.udp_retry, can_recreate=self._api is not None)
        self._policy = TransportPolicy(config)
        self._worker = asyncio.create_task(self._run_actions(), name="resip-transport")
        self._install(self._credentials)

    async def close(self) -> None:
        """Close the session (the server is told) and every socket."""
        self._closing = True
        loop = asyncio.get_running_loop()
        self._feed(Close(loop.time()))
        for task in [t for t in (self._worker, *self._tasks) if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._timer is not None:
            self._timer.cancel()
        if self._driver is not None and not self._driver.closed:
            self._driver.close(CloseCode.NORMAL, "client exiting")
        if self._links is not None:
            await self._links.close()

    async def wait_connected(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether the current session hears from the server within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- channels -----------------------------------------------------------------------

    def open_channel(
        self,
        host: Host,
        port: int,
        proto: Proto = Proto.TCP,
        *,
        listener: Listener | None = None,
    ) -> Channel:
        """Open a channel to ``host:port`` on the current session.

        Without ``listener`` the channel's events are kept for
        :meth:`Channel.wait_started` and :meth:`Channel.splice`; with one they go
        straight to it (datagram channels). Raises :class:`ChannelFailed` when there is
        no live session or the session refuses.
        """
        driver = self._driver
        if driver is None or driver.closed or self._closing:
            raise ChannelFailed(TerminateCode.GENERAL_FAILURE, "no session to the server right now")
        host = target_host(host)
        try:
            channel_id = driver.session.open_channel(host, port, proto=proto, now=driver.now())
        except (ResipError, ValueError) as exc:
            raise ChannelFailed(
                TerminateCode.GENERAL_FAILURE, f"cannot open a channel: {exc}"
            ) from None
        channel = Channel(driver, channel_id, host, port, proto)
        driver.listen(channel_id, listener or channel._on_event)
        driver.flush()
        return channel

    # -- the session ----------------------------------------------------------------------

    @staticmethod
    async def _resolve(host: str, port: int) -> str:
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ClientError(f"cannot resolve {host!r}: {describe_error(exc)}") from None
        if not infos:
            raise ClientError(f"cannot resolve {host!r}")
        return str(infos[0][4][0])

    def _install(self, credentials: SessionCredentials) -> None:
        loop = asyncio.get_running_loop()
        config = self._base_config
        try:
            if credentials.packet_size != config.packet_size or credentials.idle_timeout:
                config = replace(
                    config,
                    packet_size=credentials.packet_size,
                    idle_timeout=credentials.idle_timeout or config.idle_timeout,
                )
        except ResipError as exc:
            raise ClientError(f"session parameters rejected: {exc}") from None
        self._credentials = credentials
        session = Session(
            config,
            role=Role.CLIENT,
            session_id=credentials.session_id,
            session_secret=credentials.secret,
            hp=HeaderProtection({credentials.hp_key_id: credentials.hp_key}, credentials.hp_key_id),
            suite=credentials.suite,
            now=loop.time(),
            peer=self.udp_path,
        )
        self.generation += 1
        self._connected.clear()
        self._driver = SessionDriver(session, self._transmit, on_event=self._on_event, loop=loop)
        self.note("session", f"session {credentials.session_id.hex()} created")
        log.info(
            "session %s created (server %s, UDP %d, TCP %d)",
            credentials.session_id.hex(),
            self.enrolment.host,
            credentials.udp_port,
            credentials.tcp_port,
        )
        self._driver.flush()
        self._feed(SessionStarted(loop.time()))
        if self._links is not None and self._links.udp is None:
            self._feed(UdpSocketDead(loop.time()))  # the policy opens one

    def _transmit(self, data: bytes, path: Hashable) -> None:
        if self._links is not None:
            self._links.send(data, path)

    def _received(self, via: Via, data: bytes) -> None:
        driver, links = self._driver, self._links
        if driver is None or driver.closed or links is None:
            return
        path = links.path(via)
        self._receiving_via = via  # for the events this packet may raise
        if self._authenticated(driver, data, path):
            self._feed(AuthenticatedPacket(driver.now(), via))

    @staticmethod
    def _authenticated(driver: SessionDriver, data: bytes, path: Hashable) -> bool:
        """Feed one datagram to the session; whether it authenticated (AuthenticatedPacket).

        Flushes afterwards, as ``SessionDriver.datagram_received`` does.
        """
        authenticated = driver.session.receive_datagram(data, path, now=driver.now())
        driver.flush()
        return authenticated

    def _on_event(self, event: ev.Event) -> None:
        match event:
            case ev.SessionConnected():
                via = self._receiving_via.upper()
                log.info("connected to the server over %s", via)
                self.note("connected", f"connected over {via}")
                self._connected.set()
            case ev.OutageStarted():
                log.warning("no answer from the server: outage")
                self.note("outage", "no answer from the server: outage began")
                self._feed(Outage(self.driver.now()))
            case ev.OutageEnded(duration):
                log.info("the server answers again after %.1f s", duration)
                self.note("outage-ended", f"outage ended after {duration:.1f} s")
            case ev.KeyUpdated(epoch):
                self.note("key-update", f"send key moved to epoch {epoch}")
            case ev.SessionTerminated(code, reason, by_peer):
                self.note("session-ended", f"session ended (code {code}): {reason}")
                if not self._closing:
                    log.warning(
                        "session ended (code %d%s): %s", code, ", by the server" if by_peer else "",
                        reason,
                    )  # fmt: skip
                self._connected.clear()
                self._feed(SessionEnded(asyncio.get_running_loop().time()))
            case ev.ChannelData(channel_id, data):
                # Nobody listens to this channel any more: free its window.
                self.session.consume(channel_id, len(data))
            case _:
                pass

    # -- the policy's adapter ------------------------------------------------------------------

    def _feed(self, event: Input) -> None:
        """Give the policy one input; queue its actions and re-arm its timer."""
        policy = self._policy
        if policy is None:
            return
        actions = policy.handle(event)
        if actions:
            self._actions.extend(actions)
            self._wake.set()
        deadline = policy.next_deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            loop = asyncio.get_running_loop()
            self._timer = None if deadline is None else loop.call_at(deadline, self._on_timer)
        transport: Transport = "tcp" if policy.transport is Via.TCP else "udp"
        if transport != self._transport:
            self._transport = transport
            self._transport_changed.set()
            if transport == "tcp":
                port = self._links.tcp_port if self._links else 0
                self.note("fallback", f"switched to the TCP fallback (port {port})")
            else:
                self.note("transport", "back on UDP")

    def _on_timer(self) -> None:
        at, self._timer_at, self._timer = self._timer_at, None, None
        # The loop may wake a hair early; the deadline is what the policy planned for.
        now = max(asyncio.get_running_loop().time(), at or 0.0)
        self._feed(Timer(now, self._view(now)))

    def _view(self, now: float) -> SessionView:
        driver = self._driver
        if driver is None or driver.closed:
            return SessionView()
        return session_view(driver.session, now)

    async def _run_actions(self) -> None:
        """Execute the policy's actions in order (opening a socket must precede using it)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._actions:
                action = self._actions.popleft()
                try:
                    await self._execute(action)
                except Exception:  # a bug here must not stop the proxy from healing
                    log.exception("transport action %s failed", action)

    async def _execute(self, action: Action) -> None:
        links = self._links
        assert links is not None
        match action:
            case OpenUdpSocket():
                if await links.reopen_udp():
                    self.note("udp-reopened", "new UDP socket (address change or silence)")
            case ConnectTcp(attempt):
                links.connect_tcp(attempt)
            case CloseTcp(attempt):
                links.close_tcp(attempt)
            case UsePath(via) | Probe(via):
                self._use(via)  # set_peer sends a keep-alive at once: that is the probe
            case AskServerStart():
                self._spawn(self._ask_server_start())
            case RecreateSession():
                self._spawn(self._recreate())
            case Notice(level, message):
                log.log(_LOG_LEVELS[level], "%s", message)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _use(self, via: Via) -> None:
        driver, links = self._driver, self._links
        path = links.path(via) if links is not None else None
        if driver is None or driver.closed or path is None:
            return
        driver.session.set_peer(path)
        driver.flush()

    # -- the session API ----------------------------------------------------------------------

    async def _ask_server_start(self) -> None:
        self._feed(ServerRestartAnswer(self._now(), await self._server_restarted()))

    async def _server_restarted(self) -> bool:
        api, creds = self._api, self._credentials
        if api is None or creds is None:
            return False
        try:
            start = await api.server_start()
        except ClientError as exc:
            log.info("cannot ask the server whether it restarted: %s", exc)
            return False
        return start != creds.server_start

    async def _recreate(self) -> None:
        """Replace the session: close the old one (its channels end), create a new one."""
        assert self._api is not None
        old = self._driver
        if old is not None and not old.closed:
            # Ends every channel, so their splices close.
            old.close(CloseCode.REPLACED, "session replaced")
        try:
            credentials = await self._api.create_session()
        except ClientError as exc:
            log.warning("cannot create a new session: %s", exc)
            self._feed(RecreateFailed(self._now()))
            return
        links = self._links
        assert links is not None
        stale = links.udp is None or credentials.udp_port != links.udp_port
        links.udp_port, links.tcp_port = credentials.udp_port, credentials.tcp_port
        if stale:
            await links.reopen_udp()  # a socket connected to the new port
        try:
            self._install(credentials)
        except ClientError as exc:
            log.warning("cannot start the new session: %s", exc)
            self._feed(RecreateFailed(self._now()))

"""The client's session manager: session API, certificate pinning, transports, re-establishment.

Contract
--------
:class:`SessionManager` owns the one client :class:`~resip.session.Session` of a proxy
and the :class:`~resip.aio.driver.SessionDriver` that runs it:

- :meth:`SessionManager.start` asks the server's HTTPS session API for a session
  (``POST /v1/sessions``, PROTOCOL.md §7) over a connection pinned to the server
  certificate's SHA-256. Without a pinned fingerprint it trusts the first certificate
  it sees, hands its fingerprint to ``on_pin`` (the config stores it) and enforces it
  from then on. Every failure (unreachable, wrong key, pin mismatch, malformed answer)
  is a :class:`ClientError` with a one-line message; the API key and the session
  secret are never logged.
- Transports: UDP first. If nothing authenticated arrives over UDP within
  ``udp_timeout`` (3 s) of starting, the manager opens the TCP fallback (PROTOCOL.md
  §8) and points the session there; while on TCP it retries UDP every ``udp_retry``
  (30 s) and keeps whichever answers. Later trouble (silence while data waits, an
  outage, a socket whose address vanished) is met with a probe on the same socket,
  then a fresh UDP socket racing a new TCP connection (docs/ARCHITECTURE.md §8).
- Server restart: when neither transport gets an answer, ``GET /v1/info`` tells
  whether the server restarted (``server_start`` changed). Then the session is gone:
  every open channel is terminated (applications see their sockets closed) and a new
  session is created. A session that ends for any other reason is replaced too.
- Channels: :meth:`SessionManager.open_channel` returns a :class:`Channel` handle;
  ``await channel.wait_started(timeout)`` returns once the server connected the
  target or raises :class:`ChannelFailed` with the TERMINATE code (SOCKS5 reply
  codes, PROTOCOL.md §5.6); ``channel.splice(reader, writer)`` then pipes it to a
  local socket without losing data that arrived in between.

:meth:`SessionManager.from_credentials` builds a manager from session credentials
directly (no API): used by tests and embedders that create sessions themselves; such
a manager cannot re-create its session.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import logging
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv6Address
from typing import Any, Literal

import aiohttp

from resip import events as ev
from resip.aio.driver import Listener, SessionDriver
from resip.aio.streams import ChannelSplice
from resip.aio.udp import enlarge_buffers
from resip.config import SessionConfig
from resip.crypto import HeaderProtection, Suite
from resip.enrol import Enrolment
from resip.errors import ResipError, WireError
from resip.framing import FrameDecoder, encode_frame
from resip.session import Role, Session, State
from resip.wire import Proto

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

Host = IPv4Address | IPv6Address | str
Transport = Literal["udp", "tcp"]

#: Bytes queued on the TCP fallback socket beyond which packets are dropped (like
#: loss on UDP): the session retransmits, and the socket buffer never grows unbounded.
_TCP_BUFFER_LIMIT = 1 << 20
#: Timeout of one session API request.
_API_TIMEOUT = 15.0
#: Longest wait between attempts to re-create a session the server lost.
_RECREATE_BACKOFF_CAP = 30.0
#: UDP silent this long while data flows: look for another way (seconds). With a
#: 0.75-second probe and a fresh socket racing TCP this moves a blocked session to the
#: fallback in about 2.5 s, inside the 5 s promise even on a loaded machine.
_UDP_SILENCE = 1.5
#: How long a probe (same socket, then a fresh one) gets to be answered, at least.
_UDP_REOPEN_WAIT = 0.75
#: The TCP fallback silent this long while data waits: its connection is probably
#: dead (our address changed); TCP's own retransmissions may take this long on a bad link.
_TCP_SILENCE = 5.0
#: How long a TCP fallback connection may take to be established.
_TCP_CONNECT_TIMEOUT = 10.0
#: Send errors that mean the UDP socket itself is unusable (its source address vanished).
_DEAD_SOCKET_ERRNOS = frozenset({errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EINVAL})
#: A channel active this recently makes UDP silence suspicious.
_UDP_BUSY_WINDOW = 5.0


class ClientError(ResipError):
    """The session could not be set up; the message is one line, fit for users."""


class ChannelFailed(ResipError):
    """A channel was refused or aborted; ``code`` is the TERMINATE code (PROTOCOL.md §5.6)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (code {code})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """What ``POST /v1/sessions`` returns (PROTOCOL.md §7), decoded."""

    session_id: bytes
    secret: bytes = field(repr=False)
    suite: Suite
    hp_key_id: int
    hp_key: bytes = field(repr=False)
    packet_size: int
    udp_port: int
    tcp_port: int
    server_start: str
    idle_timeout: float | None = None

    @classmethod
    def from_json(cls, doc: object) -> SessionCredentials:
        """Decode and validate the API's JSON; raises :class:`ClientError` saying what is wrong."""
        if not isinstance(doc, dict):
            raise ClientError("session API answered with something other than a JSON object")

        def get(key: str, kind: type[Any]) -> Any:
            value = doc.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ClientError(f"session API answer has a missing or malformed {key!r}")
            return value

        def hex_bytes(key: str, size: int) -> bytes:
            try:
                raw = bytes.fromhex(get(key, str))
            except ValueError:
                raise ClientError(f"session API answer has a malformed {key!r}") from None
            if len(raw) != size:
                raise ClientError(f"session API answer: {key!r} must be {size} bytes")
            return raw

        def port(key: str) -> int:
            value = int(get(key, int))
            if not 1 <= value <= 65535:
                raise ClientError(f"session API answer: {key!r} out of range")
            return value

        try:
            suite = Suite(get("suite", int))
        except ValueError:
            raise ClientError("session API offers an unknown cipher suite") from None
        hp_key_id = int(get("hp_key_id", int))
        if not 0 <= hp_key_id <= 15:
            raise ClientError("session API answer: 'hp_key_id' out of range")
        packet_size = int(get("packet_size", int))
        if not 256 <= packet_size <= 65535:
            raise ClientError("session API answer: 'packet_size' out of range")
        start = doc.get("server_start")
        if start is None or isinstance(start, dict | list):
            raise ClientError("session API answer has a missing or malformed 'server_start'")
        idle = doc.get("idle_timeout")
        if idle is not None and (not isinstance(idle, int | float) or idle <= 0):
            raise ClientError("session API answer has a malformed 'idle_timeout'")
        return cls(
            session_id=hex_bytes("session_id", 8),
            secret=hex_bytes("secret", 32),
            suite=suite,
            hp_key_id=hp_key_id,
            hp_key=hex_bytes("hp_key", 32),
            packet_size=packet_size,
            udp_port=port("udp_port"),
            tcp_port=port("tcp_port"),
            server_start=str(start),
            idle_timeout=None if idle is None else float(idle),
        )


def target_host(host: Host) -> Host:
    """IP literals as address objects (sent as addresses), anything else as a name."""
    if isinstance(host, str):
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            return host
    return host


# -- session API ---------------------------------------------------------------------------


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def fetch_fingerprint(host: str, port: int, *, timeout: float = 10.0) -> str:  # noqa: ASYNC109
    """SHA-256 (hex) of the certificate ``host:port`` presents: trust on first use.

    The handshake is deliberately unverified: its only purpose is to learn the
    certificate that every later connection is pinned to. Raises :class:`ClientError`.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context), timeout
        )
    except (OSError, TimeoutError, ssl.SSLError) as exc:
        raise ClientError(
            f"cannot reach the session API at https://{_url_host(host)}:{port}: {_describe(exc)}"
        ) from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise ClientError(f"https://{_url_host(host)}:{port} presented no certificate")
    return hashlib.sha256(der).hexdigest()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or str(exc.os_error)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _SessionApi:
    """The HTTPS session API of one server, pinned to one certificate fingerprint."""

    def __init__(self, enrolment: Enrolment, fingerprint: str) -> None:
        self._enrolment = enrolment
        self._fingerprint = fingerprint
        self._base = f"https://{_url_host(enrolment.host)}:{enrolment.api_port}"

    async def _request(self, method: str, path: str, *, auth: bool) -> object:
        headers = {"Authorization": f"Bearer {self._enrolment.api_key}"} if auth else {}
        pin = aiohttp.Fingerprint(bytes.fromhex(self._fingerprint))
        url = self._base + path
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=_API_TIMEOUT)) as http,
                http.request(method, url, headers=headers, ssl=pin) as resp,
            ):
                if resp.status in (401, 403):
                    raise ClientError(
                        f"the server refused the API key (HTTP {resp.status}): "
                        "check the enrolment URI"
                    )
                if resp.status != 200:
                    text = (await resp.text(errors="replace"))[:200].strip()
                    first_line = text.splitlines()[0] if text else ""
                    raise ClientError(
                        f"session API {method} {path} failed with HTTP {resp.status}"
                        + (f": {first_line}" if first_line else "")
                    )
                try:
                    return await resp.json(content_type=None)
                except ValueError:
                    raise ClientError(f"session API {path} answered with malformed JSON") from None
        except aiohttp.ServerFingerprintMismatch as exc:
            raise ClientError(
                f"server certificate fingerprint mismatch: pinned {exc.expected.hex()}, "
                f"server presented {exc.got.hex()} (re-enrol if the server was reinstalled)"
            ) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ClientError(
                f"cannot reach the session API at {self._base}: {_describe(exc)}"
            ) from None

    async def create_session(self) -> SessionCredentials:
        """``POST /v1/sessions``."""
        return SessionCredentials.from_json(await self._request("POST", "/v1/sessions", auth=True))

    async def server_start(self) -> str:
        """``GET /v1/info``: the token that changes when the server restarts."""
        doc = await self._request("GET", "/v1/info", auth=True)
        if not isinstance(doc, dict) or doc.get("server_start") is None:
            raise ClientError("session API /v1/info answer has no 'server_start'")
        return str(doc["server_start"])


# -- channels ------------------------------------------------------------------------------


class _Splice(ChannelSplice):
    """A splice that first receives the channel events that arrived before it existed."""

    def replay(self, events: Iterable[ev.Event]) -> None:
        for event in events:
            self._on_event(event)


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
        self._early: list[ev.Event] = []
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
        self._early.append(event)

    async def wait_started(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return once the server connected the target; raise :class:`ChannelFailed` otherwise.

        A timeout aborts the channel and raises ``ChannelFailed(6, ...)``.
        """
        try:
            outcome = await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except TimeoutError:
            self.reset(6, "timed out waiting for the server")
            raise ChannelFailed(6, f"no answer from the server within {timeout:g} s") from None
        if outcome is not None:
            self.driver.unlisten(self.id)
            raise ChannelFailed(outcome.code, outcome.reason or "refused by the server")

    def splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ChannelSplice:
        """A :class:`ChannelSplice` to ``(reader, writer)``; call its ``run()``."""
        splice = _Splice(self.driver, self.id, reader, writer)
        early, self._early = self._early, []
        splice.replay(early)
        return splice

    def reset(self, code: int = 0, reason: str = "") -> None:
        """Abort the channel (TERMINATE) and stop listening to it."""
        self.driver.unlisten(self.id)
        session = self.driver.session
        if not session.terminated:
            session.reset_channel(self.id, code, reason, now=self.driver.now())
            self.driver.flush()


# -- the manager ---------------------------------------------------------------------------


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._manager._received(data, "udp")

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the session treats silence as loss. But a
        # socket that cannot even send (its address is gone) needs replacing.
        log.debug("UDP error: %s", exc)
        if isinstance(exc, OSError) and exc.errno in _DEAD_SOCKET_ERRNOS:
            self._manager._on_udp_dead()


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
        self._api: _SessionApi | None = None
        self._credentials: SessionCredentials | None = None
        self._server_ip: str | None = None
        self._driver: SessionDriver | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_writer: asyncio.StreamWriter | None = None
        self._tcp_task: asyncio.Task[None] | None = None
        self._tcp_n = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._heard_at: dict[Transport, float | None] = {"udp": None, "tcp": None}
        #: The UDP socket reported it cannot send at all (see _UdpProtocol.error_received).
        self._udp_failed = False
        #: The transport of the packet being processed.
        self._receiving_via: Transport = "udp"
        #: While on the TCP fallback: when to try UDP again (event loop time).
        self._udp_retry_at = 0.0
        self._heard = asyncio.Event()
        self._trouble = asyncio.Event()
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

    @transport.setter
    def transport(self, value: Transport) -> None:
        if value != self._transport:
            self._transport = value
            self._transport_changed.set()
            self.note(
                "fallback" if value == "tcp" else "transport",
                "switched to the TCP fallback" if value == "tcp" else "back on UDP",
            )

    def _on_udp_dead(self) -> None:
        """The UDP socket cannot send (its address is gone): wake whoever waits."""
        self._udp_failed = True
        if self.transport == "udp":
            self._trouble.set()
        self._heard.set()

    def note(self, kind: str, text: str) -> None:
        """Append one entry to :attr:`event_log` (status views show it; never secrets)."""
        log.debug("%s: %s", kind, text)
        self.event_log.append((time.monotonic(), kind, text))

    @property
    def local_address(self) -> str | None:
        """``host:port`` our packets currently leave from, or None when not connected."""
        transport: asyncio.BaseTransport | None = (
            self._tcp_writer.transport
            if self._transport == "tcp" and self._tcp_writer is not None
            else self._udp
        )
        name = transport.get_extra_info("sockname") if transport is not None else None
        if not isinstance(name, tuple) or len(name) < 2:
            return None
        host = str(name[0])
        return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"

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
    def udp_path(self) -> tuple[str, int]:
        """The server's UDP address (the session's path when on UDP)."""
        assert self._server_ip is not None
        assert self._credentials is not None
        return (self._server_ip, self._credentials.udp_port)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Create the session (via the API unless built from credentials) and start it.

        Raises :class:`ClientError`. Returns without waiting for the first packet.
        """
        loop = asyncio.get_running_loop()
        if self._credentials is None:
            if self.fingerprint is None:
                fingerprint = await fetch_fingerprint(self.enrolment.host, self.enrolment.api_port)
                log.warning("trusting the server certificate on first use: SHA-256 %s", fingerprint)
                self.fingerprint = fingerprint
                if self._on_pin is not None:
                    self._on_pin(fingerprint)
            self._api = _SessionApi(self.enrolment, self.fingerprint)
            self._credentials = await self._api.create_session()
        self._server_ip = await self._resolve(self.enrolment.host, self._credentials.udp_port)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), remote_addr=self.udp_path
            )
        except OSError as exc:
            raise ClientError(f"cannot open a UDP socket to the server: {_describe(exc)}") from None
        enlarge_buffers(transport)
        self._udp = transport
        self._install(self._credentials)
        self._supervisor = asyncio.create_task(self._supervise(), name="resip-session-supervisor")

    async def close(self) -> None:
        """Close the session (the server is told) and every socket."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._driver is not None and not self._driver.closed:
            self._driver.close(0, "client exiting")
        await self._close_tcp()
        if self._udp is not None:
            self._udp.close()
            self._udp = None

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
            raise ChannelFailed(1, "no session to the server right now")
        host = target_host(host)
        try:
            channel_id = driver.session.open_channel(host, port, proto=proto, now=driver.now())
        except (ResipError, ValueError) as exc:
            raise ChannelFailed(1, f"cannot open a channel: {exc}") from None
        channel = Channel(driver, channel_id, host, port, proto)
        driver.listen(channel_id, listener or channel._on_event)
        driver.flush()
        return channel

    # -- internals: session ---------------------------------------------------------------

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
            raise ClientError(f"cannot resolve {host!r}: {_describe(exc)}") from None
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
        self._credentials = credentials
        self.generation += 1
        self.transport = "udp"
        self._heard_at = {"udp": None, "tcp": None}
        self._connected.clear()
        self._trouble.clear()
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

    def _transmit(self, data: bytes, path: Hashable) -> None:
        if isinstance(path, tuple) and path[:1] == ("tcp",):
            writer = self._tcp_writer
            if writer is None or path[1] != self._tcp_n or writer.is_closing():
                return  # a connection that is gone: like loss
            if writer.transport.get_write_buffer_size() > _TCP_BUFFER_LIMIT:
                return
            writer.write(encode_frame(data))
        elif self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(data)

    def _received(self, data: bytes, via: Transport) -> None:
        driver = self._driver
        if driver is None or driver.closed:
            return
        session = driver.session
        before = session.packets_received
        path: Hashable = ("tcp", self._tcp_n) if via == "tcp" else self.udp_path
        self._receiving_via = via  # for the events this packet may raise
        driver.datagram_received(data, path)
        if session.packets_received != before:
            self._heard_at[via] = driver.now()
            self._heard.set()

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
                self._trouble.set()
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
                self._trouble.set()
            case ev.ChannelData(channel_id, data):
                # Nobody listens to this channel any more: free its window.
                self.session.consume(channel_id, len(data))
            case _:
                pass

    # -- internals: transports and recovery ------------------------------------------------

    def _use(self, path: Hashable) -> None:
        driver = self._driver
        if driver is None or driver.closed:
            return
        driver.session.set_peer(path)
        driver.flush()

    async def _wait_heard(
        self,
        via: Transport,
        after: float,
        timeout: float,  # noqa: ASYNC109
        *,
        until_udp_dead: bool = False,
    ) -> bool:
        """Whether an authenticated packet arrives over ``via`` (at or after ``after``).

        With ``until_udp_dead`` the wait also ends (False) once the UDP socket cannot send.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            at = self._heard_at[via]
            if at is not None and at >= after:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or self._driver is None or self._driver.closed:
                return False
            if until_udp_dead and self._udp_failed:
                return False
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._heard.wait(), remaining)

    def _in_trouble(self) -> float | None:
        """None when in trouble; otherwise how long until it is worth looking again."""
        driver = self._driver
        if driver is None or driver.closed or driver.session.state is State.OUTAGE:
            return None
        if self.transport == "udp" and self._udp_failed:
            return None
        return self._silent_in(driver)

    def _silent_in(self, driver: SessionDriver) -> float | None:
        """Seconds until the transport counts as silent while data waits (None: it does).

        The session only declares an outage after 10 s of silence (a lossy link has
        quiet spells); a blocked UDP port, or a TCP connection whose local address
        vanished (the laptop changed networks; TCP would retry for minutes), should be
        left sooner than that.
        """
        heard = self._heard_at.get(self.transport)
        if heard is None:
            return 1.0
        now = driver.now()
        stats = driver.session.stats(now=now)
        if self.transport == "udp":
            # On a very lossy link quiet spells are normal: stretch the patience with the
            # measured loss so 90 % loss over UDP is not mistaken for a blocked port; and
            # never judge faster than a few round trips (a slow or loaded path).
            # Loss either way counts: a download's client sends little of its own.
            loss = max(stats.loss_estimate, stats.receive_loss)
            patience = max(_UDP_SILENCE, 4 * stats.rtt_smoothed)
            patience = min(10.0, patience / (1 - min(loss, 0.85)))
        else:
            # TCP hides loss behind its own retransmissions, which back off: allow those.
            patience = max(_TCP_SILENCE, 8 * stats.rtt_smoothed)
        left = heard + patience - now
        if left > 0:
            return left
        if stats.bytes_in_flight > 0:
            return None
        # Receiving a download leaves nothing of ours in flight: a channel that was busy
        # a moment ago and went quiet counts too. Idle channels (an ssh session waiting
        # for a key press) do not, so they cause no probing.
        busy = max((c.last_activity for c in stats.channels), default=-1e9)
        return None if now - busy < _UDP_BUSY_WINDOW else 1.0

    async def _wait_trouble(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Wait for an outage, a lost TCP connection or the session's end; False on timeout."""
        self._trouble.clear()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while (recheck := self._in_trouble()) is not None:
            # Wake exactly when UDP would count as silent (at most a second apart): the
            # time to notice a blocked port adds straight to the time to fall back.
            wait = min(1.0, max(0.02, recheck))
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
            if wait <= 0:
                return False
            try:
                await asyncio.wait_for(self._trouble.wait(), wait)
            except TimeoutError:
                continue
            return True  # signalled: a lost TCP connection, the session's end, ...
        return True

    async def _supervise(self) -> None:
        try:
            await self._supervise_loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not die silently: the proxy would stop healing
            log.exception("session supervisor failed; the session is no longer maintained")

    async def _supervise_loop(self) -> None:
        backoff = 1.0
        while not self._closing:
            driver = self._driver
            if driver is None or driver.closed:
                if self._api is None:
                    return  # built from credentials: nothing to re-create the session with
                if await self._recreate():
                    backoff = 1.0
                else:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, _RECREATE_BACKOFF_CAP)
                continue
            if self.transport == "udp":
                await self._udp_phase()
            else:
                await self._tcp_phase()

    async def _udp_phase(self) -> None:
        loop = asyncio.get_running_loop()
        if self._udp_failed:
            await self._reopen_udp()  # it cannot send at all: its address is gone
        self._use(self.udp_path)
        if await self._wait_heard("udp", loop.time(), self.udp_timeout):
            await self._wait_trouble(None)  # healthy: until an outage or the end
            if self._driver is None or self._driver.closed:
                return
            log.debug("UDP silent or an outage: probing")
            if not self._udp_failed:
                # Maybe only our last packets were lost: ask on the same socket first
                # (set_peer sends a keep-alive).
                self._use(self.udp_path)
                if await self._wait_heard("udp", loop.time(), self._probe_wait()):
                    return
        # Whatever answers from here on (UDP coming back by itself included) ends the wait.
        attempts = loop.time()
        if self._heard_at["udp"] is not None or self._udp_failed:
            # UDP worked once: our address may have changed (Wi-Fi to LTE, an address
            # removed), and a connected socket keeps its old source. A fresh socket races
            # a TCP connection.
            if await self._fresh_udp_or_tcp():
                return
        elif await self._try_tcp(asyncio.create_task(self._connect_tcp())):
            return
        self._use(self.udp_path)
        if await self._server_restarted():
            await self._recreate()
            return
        # Nothing answers: the session keeps probing on its own (capped backoff);
        # look again after a while, or as soon as something changes.
        log.debug("neither UDP nor TCP answers; waiting")
        await self._wait_heard("udp", attempts, self.udp_retry, until_udp_dead=True)

    async def _fresh_udp_or_tcp(self) -> bool:
        """A fresh UDP socket against a new TCP connection: True once either carries us.

        UDP wins if it answers within a few round trips; TCP only once it is connected
        and UDP has had three round trips (0.3 s at least), so a working UDP path is not
        given up for a TCP handshake that merely finished first.
        """
        loop = asyncio.get_running_loop()
        await self._reopen_udp()
        started = loop.time()
        probe_wait = self._probe_wait()
        connecting = asyncio.create_task(self._connect_tcp())
        try:
            heard = await self._wait_heard_or(connecting, started, probe_wait)
            if not heard:
                # TCP is up (or failed): UDP keeps three round trips (or its whole probe).
                tcp_up = connecting.done() and connecting.result() is not None
                budget = min(probe_wait, max(0.3, 3 * self._srtt())) if tcp_up else probe_wait
                left = budget - (loop.time() - started)
                heard = left > 0 and await self._wait_heard("udp", started, left)
            if not heard and not connecting.done():
                # TCP still connecting (its SYNs may be lost too): take whichever comes.
                heard = await self._wait_heard_or(connecting, started, _TCP_CONNECT_TIMEOUT)
            if heard:
                await self._discard(connecting)
                return True
            return await self._try_tcp(connecting)
        finally:
            connecting.cancel()  # only matters if we were cancelled meanwhile

    async def _wait_heard_or(
        self,
        task: asyncio.Task[Any],
        after: float,
        timeout: float,  # noqa: ASYNC109
    ) -> bool:
        """Like ``_wait_heard("udp", ...)``, but also stop early once ``task`` is done."""
        waiter = asyncio.create_task(self._wait_heard("udp", after, timeout))
        try:
            await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        at = self._heard_at["udp"]
        return at is not None and at >= after

    async def _tcp_phase(self) -> None:
        loop = asyncio.get_running_loop()
        if await self._wait_trouble(max(0.0, self._udp_retry_at - loop.time())):
            task = self._tcp_task
            if task is not None and not task.done():
                # Silent, not closed: maybe just quiet (a download that ended). Ask first.
                self._use(("tcp", self._tcp_n))
                if await self._wait_heard("tcp", loop.time(), self._probe_wait()):
                    return
            log.info("TCP fallback lost or silent; trying UDP again")
            await self._close_tcp()
            self.transport = "udp"
            return
        if self._udp_failed:
            await self._reopen_udp()  # its address is gone: the retry needs a new socket
        self._use(self.udp_path)
        if await self._wait_heard("udp", loop.time(), self.udp_timeout):
            log.info("UDP works again; leaving the TCP fallback")
            self.transport = "udp"
            await self._close_tcp()
            return
        self._use(("tcp", self._tcp_n))
        self._udp_retry_at = loop.time() + self.udp_retry

    def _srtt(self) -> float:
        driver = self._driver
        if driver is None:
            return _UDP_REOPEN_WAIT
        return driver.session.stats(now=driver.now()).rtt_smoothed

    def _probe_wait(self) -> float:
        """How long a UDP probe gets to be answered: a few round trips, at least 0.75 s."""
        return max(_UDP_REOPEN_WAIT, 3 * self._srtt())

    async def _reopen_udp(self) -> None:
        """Replace the UDP socket (new local address and port)."""
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), remote_addr=self.udp_path
            )
        except OSError as exc:
            log.info("cannot open a new UDP socket: %s", _describe(exc))
            return
        enlarge_buffers(transport)
        old, self._udp = self._udp, transport
        self._udp_failed = False
        if old is not None:
            old.close()
        self._use(self.udp_path)
        self.note("udp-reopened", "new UDP socket (address change or silence)")

    async def _connect_tcp(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A TCP connection to the server's packet port, or None (logged) if it fails."""
        creds = self._credentials
        if creds is None or self._server_ip is None:
            return None
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(self._server_ip, creds.tcp_port), _TCP_CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            log.info("TCP fallback to port %d failed: %s", creds.tcp_port, _describe(exc))
            return None

    @staticmethod
    async def _discard(
        connecting: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None],
    ) -> None:
        """Drop a TCP connection made in case UDP would not come back."""
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            connection = await connecting
            if connection is not None:
                connection[1].close()

    async def _try_tcp(
        self, connecting: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]
    ) -> bool:
        """Move the session to the TCP connection ``connecting`` makes, if the server answers."""
        await self._close_tcp()
        connection = await connecting
        if connection is None:
            return False
        reader, writer = connection
        loop = asyncio.get_running_loop()
        self._tcp_n += 1
        self._tcp_writer = writer
        self._tcp_task = asyncio.create_task(self._read_tcp(self._tcp_n, reader))
        started = loop.time()
        self._use(("tcp", self._tcp_n))
        if await self._wait_heard("tcp", started, self.udp_timeout):
            assert self._credentials is not None
            log.warning(
                "UDP gets no answer; using the TCP fallback (port %d)", self._credentials.tcp_port
            )
            self.transport = "tcp"
            self._udp_retry_at = loop.time() + self.udp_retry
            return True
        await self._close_tcp()
        return False

    async def _read_tcp(self, n: int, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for packet in decoder.feed_untrusted(data):
                    if n != self._tcp_n:
                        return
                    self._received(packet, "tcp")
        except (OSError, WireError) as exc:
            log.info("TCP fallback connection failed: %s", exc)
        finally:
            if n == self._tcp_n and self.transport == "tcp":
                self._trouble.set()

    async def _close_tcp(self) -> None:
        writer, self._tcp_writer = self._tcp_writer, None
        task, self._tcp_task = self._tcp_task, None
        self._tcp_n += 1  # frames of the old connection are ignored from now on
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _server_restarted(self) -> bool:
        api, creds = self._api, self._credentials
        if api is None or creds is None:
            return False
        try:
            start = await api.server_start()
        except ClientError as exc:
            log.info("cannot ask the server whether it restarted: %s", exc)
            return False
        if start != creds.server_start:
            log.warning("the server restarted: our session is gone")
            return True
        return False

    async def _recreate(self) -> bool:
        """Replace the session: close the old one (its channels end), create a new one."""
        assert self._api is not None
        old = self._driver
        if old is not None and not old.closed:
            old.close(5, "session replaced")  # ends every channel: their splices close
        await self._close_tcp()
        try:
            credentials = await self._api.create_session()
        except ClientError as exc:
            log.warning("cannot create a new session: %s", exc)
            return False
        stale = credentials.udp_port != self.udp_path[1] or self._udp_failed
        if stale and self._udp is not None:
            self._udp.close()
            loop = asyncio.get_running_loop()
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self),
                    remote_addr=(self.udp_path[0], credentials.udp_port),
                )
                enlarge_buffers(self._udp)
                self._udp_failed = False
            except OSError as exc:
                log.warning("cannot open a UDP socket to the server: %s", exc)
                self._udp = None
        try:
            self._install(credentials)
        except ClientError as exc:
            log.warning("cannot start the new session: %s", exc)
            return False
        return True

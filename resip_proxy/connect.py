"""``resip-proxy connect HOST PORT``: stdin/stdout joined to one channel, cleaned up on every exit.

Contract
--------
:func:`run_connect` is the whole command (``resip_proxy.cli`` only parses options); it
returns the exit status.

- **Through a running proxy.** Unless ``own_session``, the control socket
  (:mod:`resip_proxy.control`, ``GET /proxy``) says where ``resip-proxy run`` (or
  ``demo``) listens and which server its session goes to. When that is the server of
  our config, ``connect`` is a SOCKS5 client of that listener: no session of its own
  (no API round trips before the first byte), and its channel shows in
  ``resip-proxy status``. No control socket, a proxy for another server, or a
  listener that refuses: a session of our own (logged at INFO).
- **Own session**: a :class:`~resip_proxy.client.SessionManager` as ``run`` builds it,
  ended as ``run`` ends it, with :meth:`~resip_proxy.client.SessionManager.close`,
  which sends the server a CLOSE.
- **Ending.** stdin's EOF plus the remote's close end it normally (exit 0). SIGHUP
  (how ssh ends its ProxyCommand), SIGTERM and SIGINT end it at once and cleanly, exit
  128 + the signal number: the own session is closed, so the server drops the session,
  its channel and the target connection now instead of after ``idle_timeout`` (96 h);
  through a proxy the connection to it is reset (RST, not FIN: a FIN is only a
  half-close, which a target may never answer), and the proxy resets the channel. A
  signal during session creation waits up to :data:`START_GRACE` for the API's answer,
  so a session the server already created is closed too. Pending output to stdout is
  dropped on a signal: whoever sent it is not reading any more.
- Failures are :class:`ConnectError` with one line (exit 1).
- Start-up is part of the time to the first byte: the session engine, aiohttp and the
  certificate code are imported only when a session of our own is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from resip.core.errors import ConfigError, ResipError

from .config import ClientConfig, parse_listen
from .locate import default_socket_path, fetch_proxy_info, server_name
from .stdio import CHUNK, Stdio, open_stdio

if TYPE_CHECKING:
    from .client import SessionManager

__all__ = [
    "STOP_SIGNALS",
    "ConnectError",
    "Interrupted",
    "StopSignals",
    "run_connect",
    "socks5_open",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Signals that end ``connect`` cleanly. ssh sends SIGHUP to its ProxyCommand when done.
STOP_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
#: How long the server gets to connect the target (the proxy's own limit is the same).
CONNECT_TIMEOUT = 30.0
#: A signal during session creation waits this long for the API's answer (seconds).
START_GRACE = 3.0
#: How long the control socket may take to answer (it is local: anything slower is stuck).
CONTROL_TIMEOUT = 2.0
#: SOCKS5 reply codes (RFC 1928 §6) in words.
_SOCKS_REPLIES = {
    1: "general failure",
    2: "not allowed by the server's rules",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "timed out",
    7: "command not supported",
    8: "address type not supported",
}


class ConnectError(ResipError):
    """``connect`` cannot go on; the message is one line for the user (exit 1)."""


class Interrupted(Exception):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """While entered, :data:`STOP_SIGNALS` are recorded instead of killing the process."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._event = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._loop.add_signal_handler(sig, self._fire, sig)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(RuntimeError, ValueError):
                self._loop.remove_signal_handler(sig)

    def received(self) -> int | None:
        """The first stop signal received, or None."""
        return self.signum

    def _fire(self, signum: int) -> None:
        if self.signum is None:
            log.info("%s: closing the channel", signal.Signals(signum).name)
            self.signum = signum
        self._event.set()

    async def guard(self, work: Awaitable[T], *, on_stop: Callable[[], None] | None = None) -> T:
        """``await work``, unless a stop signal comes first: then raise :class:`Interrupted`.

        ``on_stop`` runs before ``work`` is cancelled, to unblock what its clean-up
        would wait for (a stdout nobody reads).
        """
        if self.signum is not None:
            if asyncio.iscoroutine(work):
                work.close()  # never started; closing it avoids a "never awaited" warning
            raise Interrupted(self.signum)
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                if on_stop is not None and self.received() is not None:
                    on_stop()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        signum = self.received()  # set by a signal handler while we awaited
        if task.cancelled() and signum is not None:
            raise Interrupted(signum)
        # Finished first (or together with the signal): its result is not lost; the
        # next guard() raises at once.
        return task.result()


async def run_connect(
    cfg: ClientConfig,
    host: str,
    port: int,
    *,
    control_socket: Path | None = None,
    own_session: bool = False,
    on_pin: Callable[[str], None] | None = None,
) -> int:
    """Join stdin/stdout to ``host:port``; the exit status (see the module docstring)."""
    with StopSignals() as stop:
        try:
            proxy = None if own_session else await stop.guard(_running_proxy(cfg, control_socket))
            if proxy is not None and await _via_proxy(proxy, host, port, stop):
                return 0
            await _own_session(cfg, host, port, stop, on_pin)
        except Interrupted as exc:
            return 128 + exc.signum
    return 0


async def _running_proxy(cfg: ClientConfig, path: Path | None) -> tuple[str, int] | None:
    """The listener of a ``resip-proxy run`` for our server, or None."""
    path = path or default_socket_path()
    info = await fetch_proxy_info(path, timeout=CONTROL_TIMEOUT)
    if info is None:
        return None
    want = server_name(cfg.enrolment.host, cfg.enrolment.api_port)
    if info.get("server") != want:
        log.info(
            "the proxy at %s uses server %s, not %s: creating a session",
            path,
            info.get("server"),
            want,
        )
        return None
    listen = info.get("listen")
    try:
        address = parse_listen(listen) if isinstance(listen, str) else None
    except ConfigError:
        address = None
    if address is None:
        log.info("the proxy at %s announces no listener: creating a session", path)
        return None
    # A wildcard listener is reached through loopback on this host.
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    return wildcard.get(address[0], address[0]), address[1]


# -- through the running proxy --------------------------------------------------------------


def socks5_request(host: str, port: int) -> bytes:
    """Greeting (no authentication) and CONNECT request, sent together (RFC 1928)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.encode("idna")
        if not 0 < len(name) < 256:
            raise ConnectError(f"host name too long for SOCKS5: {host!r}") from None
        address = b"\x03" + bytes([len(name)]) + name
    else:
        address = (b"\x01" if ip.version == 4 else b"\x04") + ip.packed
    return b"\x05\x01\x00" + b"\x05\x01\x00" + address + struct.pack("!H", port)


async def socks5_open(
    proxy: tuple[str, int],
    host: str,
    port: int,
    *,
    timeout: float = CONNECT_TIMEOUT + 5.0,  # noqa: ASYNC109
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to ``host:port`` through the SOCKS5 listener ``proxy``.

    None if the listener does not accept connections (use a session of our own);
    :class:`ConnectError` if it refuses the target or breaks the handshake.
    """
    try:
        reader, writer = await asyncio.open_connection(*proxy, limit=CHUNK)
    except OSError as exc:
        log.info("the proxy at %s:%d does not accept (%s): creating a session", *proxy, exc)
        return None
    try:
        writer.write(socks5_request(host, port))
        code = await asyncio.wait_for(_socks5_reply(reader), timeout)
    except BaseException as exc:
        reset(writer)
        if isinstance(exc, asyncio.IncompleteReadError | OSError | TimeoutError):
            raise ConnectError(
                f"the proxy at {proxy[0]}:{proxy[1]} broke off the SOCKS5 handshake"
            ) from None
        raise
    if code != 0:
        writer.close()
        reason = _SOCKS_REPLIES.get(code, "unknown reply")
        raise ConnectError(
            f"cannot connect to {host}:{port}: {reason} "
            f"(code {code}, through the proxy at {proxy[0]}:{proxy[1]})"
        )
    return reader, writer


async def _socks5_reply(reader: asyncio.StreamReader) -> int:
    """Read the method selection and the reply; the reply code (0 = succeeded)."""
    method = await reader.readexactly(2)
    if method != b"\x05\x00":
        raise ConnectError("the proxy wants SOCKS5 authentication, which connect does not do")
    head = await reader.readexactly(4)
    atyp = head[3]
    length = (await reader.readexactly(1))[0] if atyp == 3 else {1: 4, 4: 16}.get(atyp, 0)
    await reader.readexactly(length + 2)  # the bound address and port: not needed
    return head[1]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close the connection with RST, which the proxy takes as "abort the channel"."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _via_proxy(proxy: tuple[str, int], host: str, port: int, stop: StopSignals) -> bool:
    """Relay through the running proxy; False if it cannot be reached (nothing was sent)."""
    opened = await stop.guard(socks5_open(proxy, host, port))
    if opened is None:
        return False
    reader, writer = opened
    log.info("connected to %s:%d through the running proxy at %s:%d", host, port, *proxy)
    stdio = await open_stdio()
    clean = False
    try:
        await stop.guard(_relay(stdio, reader, writer), on_stop=stdio.abort)
        clean = True
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise ConnectError(f"connection to {host}:{port} aborted: {exc}") from None
    finally:
        stdio.close()
        if clean:
            writer.close()
        else:
            reset(writer)
    return True


async def _relay(stdio: Stdio, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Both directions until both have ended; an error in either ends both."""
    up = asyncio.create_task(_pump(stdio.reader, writer))
    down = asyncio.create_task(_pump(reader, stdio.writer))
    try:
        await asyncio.gather(up, down)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(CHUNK):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()  # half-close: the other direction may still be flowing
    else:
        sink.close()


# -- a session of our own -------------------------------------------------------------------


async def _own_session(
    cfg: ClientConfig,
    host: str,
    port: int,
    stop: StopSignals,
    on_pin: Callable[[str], None] | None,
) -> None:
    # Imported here: this is what costs a connect through a running proxy nothing.
    from .client import ChannelFailed, ClientError, SessionManager

    manager = SessionManager(cfg.enrolment, on_pin=on_pin)
    try:
        await _start(manager, stop)
        channel = manager.open_channel(host, port)
        await stop.guard(channel.wait_started(CONNECT_TIMEOUT))
        stdio = await open_stdio()
        try:
            splice = channel.splice(stdio.reader, stdio.writer)
            result = await stop.guard(splice.run(), on_stop=stdio.abort)
        finally:
            stdio.close()
        if result.terminated is not None and result.terminated[0] != 0:
            raise ConnectError(f"connection to {host}:{port} aborted: {result.terminated[1]}")
    except ChannelFailed as exc:
        raise ConnectError(
            f"cannot connect to {host}:{port}: {exc.reason} (code {exc.code})"
        ) from None
    except ClientError as exc:
        raise ConnectError(str(exc)) from None
    finally:
        # What `run` does on its way out: the server is told, and drops the session,
        # its channels and their target connections now.
        await manager.close()


async def _start(manager: SessionManager, stop: StopSignals) -> None:
    """``manager.start()``; on a stop signal, first let an API call in flight answer."""
    start = asyncio.ensure_future(manager.start())
    try:
        await stop.guard(asyncio.shield(start))
    except Interrupted:
        # The server may have created the session already; once the answer is here,
        # manager.close() can close it. wait_for cancels the start if it takes too long.
        with contextlib.suppress(TimeoutError, ResipError, OSError):
            await asyncio.wait_for(start, START_GRACE)
        raise

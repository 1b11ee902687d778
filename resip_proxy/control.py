"""The client's local control endpoint: a JSON status snapshot over a unix socket.

Contract
--------
- :func:`build_snapshot` turns a running :class:`~resip_proxy.client.SessionManager`
  into the JSON-able status document described in ``docs/STATUS.md`` (schema version
  :data:`SCHEMA_VERSION`). It only reads state; it never changes the session.
- :class:`ControlServer` serves ``GET /status`` with that document over a unix socket
  (aiohttp ``UnixSite``) while ``resip-proxy run`` / ``demo`` runs. The default path is
  :func:`default_socket_path`: ``$XDG_RUNTIME_DIR/resip/proxy.sock``, else
  ``/tmp/resip-$UID/proxy.sock``; the directory is created mode 0700 (and refused if it
  belongs to someone else or is open to others) and the socket is chmod 0600, so only the
  user can read the status. ``RESIP_CONTROL_SOCKET`` or an explicit path override it.
  A stale socket (nobody answers) is replaced; a live one is an error (another proxy).
- ``GET /proxy`` answers ``{"listen": "HOST:PORT" | null, "server": "HOST:API_PORT",
  "pid": N}``: where the proxy's SOCKS5/HTTP listener is and which server its session
  goes to, so ``resip-proxy connect`` can use the running proxy instead of creating a
  session of its own (:func:`resip_proxy.locate.fetch_proxy_info` reads it without aiohttp).
- :func:`fetch_status` is the reading side (``resip-proxy status``); every failure is a
  :class:`ControlError` with one line fit for users.

The snapshot holds no secrets: no keys, no session secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from resip import __version__
from resip.core.errors import ResipError
from resip.core.session import State

from .client import SessionManager
from .locate import default_socket_path, server_name

__all__ = [
    "SCHEMA_VERSION",
    "ControlError",
    "ControlServer",
    "build_snapshot",
    "default_socket_path",
    "fetch_status",
    "server_name",
]

log = logging.getLogger(__name__)

#: Version of the status document (docs/STATUS.md); bumped on incompatible changes.
SCHEMA_VERSION = 1
#: Events kept and served (the newest).
MAX_EVENTS = 200
#: A local address change this recent shows the session as "roaming".
ROAMING_WINDOW = 10.0


class ControlError(ResipError):
    """The control socket cannot be served or read; the message is one line."""


def _private_dir(directory: Path) -> None:
    """Create ``directory`` mode 0700, or check an existing one is ours and private."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
    except OSError as exc:
        raise ControlError(f"cannot create {directory}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ControlError(f"{directory} is not a directory")
    if info.st_uid != os.getuid():
        raise ControlError(f"{directory} belongs to another user; refusing to use it")
    if info.st_mode & 0o077:
        # Only tighten directories we own; a world-writable one could be swapped under us.
        try:
            directory.chmod(0o700)
        except OSError as exc:
            raise ControlError(f"cannot make {directory} private: {exc.strerror or exc}") from None


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class ControlServer:
    """Serves ``GET /status`` and ``GET /proxy`` for one :class:`SessionManager`."""

    def __init__(
        self,
        manager: SessionManager,
        path: Path | None = None,
        *,
        listen: tuple[str, int] | None = None,
    ) -> None:
        """``listen``: the proxy listener's bound address, announced by ``GET /proxy``."""
        self.manager = manager
        self.path = path if path is not None else default_socket_path()
        self.listen = listen
        #: The clock origin of every ``t`` in the snapshot: the proxy's first event
        #: (the session's creation) or now, whichever is earlier.
        self.started_at = min([t for t, _, _ in manager.event_log] + [time.monotonic()])
        self._runner: web.AppRunner | None = None
        self._addresses: list[tuple[float, str]] = []
        self._address_changes = 0

    def snapshot(self) -> dict[str, Any]:
        """The status document right now."""
        self._track_address()
        return build_snapshot(
            self.manager,
            started_at=self.started_at,
            address_history=self._addresses,
        )

    def _track_address(self) -> None:
        """Remember local address changes (a roaming client) as they are observed."""
        address = self.manager.local_address
        if address is None or (self._addresses and self._addresses[-1][1] == address):
            return
        if self._addresses:
            self.manager.note("address", f"local address changed to {address}")
        self._addresses.append((time.monotonic(), address))
        del self._addresses[:-20]

    async def start(self) -> None:
        """Bind the socket. Raises :class:`ControlError` with a clear message."""
        path = self.path
        if path == default_socket_path():
            _private_dir(path.parent)
        else:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise ControlError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        if path.exists() or path.is_symlink():
            if _socket_alive(path):
                raise ControlError(f"another resip-proxy already serves {path}")
            with contextlib.suppress(OSError):
                path.unlink()
        app = web.Application()
        app.router.add_get("/status", self._status)
        app.router.add_get("/proxy", self._proxy)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.UnixSite(self._runner, str(path))
        try:
            await site.start()
            path.chmod(0o600)
        except OSError as exc:
            await self.close()
            raise ControlError(f"cannot serve status on {path}: {exc.strerror or exc}") from None
        self._track_address()
        log.info("status socket at %s", path)

    async def close(self) -> None:
        """Stop serving and remove the socket."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _status(self, request: web.Request) -> web.Response:
        try:
            doc = self.snapshot()
        except Exception:  # a status bug must never take the proxy down
            log.exception("building the status snapshot failed")
            return web.json_response({"error": "internal error building the status"}, status=500)
        return web.json_response(doc)

    async def _proxy(self, request: web.Request) -> web.Response:
        listen = None
        if self.listen is not None:
            host, port = self.listen
            listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        enrolment = self.manager.enrolment
        server = server_name(enrolment.host, enrolment.api_port)
        return web.json_response({"listen": listen, "server": server, "pid": os.getpid()})


def _state(manager: SessionManager, session_state: State, roaming: bool) -> str:
    if session_state is State.CONNECTING:
        return "connecting"
    if session_state is State.OUTAGE or session_state is State.CLOSED:
        return "outage"
    if manager.transport == "tcp":
        return "tcp-fallback"
    return "roaming" if roaming else "connected"


def build_snapshot(
    manager: SessionManager,
    *,
    started_at: float,
    address_history: list[tuple[float, str]] | None = None,
) -> dict[str, Any]:
    """The status document of ``manager`` (docs/STATUS.md). ``started_at``: monotonic."""
    mono = time.monotonic()
    history = address_history or []
    events = [
        {"t": round(t - started_at, 3), "kind": kind, "text": text}
        for t, kind, text in list(manager.event_log)[-MAX_EVENTS:]
    ]
    doc: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "resip_version": __version__,
        "uptime_s": round(mono - started_at, 3),
        "session": None,
        "channels": [],
        "events": events,
    }
    try:
        driver = manager.driver
    except ResipError:
        return doc  # not started yet
    now = driver.now()
    session = driver.session
    stats = session.stats(now=now)
    created = [t for t, kind, _ in manager.event_log if kind == "session"]
    roaming = len(history) > 1 and mono - history[-1][0] < ROAMING_WINDOW
    last = stats.last_received_at
    doc["session"] = {
        "state": _state(manager, session.state, roaming),
        "server": manager.enrolment.host,
        "session_id": stats.session_id,
        "local_address": manager.local_address,
        "address_history": [{"t": round(t - started_at, 3), "address": a} for t, a in history],
        "transport": manager.transport,
        "uptime_s": round(mono - created[-1], 3) if created else 0.0,
        "last_packet_age_s": None if last is None else round(max(0.0, now - last), 3),
        "rtt_ms": {
            "smoothed": round(stats.rtt_smoothed * 1000, 3),
            "min": round(stats.rtt_min * 1000, 3),
        },
        "loss": round(stats.loss_estimate, 6),
        "loss_in": round(stats.receive_loss, 6),
        "send_rate_bps": round(stats.pacing_rate * 8, 1),
        "bytes": {"sent": stats.bytes_sent, "received": stats.bytes_received},
        "packets": {"sent": stats.packets_sent, "received": stats.packets_received},
        "bytes_in_flight": stats.bytes_in_flight,
        "retransmissions": stats.retransmissions,
        "duplicates": stats.duplicates,
        "invalid_dropped": stats.invalid_dropped,
        "key_epoch": stats.key_epoch,
        "outages": stats.outages,
        "generation": manager.generation,
    }
    channels = []
    for ch in stats.channels:
        state = session.channels.get(ch.channel_id)
        peer = state.extra.get("local_peer") if state is not None else None
        channels.append(
            {
                "id": ch.channel_id,
                "kind": ch.proto,
                "local_peer": peer if isinstance(peer, str) else None,
                "target": ch.target,
                "state": ch.state,
                "bytes_sent": ch.bytes_sent,
                "bytes_received": ch.bytes_received,
                "in_flight": ch.in_flight,
                "retransmissions": ch.retransmissions,
                "age_s": round(max(0.0, now - ch.opened_at), 3),
                "idle_s": round(max(0.0, now - ch.last_activity), 3),
            }
        )
    doc["channels"] = channels
    return doc


def _exists(path: Path) -> bool:
    # A quick local stat, so a missing socket gives the clearest message.
    return path.exists()


async def fetch_status(path: Path, *, timeout: float = 3.0) -> dict[str, Any]:  # noqa: ASYNC109
    """``GET /status`` from the control socket at ``path``; raises :class:`ControlError`."""
    if not _exists(path):
        raise ControlError(f"no resip-proxy is running (no control socket at {path})")
    connector = aiohttp.UnixConnector(path=str(path))
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as http,
            http.get("http://resip-proxy/status") as resp,
        ):
            if resp.status != 200:
                raise ControlError(f"the proxy answered HTTP {resp.status} on {path}")
            doc = await resp.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
            raise ControlError(
                f"no resip-proxy is running (control socket at {path} does not answer)"
            ) from None
        raise ControlError(f"cannot read status from {path}: {exc or type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise ControlError(f"malformed status from {path}")
    return doc

"""Finding a running ``resip-proxy run``: its control socket, and what it says about itself.

Contract
--------
- :func:`default_socket_path` is where the control socket (:mod:`resip_proxy.control`)
  lives unless overridden: ``$RESIP_CONTROL_SOCKET``, else
  ``$XDG_RUNTIME_DIR/resip/proxy.sock``, else ``/tmp/resip-$UID/proxy.sock``.
- :func:`fetch_proxy_info` asks the socket ``GET /proxy`` and returns its JSON object
  (``listen``, ``server``, ``pid``), or None when no proxy answers there, it answers
  something else, or it takes longer than ``timeout``. It never raises for any of that:
  its caller (``resip-proxy connect``) then creates a session of its own.
- :func:`server_name` is how ``GET /proxy`` names the proxy's server.

Light on purpose: only the standard library. ``connect`` through a running proxy
imports this and nothing of the session engine or aiohttp (which cost it more than
half a second of start-up, the time the proxy was meant to save). One HTTP/1.0 request
on a unix socket needs no HTTP library.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

__all__ = ["SOCKET_NAME", "default_socket_path", "fetch_proxy_info", "server_name"]

log = logging.getLogger(__name__)

SOCKET_NAME = "proxy.sock"
#: Largest ``GET /proxy`` answer read (it is a few dozen bytes).
_MAX_ANSWER = 64 * 1024


def default_socket_path() -> Path:
    """Where the control socket lives unless overridden (see the module docstring)."""
    override = os.environ.get("RESIP_CONTROL_SOCKET")
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "resip" / SOCKET_NAME
    return Path("/tmp") / f"resip-{os.getuid()}" / SOCKET_NAME  # noqa: S108 - per-user 0700 dir


def server_name(host: str, api_port: int) -> str:
    """How ``GET /proxy`` names a server: ``HOST:API_PORT`` (``[v6]:PORT`` for IPv6)."""
    return f"[{host}]:{api_port}" if ":" in host else f"{host}:{api_port}"


async def fetch_proxy_info(path: Path, *, timeout: float = 2.0) -> dict[str, Any] | None:  # noqa: ASYNC109
    """``GET /proxy`` from the control socket at ``path``; None if nothing usable answers."""
    try:
        raw = await asyncio.wait_for(_get(path, "/proxy"), timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        log.debug("no proxy answers on %s: %s", path, exc)  # missing, stale or stuck
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        log.debug("control socket %s answered %r", path, head[:80])
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


async def _get(path: Path, route: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        # HTTP/1.0: the server closes after its answer, so the answer ends at EOF.
        writer.write(f"GET {route} HTTP/1.0\r\nHost: resip-proxy\r\n\r\n".encode())
        await writer.drain()
        answer = b""
        while chunk := await reader.read(_MAX_ANSWER):
            answer += chunk
            if len(answer) > _MAX_ANSWER:
                raise ValueError("answer too long")
        return answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

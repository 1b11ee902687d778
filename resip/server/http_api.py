"""The HTTPS session API (PROTOCOL.md §7) as an aiohttp application.

Contract:

- ``POST /v1/sessions`` creates a session and returns its credentials (200 JSON);
  ``GET /v1/info`` returns ``{"server_start", "version"}``; ``DELETE /v1/sessions/{id}``
  closes a session (204, or 404 if unknown). Every route needs
  ``Authorization: Bearer API_KEY``; the key is compared in constant time.
- Every error is JSON ``{"error": "..."}`` with a clear message and the right status
  (400, 401, 404, 405, 429, 503, 500); no traceback ever reaches a client.
- Failed authentications are limited per source address: after ``max_failures`` within
  ``failure_window`` seconds that address gets 429 (with ``Retry-After``) until its oldest
  failure leaves the window, even with the right key, so guessing keys is slow.
- Handlers only validate, call the :class:`SessionService` and serialise; the service
  (the app) owns sessions and sockets. Keys are never logged.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web

from resip import __version__
from resip.server.endpoint import SessionLimitReached

__all__ = ["FailureLimiter", "SessionService", "make_api"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SessionService(Protocol):
    """What the API needs from the server."""

    @property
    def server_start(self) -> str:
        """Random token made at process start; a client sees a restart when it changes."""
        ...

    def create_session(self) -> dict[str, object]:
        """A new session's credentials; raises :class:`SessionLimitReached` when full."""
        ...

    def close_session(self, session_id: bytes) -> bool:
        """Close a session with CLOSE code 0; False if there is no such session."""
        ...


class FailureLimiter:
    """Counts failed authentications per source address in a sliding window.

    Memory is bounded: at most ``max_sources`` addresses are tracked, the least recently
    failing one is forgotten first.
    """

    def __init__(
        self,
        *,
        max_failures: int = 20,
        window: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_sources = max_sources
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, source: str, now: float) -> deque[float] | None:
        times = self._failures.get(source)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[source]
            return None
        return times

    def retry_after(self, source: str) -> float | None:
        """Seconds until ``source`` may try again, or ``None`` if it is not blocked."""
        now = self._clock()
        times = self._recent(source, now)
        if times is None or len(times) < self.max_failures:
            return None
        return max(0.0, times[0] + self.window - now)

    def failed(self, source: str) -> None:
        """Record one failed attempt from ``source``."""
        now = self._clock()
        times = self._recent(source, now)
        if times is None:
            times = deque(maxlen=self.max_failures)
            self._failures[source] = times
            while len(self._failures) > self.max_sources:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(source)
        times.append(now)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; nothing else ever reaches the client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        messages = {
            404: f"no such endpoint: {request.method} {request.path}",
            405: f"method {request.method} not allowed on {request.path}",
        }
        message = messages.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return _error(exc.status, message, headers)
    except Exception:
        log.exception("API request %s %s failed", request.method, request.path)
        return _error(500, "internal server error")


def make_api(
    service: SessionService,
    *,
    api_keys: Sequence[str],
    limiter: FailureLimiter | None = None,
) -> web.Application:
    """The aiohttp application of the session API.

    ``api_keys`` lists every accepted bearer token (the API key, and the admin key).
    """
    keys = [k.encode() for k in api_keys if k]
    if not keys:
        raise ValueError("the session API needs at least one API key")
    failures = limiter if limiter is not None else FailureLimiter()

    def check_auth(request: web.Request) -> web.Response | None:
        source = request.remote or "unknown"
        wait = failures.retry_after(source)
        if wait is not None:
            return _error(
                429,
                "too many failed authentications from this address; try again later",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            problem = "missing Authorization header (expected 'Bearer API_KEY')"
        elif scheme.lower() != "bearer" or not token.strip():
            problem = "malformed Authorization header (expected 'Bearer API_KEY')"
        else:
            given = token.strip().encode("utf-8", "surrogateescape")
            # Compare with every key, without stopping early, in constant time each.
            matched = False
            for key in keys:
                matched |= hmac.compare_digest(given, key)
            if matched:
                return None
            problem = "invalid API key"
        failures.failed(source)
        log.info("API authentication failed from %s: %s", source, problem)
        return _error(401, problem, {"WWW-Authenticate": "Bearer"})

    async def create_session(request: web.Request) -> web.Response:
        if (denied := check_auth(request)) is not None:
            return denied
        try:
            credentials = service.create_session()
        except SessionLimitReached as exc:
            return _error(503, str(exc), {"Retry-After": "60"})
        return web.json_response(credentials)

    async def info(request: web.Request) -> web.Response:
        if (denied := check_auth(request)) is not None:
            return denied
        return web.json_response({"server_start": service.server_start, "version": __version__})

    async def delete_session(request: web.Request) -> web.Response:
        if (denied := check_auth(request)) is not None:
            return denied
        text = request.match_info["session_id"]
        try:
            session_id = bytes.fromhex(text)
        except ValueError:
            session_id = b""
        if len(session_id) != 8:
            return _error(400, "session id must be 16 hexadecimal digits")
        if not service.close_session(session_id):
            return _error(404, f"no session {session_id.hex()}")
        return web.Response(status=204)

    # No request bodies are expected: keep the buffer tiny.
    app = web.Application(middlewares=[_json_errors], client_max_size=4096)
    app.router.add_post("/v1/sessions", create_session)
    app.router.add_get("/v1/info", info)
    app.router.add_delete("/v1/sessions/{session_id}", delete_session)
    return app

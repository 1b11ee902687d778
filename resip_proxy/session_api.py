"""The server's HTTPS session API, seen from the client (PROTOCOL.md §7).

- :func:`fetch_fingerprint` learns the certificate a server presents: trust on first use.
- :class:`SessionApi` talks to one server over connections pinned to that certificate's
  SHA-256: ``POST /v1/sessions`` creates a session, ``GET /v1/info`` tells whether the
  server restarted (its ``server_start`` token changed).
- :class:`SessionCredentials` decodes and validates what ``POST /v1/sessions`` returns.

Every failure (unreachable, wrong key, pin mismatch, malformed answer) is a
:class:`ClientError` with a one-line message; the API key and the session secret are
never logged or put in a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from resip.core.crypto import Suite
from resip.core.enrol import Enrolment
from resip.core.errors import ResipError

__all__ = ["ClientError", "SessionApi", "SessionCredentials", "describe_error", "fetch_fingerprint"]

#: Timeout of one session API request.
API_TIMEOUT = 15.0


class ClientError(ResipError):
    """The session could not be set up; the message is one line, fit for users."""


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
        get, hex_bytes, port = _field(doc), _hex_field(doc), _port_field(doc)
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


_Doc = dict[str, object]


def _field(doc: _Doc) -> Callable[[str, type[Any]], Any]:
    """``get(key, kind)``: the value of ``key`` if it is a ``kind`` (never a bool)."""

    def get(key: str, kind: type[Any]) -> Any:
        value = doc.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ClientError(f"session API answer has a missing or malformed {key!r}")
        return value

    return get


def _hex_field(doc: _Doc) -> Callable[[str, int], bytes]:
    """``hex_bytes(key, size)``: exactly ``size`` bytes, written in hex."""
    get = _field(doc)

    def hex_bytes(key: str, size: int) -> bytes:
        try:
            raw = bytes.fromhex(get(key, str))
        except ValueError:
            raise ClientError(f"session API answer has a malformed {key!r}") from None
        if len(raw) != size:
            raise ClientError(f"session API answer: {key!r} must be {size} bytes")
        return raw

    return hex_bytes


def _port_field(doc: _Doc) -> Callable[[str], int]:
    """``port(key)``: a port number."""
    get = _field(doc)

    def port(key: str) -> int:
        value = int(get(key, int))
        if not 1 <= value <= 65535:
            raise ClientError(f"session API answer: {key!r} out of range")
        return value

    return port


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
        where = f"https://{_url_host(host)}:{port}"
        raise ClientError(
            f"cannot reach the session API at {where}: {describe_error(exc)}"
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


def describe_error(exc: BaseException) -> str:
    """One short phrase for a connection failure (no traceback, no secrets)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.strerror or str(exc.os_error)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class SessionApi:
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
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=API_TIMEOUT)) as http,
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
                f"cannot reach the session API at {self._base}: {describe_error(exc)}"
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

"""Enrolment URIs: everything a client needs to reach a server, in one copyable line.

Format (what ``resip-server init`` prints and ``resip-proxy init`` reads)::

    resip://API_KEY@HOST:API_PORT/?fp=SHA256HEX&udp=PORT&tcp=PORT

- ``API_KEY`` is percent-encoded (keys from ``secrets.token_urlsafe`` need no encoding).
- ``HOST`` is a DNS name, an IPv4 address, or an IPv6 address in brackets.
- ``API_PORT`` defaults to 31265, ``udp`` to 31266, ``tcp`` to the ``udp`` port.
- ``fp`` is the SHA-256 of the server's leaf certificate (64 hex digits); without it the
  client falls back to trust on first use.

:func:`parse_uri` is strict: anything malformed, duplicated or unknown raises
:class:`~resip.core.errors.ConfigError` with a message saying what is wrong, because a
silently ignored typo in ``fp`` would turn pinning off. Error messages never contain the
API key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from resip.core.errors import ConfigError

__all__ = [
    "DEFAULT_API_PORT",
    "DEFAULT_RESIP_PORT",
    "SCHEME",
    "Enrolment",
    "format_uri",
    "parse_uri",
    "validate_host",
]

SCHEME = "resip"
DEFAULT_API_PORT = 31265
DEFAULT_RESIP_PORT = 31266

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Enrolment:
    """Server address, ports, API key and pinned certificate fingerprint."""

    api_key: str = field(repr=False)
    host: str
    api_port: int = DEFAULT_API_PORT
    udp_port: int = DEFAULT_RESIP_PORT
    tcp_port: int = DEFAULT_RESIP_PORT
    fingerprint: str | None = None


def validate_host(host: str) -> str:
    """Return ``host`` (IPv6 without brackets) if it is a DNS name or IP address.

    Raises :class:`ConfigError` otherwise.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"bad IPv6 address {host!r}") from None
        if "%" in host:
            raise ConfigError(f"IPv6 zone ids are not supported in a server address: {host!r}")
        return host
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
        raise ConfigError(f"bad host {host!r}: expected a DNS name or an IP address")
    return host


def _check_port(value: int, what: str) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{what} {value} out of range 1-65535")
    return value


def _parse_port(text: str, what: str) -> int:
    if _PORT.fullmatch(text) is None:
        raise ConfigError(f"bad {what} {text!r}: expected a number 1-65535")
    return _check_port(int(text), what)


def _check_api_key(key: str) -> str:
    # Whitespace and unprintable characters would not survive copy and paste intact.
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise ConfigError("API key is empty or contains whitespace or control characters")
    return key


def _check_fingerprint(fp: str) -> str:
    if _FINGERPRINT.fullmatch(fp) is None:
        raise ConfigError("bad fingerprint 'fp': expected 64 hex digits (SHA-256)")
    return fp.lower()


def format_uri(e: Enrolment) -> str:
    """The enrolment URI for ``e``. Raises :class:`ConfigError` for invalid fields."""
    _check_api_key(e.api_key)
    host = validate_host(e.host)
    netloc_host = f"[{host}]" if ":" in host else host
    query = []
    if e.fingerprint is not None:
        query.append(f"fp={_check_fingerprint(e.fingerprint)}")
    query.append(f"udp={_check_port(e.udp_port, 'udp port')}")
    query.append(f"tcp={_check_port(e.tcp_port, 'tcp port')}")
    api_port = _check_port(e.api_port, "API port")
    key = quote(e.api_key, safe="")
    return f"{SCHEME}://{key}@{netloc_host}:{api_port}/?{'&'.join(query)}"


def parse_uri(uri: str) -> Enrolment:
    """Parse an enrolment URI; raises :class:`ConfigError` saying what is malformed."""
    uri = uri.strip()
    if any(c.isspace() or not c.isprintable() for c in uri):
        raise ConfigError("enrolment URI contains whitespace or control characters")
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise ConfigError(f"enrolment URI is malformed: {exc}") from None
    if parts.scheme != SCHEME or not uri[len(SCHEME) + 1 :].startswith("//"):
        raise ConfigError(f"enrolment URI must start with '{SCHEME}://'")
    if parts.path not in ("", "/"):
        raise ConfigError("enrolment URI must have no path")
    if parts.fragment:
        raise ConfigError("enrolment URI must have no '#' fragment")

    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at or not userinfo:
        raise ConfigError("enrolment URI has no API key (expected resip://API_KEY@HOST...)")
    if ":" in userinfo:
        raise ConfigError("enrolment URI has a ':' in the API key part (percent-encode it)")
    try:
        api_key = unquote(userinfo, errors="strict")
    except UnicodeDecodeError:
        raise ConfigError("enrolment URI API key is not valid percent-encoded UTF-8") from None
    _check_api_key(api_key)

    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise ConfigError("enrolment URI has an unclosed '[' in the host")
        host, rest = hostport[1:close], hostport[close + 1 :]
        if ":" not in host:
            raise ConfigError("only IPv6 addresses go in brackets")
    elif hostport.count(":") > 1:
        raise ConfigError("an IPv6 host must be in brackets: resip://KEY@[2001:db8::1]:PORT")
    else:
        host, colon, port_text = hostport.partition(":")
        rest = colon + port_text
    if not host:
        raise ConfigError("enrolment URI has no host")
    host = validate_host(host)
    if rest == "":
        api_port = DEFAULT_API_PORT
    elif rest.startswith(":"):
        api_port = _parse_port(rest[1:], "API port")
    else:
        raise ConfigError("enrolment URI has junk after the host")

    fingerprint: str | None = None
    udp_port = DEFAULT_RESIP_PORT
    tcp_port: int | None = None
    seen: set[str] = set()
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError("enrolment URI query is malformed (expected k=v&k=v)") from None
    for name, value in pairs:
        if name in seen:
            raise ConfigError(f"enrolment URI repeats {name!r}")
        seen.add(name)
        if name == "fp":
            fingerprint = _check_fingerprint(value)
        elif name == "udp":
            udp_port = _parse_port(value, "udp port")
        elif name == "tcp":
            tcp_port = _parse_port(value, "tcp port")
        else:
            raise ConfigError(f"enrolment URI has an unknown parameter {name!r}")
    return Enrolment(
        api_key=api_key,
        host=host,
        api_port=api_port,
        udp_port=udp_port,
        tcp_port=udp_port if tcp_port is None else tcp_port,
        fingerprint=fingerprint,
    )

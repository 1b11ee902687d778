"""Server configuration: the TOML file, its validation, and ``resip-server init``.

Contract:

- :func:`load_server_config` reads a TOML file (layout in ``configs/server.example.toml``)
  and returns a validated :class:`ServerConfig`. Every missing, mistyped, out-of-range or
  unknown key raises :class:`~resip.core.errors.ConfigError` naming the file and the key, so an
  operator never has to guess. Relative certificate paths resolve against the config
  file's directory, so the directory can be moved as a whole.
- :func:`write_server_config` writes the TOML by hand (no extra dependency), with
  comments, atomically and with mode 0600 because the file holds the API keys.
- :func:`init_server` creates a directory with a fresh certificate chain, key and config,
  and returns the config with the client's :class:`~resip.core.enrol.Enrolment`. It refuses to
  overwrite an existing config unless ``force`` is set.
- API keys never appear in ``repr`` or error messages.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import secrets
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resip.core.enrol import DEFAULT_API_PORT, DEFAULT_RESIP_PORT, Enrolment, validate_host
from resip.core.errors import ConfigError
from resip.server.acl import Acl
from resip.server.certs import (
    cert_fingerprint,
    make_ca_and_server_cert,
    write_private_file,
    write_tls_files,
)

__all__ = [
    "CONFIG_NAME",
    "LOG_LEVELS",
    "MIN_KEY_LENGTH",
    "ServerConfig",
    "init_server",
    "load_server_config",
    "render_server_config",
    "write_server_config",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.toml"
LOG_LEVELS = ("debug", "info", "warning", "error")
#: Shorter keys are refused: the API key is the only thing between the internet and an
#: open proxy, and 16 characters of token_urlsafe are already 96 bits.
MIN_KEY_LENGTH = 16


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything ``resip-server run`` needs. Paths are absolute after loading."""

    public_host: str
    api_key: str = field(repr=False)
    admin_key: str = field(repr=False)
    tls_cert: Path
    tls_key: Path
    listen_host: str = "0.0.0.0"  # noqa: S104 - a server listens on all interfaces by default
    api_port: int = DEFAULT_API_PORT
    #: One number for UDP and the TCP fallback.
    resip_port: int = DEFAULT_RESIP_PORT
    #: ACL rule strings, in order (syntax in :mod:`resip.server.acl`).
    acl: tuple[str, ...] = ()
    allow_internet: bool = True
    max_sessions: int = 1000
    max_channels_per_session: int = 4096
    #: 96 h so a 72-hour outage is survived with a day to spare (DESIGN §3).
    idle_timeout_hours: float = 96.0
    #: Bytes all channels of one session may buffer for sending.
    session_buffer_bytes: int = 64 << 20
    log_level: str = "info"

    def build_acl(self) -> Acl:
        """The target policy described by ``acl`` and ``allow_internet``."""
        return Acl.from_config(self.acl, allow_internet=self.allow_internet)

    def enrolment(self) -> Enrolment:
        """The enrolment a client needs, with the fingerprint of the served leaf certificate."""
        return Enrolment(
            api_key=self.api_key,
            host=self.public_host,
            api_port=self.api_port,
            udp_port=self.resip_port,
            tcp_port=self.resip_port,
            fingerprint=cert_fingerprint(self.tls_cert.read_bytes()),
        )


# -- loading ---------------------------------------------------------------------------------

# section -> key -> ServerConfig field
_LAYOUT: dict[str, dict[str, str]] = {
    "server": {
        "listen_host": "listen_host",
        "public_host": "public_host",
        "api_port": "api_port",
        "resip_port": "resip_port",
        "log_level": "log_level",
    },
    "auth": {"api_key": "api_key", "admin_key": "admin_key"},
    "tls": {"cert": "tls_cert", "key": "tls_key"},
    "limits": {
        "max_sessions": "max_sessions",
        "max_channels_per_session": "max_channels_per_session",
        "idle_timeout_hours": "idle_timeout_hours",
        "session_buffer_bytes": "session_buffer_bytes",
    },
    "acl": {"allow_internet": "allow_internet", "rules": "acl"},
}
_REQUIRED = {"public_host", "api_key", "admin_key"}


class _Reader:
    """Typed access to one TOML document, with errors that name file and key."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}")

    def get(self, section: str, key: str) -> object:
        table = self.doc.get(section, {})
        return table.get(key) if isinstance(table, dict) else None

    def string(self, section: str, key: str) -> str | None:
        value = self.get(section, key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f"[{section}] {key}", f"must be a string, got {type(value).__name__}")
        return value

    def integer(self, section: str, key: str, lo: int, hi: int) -> int | None:
        value = self.get(section, key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"[{section}] {key}", f"must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise self.fail(f"[{section}] {key}", f"must be {lo}-{hi}, got {value}")
        return value


def _check_structure(reader: _Reader) -> None:
    for section, table in reader.doc.items():
        if section not in _LAYOUT:
            raise reader.fail(f"[{section}]", f"unknown section; expected one of {list(_LAYOUT)}")
        if not isinstance(table, dict):
            raise reader.fail(f"[{section}]", "must be a table")
        for key in table:
            if key not in _LAYOUT[section]:
                raise reader.fail(
                    f"[{section}] {key}", f"unknown key; expected one of {list(_LAYOUT[section])}"
                )


def load_server_config(path: Path) -> ServerConfig:
    """Read and validate a server config file. Raises :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    reader = _Reader(path, doc)
    _check_structure(reader)
    _warn_if_readable_by_others(path, "config file (contains the API keys)")

    values: dict[str, Any] = {}
    for section, key in (("server", "listen_host"), ("server", "public_host")):
        text = reader.string(section, key)
        if text is not None:
            try:
                values[key] = validate_host(text)
            except ConfigError as exc:
                raise reader.fail(f"[{section}] {key}", str(exc)) from None
    for key in ("api_port", "resip_port"):
        port = reader.integer("server", key, 1, 65535)
        if port is not None:
            values[key] = port
    level = reader.string("server", "log_level")
    if level is not None:
        if level.lower() not in LOG_LEVELS:
            raise reader.fail("[server] log_level", f"must be one of {list(LOG_LEVELS)}")
        values["log_level"] = level.lower()

    for key in ("api_key", "admin_key"):
        secret = reader.string("auth", key)
        if secret is not None:
            # Never echo the value: the error ends up in logs and terminals.
            if len(secret) < MIN_KEY_LENGTH:
                raise reader.fail(f"[auth] {key}", f"must be at least {MIN_KEY_LENGTH} characters")
            if any(c.isspace() or not c.isprintable() for c in secret):
                raise reader.fail(f"[auth] {key}", "must not contain whitespace")
            values[key] = secret

    for key, fname, default in (("cert", "tls_cert", "cert.pem"), ("key", "tls_key", "key.pem")):
        text = reader.string("tls", key)
        if text == "":
            raise reader.fail(f"[tls] {key}", "must not be empty")
        file = Path(text or default).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
            raise reader.fail(f"[tls] {key}", f"file not found: {file}")
        values[fname] = file.resolve()

    for key, lo, hi in (
        ("max_sessions", 1, 10_000_000),
        ("max_channels_per_session", 1, 1 << 20),
        ("session_buffer_bytes", 64 << 10, 1 << 40),
    ):
        number = reader.integer("limits", key, lo, hi)
        if number is not None:
            values[key] = number
    hours = reader.get("limits", "idle_timeout_hours")
    if hours is not None:
        if isinstance(hours, bool) or not isinstance(hours, (int, float)):
            raise reader.fail("[limits] idle_timeout_hours", f"must be a number, got {hours!r}")
        if not (math.isfinite(hours) and hours > 0):
            raise reader.fail("[limits] idle_timeout_hours", "must be a positive number")
        values["idle_timeout_hours"] = float(hours)

    allow_internet = reader.get("acl", "allow_internet")
    if allow_internet is not None:
        if not isinstance(allow_internet, bool):
            raise reader.fail("[acl] allow_internet", "must be true or false")
        values["allow_internet"] = allow_internet
    rules = reader.get("acl", "rules")
    if rules is not None:
        if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
            raise reader.fail("[acl] rules", "must be a list of strings")
        try:
            Acl.from_config(rules)
        except ConfigError as exc:
            raise reader.fail("[acl] rules", str(exc)) from None
        values["acl"] = tuple(rules)

    missing = sorted(_REQUIRED - values.keys())
    if missing:
        where = {f: f"[{s}] {k}" for s, keys in _LAYOUT.items() for k, f in keys.items()}
        raise ConfigError(f"{path}: missing {', '.join(where[m] for m in missing)}")
    cfg = ServerConfig(**values)
    if cfg.api_port == cfg.resip_port:
        raise reader.fail("[server] resip_port", "must differ from api_port (both use TCP)")
    if secrets.compare_digest(cfg.api_key, cfg.admin_key):
        raise reader.fail("[auth] admin_key", "must differ from api_key")
    _warn_if_readable_by_others(cfg.tls_key, "TLS private key")
    return cfg


def _warn_if_readable_by_others(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("%s %s is accessible by other users; chmod 600 it", what, path)


# -- writing ---------------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    out = []
    for c in value:
        if c in ('"', "\\"):
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _toml_path(file: Path, base: Path) -> str:
    # Relative when inside the config's directory, so the directory can be moved.
    try:
        return _toml_str(str(file.resolve().relative_to(base.resolve())))
    except ValueError:
        return _toml_str(str(file))


def render_server_config(cfg: ServerConfig, base: Path) -> str:
    """The commented TOML text for ``cfg``; paths inside ``base`` are written relative."""
    rules = "".join(f"    {_toml_str(r)},\n" for r in cfg.acl)
    rules_value = f"[\n{rules}]" if cfg.acl else "[]"
    return f"""\
# ResIP server configuration (resip-server run). Keep this file private (mode 0600):
# it holds the API keys. configs/server.example.toml documents every key.

[server]
# Address the listeners bind to ("::" for IPv6 and IPv4).
listen_host = {_toml_str(cfg.listen_host)}
# Name or address clients use to reach this server (goes into the enrolment URI).
public_host = {_toml_str(cfg.public_host)}
# HTTPS session API (TCP).
api_port = {cfg.api_port}
# ResIP packets: UDP, and the TCP fallback on the same number.
resip_port = {cfg.resip_port}
# debug, info, warning or error.
log_level = {_toml_str(cfg.log_level)}

[auth]
# Clients present this key to open sessions (it is in the enrolment URI).
api_key = {_toml_str(cfg.api_key)}
# For "resip-server status" and other admin calls; never give it to clients.
admin_key = {_toml_str(cfg.admin_key)}

[tls]
# Server certificate followed by its CA, and the server's private key.
# Relative paths are relative to this file's directory.
cert = {_toml_path(cfg.tls_cert, base)}
key = {_toml_path(cfg.tls_key, base)}

[limits]
max_sessions = {cfg.max_sessions}
max_channels_per_session = {cfg.max_channels_per_session}
# Sessions without any traffic are kept this long (outages of 72 h must survive).
idle_timeout_hours = {cfg.idle_timeout_hours!r}
session_buffer_bytes = {cfg.session_buffer_bytes}

[acl]
# Targets not matched by any rule: public addresses are allowed when this is true;
# loopback, private, link-local, multicast and other special ranges are always denied.
allow_internet = {"true" if cfg.allow_internet else "false"}
# First matching rule wins, before the defaults. Syntax: "allow|deny NETWORK [port PORTS]",
# e.g. "allow 127.0.0.1/32 port 10000", "deny any port 25", "allow 10.0.0.0/8 port 22,80-90".
rules = {rules_value}
"""


def write_server_config(cfg: ServerConfig, path: Path) -> None:
    """Write ``cfg`` as commented TOML to ``path`` (atomically, mode 0600)."""
    path = Path(path)
    write_private_file(path, render_server_config(cfg, path.parent))


# -- init --------------------------------------------------------------------------------------


def init_server(
    directory: Path,
    *,
    public_host: str,
    api_port: int = DEFAULT_API_PORT,
    resip_port: int = DEFAULT_RESIP_PORT,
    listen_host: str = "0.0.0.0",  # noqa: S104 - see ServerConfig.listen_host
    force: bool = False,
) -> tuple[ServerConfig, Enrolment]:
    """Create ``directory`` with ``config.toml``, ``cert.pem``, ``key.pem`` and ``ca.pem``.

    Fresh random API and admin keys; the certificate names ``public_host``. Raises
    :class:`ConfigError` if a config already exists (unless ``force``) or an argument is
    invalid. Returns the loaded config and the client's enrolment.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if config_path.exists() and not force:
        raise ConfigError(f"{config_path} already exists; use --force to replace it")
    host = validate_host(public_host)
    validate_host(listen_host)
    for what, port in (("api_port", api_port), ("resip_port", resip_port)):
        if not 1 <= port <= 65535:
            raise ConfigError(f"{what} {port} out of range 1-65535")
    if api_port == resip_port:
        raise ConfigError("api_port and resip_port must differ (both use TCP)")

    try:
        ipaddress.ip_address(host)
    except ValueError:
        material = make_ca_and_server_cert([host], [])
    else:
        material = make_ca_and_server_cert([], [host])

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path, _ = write_tls_files(material, directory)
    cfg = ServerConfig(
        public_host=host,
        api_key=secrets.token_urlsafe(32),
        admin_key=secrets.token_urlsafe(32),
        tls_cert=cert_path,
        tls_key=key_path,
        listen_host=listen_host,
        api_port=api_port,
        resip_port=resip_port,
    )
    # The config is written last: if anything above failed, no half-made setup looks done.
    write_server_config(cfg, config_path)
    loaded = load_server_config(config_path)
    return loaded, loaded.enrolment()

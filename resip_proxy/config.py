"""The client's configuration file: ``~/.config/resip/proxy.toml`` (or ``--config FILE``).

Contract
--------
- :func:`init_client` turns an enrolment URI into a config file (mode 0600: it holds
  the API key), refusing to overwrite one unless ``force`` is set.
- :func:`load_client_config` reads it back as a :class:`ClientConfig`; anything
  missing, mistyped or unknown raises :class:`~resip.core.errors.ConfigError` naming the file
  and the key. The API key never appears in a message or ``repr``.
- :func:`save_fingerprint` records the certificate fingerprint learnt on first use, so
  every later start enforces it.

Layout::

    [server]
    host = "vpn.example.org"
    api_port = 31265
    udp_port = 31266
    tcp_port = 31266
    api_key = "..."
    fingerprint = "64 hex digits"   # absent: trust on first use, then written here

    [proxy]
    listen = "127.0.0.1:1080"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from resip.core.enrol import Enrolment, format_uri, parse_uri
from resip.core.errors import ConfigError

__all__ = [
    "DEFAULT_LISTEN",
    "ClientConfig",
    "default_config_path",
    "init_client",
    "load_client_config",
    "parse_listen",
    "save_fingerprint",
]

DEFAULT_LISTEN = ("127.0.0.1", 1080)


def default_config_path() -> Path:
    """``$XDG_CONFIG_HOME/resip/proxy.toml``, by default ``~/.config/resip/proxy.toml``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "resip" / "proxy.toml"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); raises :class:`ConfigError`."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
    else:
        host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"bad listen address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:1080")
    return host, int(port_text)


def _format_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A loaded client configuration."""

    path: Path
    enrolment: Enrolment
    listen: tuple[str, int] = DEFAULT_LISTEN


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_client_config(cfg: ClientConfig) -> str:
    """The TOML text of ``cfg``, with comments."""
    e = cfg.enrolment
    fp = (
        f"fingerprint = {_toml_str(e.fingerprint)}\n"
        if e.fingerprint
        else "# fingerprint: learnt on first use (trust on first use) and written here\n"
    )
    return (
        "# resip-proxy client configuration, written by `resip-proxy init`.\n"
        "# It holds the API key: keep it private (mode 0600).\n\n"
        "[server]\n"
        f"host = {_toml_str(e.host)}\n"
        f"api_port = {e.api_port}\n"
        f"udp_port = {e.udp_port}\n"
        f"tcp_port = {e.tcp_port}\n"
        f"api_key = {_toml_str(e.api_key)}\n"
        "# SHA-256 of the server's TLS certificate: every connection is pinned to it.\n"
        f"{fp}\n"
        "[proxy]\n"
        "# SOCKS5 and HTTP proxy address for local applications.\n"
        f"listen = {_toml_str(_format_listen(cfg.listen))}\n"
    )


def write_client_config(cfg: ClientConfig) -> None:
    """Write ``cfg`` to ``cfg.path`` atomically with mode 0600 (creating the directory)."""
    # Imported here: resip.server.certs loads the cryptography package, which every
    # command reading the config (connect's start-up) would otherwise pay for.
    from resip.server.certs import write_private_file

    cfg.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(cfg.path, render_client_config(cfg))


def init_client(uri: str, path: Path, *, force: bool = False) -> ClientConfig:
    """Create the config at ``path`` from an enrolment URI; raises :class:`ConfigError`."""
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; use --force to replace it")
    cfg = ClientConfig(path=path, enrolment=parse_uri(uri))
    write_client_config(cfg)
    return cfg


_KEYS: dict[str, dict[str, type]] = {
    "server": {
        "host": str,
        "api_port": int,
        "udp_port": int,
        "tcp_port": int,
        "api_key": str,
        "fingerprint": str,
    },
    "proxy": {"listen": str},
}


def load_client_config(path: Path) -> ClientConfig:
    """Read and validate the client config; raises :class:`ConfigError` naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no client config at {path}: run `resip-proxy init URI` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    for section, body in doc.items():
        if section not in _KEYS or not isinstance(body, dict):
            raise ConfigError(f"{path}: unknown section [{section}]")
        for key, value in body.items():
            kind = _KEYS[section].get(key)
            if kind is None:
                raise ConfigError(f"{path}: unknown key {section}.{key}")
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigError(f"{path}: {section}.{key} must be a {kind.__name__}")
    server = doc.get("server", {})
    for required in ("host", "api_key"):
        if required not in server:
            raise ConfigError(f"{path}: server.{required} is missing")
    enrolment = Enrolment(
        api_key=server["api_key"],
        host=server["host"],
        api_port=server.get("api_port", 31265),
        udp_port=server.get("udp_port", 31266),
        tcp_port=server.get("tcp_port", server.get("udp_port", 31266)),
        fingerprint=server.get("fingerprint"),
    )
    try:
        # The URI codec is the one strict validator of every enrolment field.
        enrolment = parse_uri(format_uri(enrolment))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    listen = parse_listen(doc.get("proxy", {}).get("listen", _format_listen(DEFAULT_LISTEN)))
    return ClientConfig(path=path, enrolment=enrolment, listen=listen)


def save_fingerprint(cfg: ClientConfig, fingerprint: str) -> ClientConfig:
    """Pin ``fingerprint`` in the config file (trust on first use); returns the new config."""
    new = replace(cfg, enrolment=replace(cfg.enrolment, fingerprint=fingerprint.lower()))
    write_client_config(new)
    return new

"""Exception hierarchy for every layer of ResIP.

Who is at fault decides the type (the h11 split):

- ``LocalProtocolError``: the caller misused the API (a bug on our side).
- ``ProtocolViolation``: an *authenticated* peer broke the protocol; the
  session closes with ``code``.
- ``WireError``: bytes from the network are malformed. Parsers named
  ``*_untrusted`` raise only this.
- ``DecryptError``: a packet did not authenticate (bad tag, unknown key,
  replay, stale epoch). Always dropped silently and counted.
"""

from __future__ import annotations


class ResipError(Exception):
    """Base of every ResIP error."""


class LocalProtocolError(ResipError):
    """The local caller used the API wrongly (for example sent on a closed channel)."""


class ProtocolViolation(ResipError):
    """An authenticated peer broke the protocol; the session must close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WireError(ResipError, ValueError):
    """Malformed bytes from the network: truncated, overlong, oversize or reserved bits set."""


class DecryptError(ResipError):
    """A packet failed authentication or the replay/epoch checks; drop it and count it."""


class ConfigError(ResipError, ValueError):
    """A configuration value is missing or invalid."""

"""The types of a session path: a UDP address or one TCP fallback connection (sans-IO).

The session core treats a path as an opaque hashable (the simulator addresses its
endpoints with plain tuples). The production adapters, client and server alike, name
every path with one of these two types, so nobody parses tuples or strings to learn
which transport a path is:

- :class:`UdpPath`: the peer's UDP address. ``host`` is the numeric address exactly as
  the socket reports it (an IPv6 scope stays in it as ``%eth0``), so ``sendto`` gets
  back the address it received from.
- :class:`TcpPath`: one framed TCP fallback connection (PROTOCOL.md §8), named by the
  owner's number for it. ``peer`` is only for display and takes no part in equality:
  two paths are the same connection exactly when their numbers are.

Both are frozen and hashable, and two paths of different types are never equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SessionPath", "TcpPath", "UdpPath", "format_address"]


def format_address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class UdpPath:
    """A peer's UDP address."""

    host: str
    port: int

    @classmethod
    def from_address(cls, address: tuple[object, ...]) -> UdpPath:
        """The path of a socket address: ``(host, port)`` or IPv6's 4-tuple."""
        return cls(str(address[0]), int(str(address[1])))

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` a socket sends to."""
        return (self.host, self.port)

    def __str__(self) -> str:
        return format_address(self.host, self.port)


@dataclass(frozen=True, slots=True)
class TcpPath:
    """One TCP fallback connection, by the owner's number for it."""

    conn: int
    #: The remote end as shown in logs and status (not compared).
    peer: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"tcp#{self.conn}({self.peer})"


#: Every path a production adapter hands a session.
SessionPath = UdpPath | TcpPath

"""Target policy of the exit server: which (address, port) a channel may connect to.

Contract:

- Pure: no sockets, no DNS. The caller resolves a host name itself, calls :meth:`Acl.check`
  on **every** address it got, and then connects to exactly the address it checked, so a
  DNS answer (or a rebinding resolver) cannot slip a private address past the policy
  (security-anchors T18).
- Rules are evaluated on the address actually connected, in order; the **first matching
  user rule wins** (dante, Squid). When no user rule matches, the built-in defaults apply:
  every special-purpose range below is denied, and anything else (the public internet) is
  allowed only when ``allow_internet`` is true.
- An address that embeds an IPv4 address (IPv4-mapped, IPv4-compatible, SIIT, 6to4,
  NAT64, Teredo) is judged on the embedded address as well, so ``::ffff:127.0.0.1`` is as
  denied as ``127.0.0.1``. A user rule matches if it matches the address as given or any
  embedded form; the defaults deny if any form is special.
- Port 0 (and anything outside 1-65535) is always denied; no rule can open it.
- An explicit ``allow`` rule can open a default-denied range (the demo needs
  ``allow 127.0.0.1/32 port 10000``).

Rule syntax, one string per rule::

    ACTION NETWORK [port PORTS]
    ACTION  = allow | deny
    NETWORK = an IPv4/IPv6 address or CIDR network (host bits must be zero), or ``any``
              (both 0.0.0.0/0 and ::/0)
    PORTS   = comma list of N or N-M, each 1-65535; omitted means every port

for example ``allow 10.0.0.0/8 port 22,80-90`` or ``deny 2001:db8::/32``. A TOML table
``{action = "allow", network = "10.0.0.0/8", ports = [22, "80-90"]}`` is accepted too.

The default ranges are listed explicitly instead of using ``ipaddress``'s ``is_private``
and friends, because those properties changed between Python releases and the policy must
not.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

from resip.core.errors import ConfigError

__all__ = [
    "DEFAULT_DENY",
    "Acl",
    "AclRule",
    "Decision",
    "embedded_ipv4",
    "normalise",
    "parse_numeric_host",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=True)


#: Ranges denied when no user rule matches, with the name used in the decision's reason.
#: Order matters only for the reason text: the narrower name is listed before the wider.
DEFAULT_DENY: tuple[tuple[IPNetwork, str], ...] = (
    # -- IPv4 --
    (_net("0.0.0.0/8"), "this network (the kernel treats 0.0.0.0 as local)"),
    (_net("10.0.0.0/8"), "private (RFC 1918)"),
    (_net("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_net("127.0.0.0/8"), "loopback"),
    (_net("169.254.0.0/16"), "link-local (includes cloud metadata 169.254.169.254)"),
    (_net("172.16.0.0/12"), "private (RFC 1918)"),
    (_net("192.0.0.0/24"), "IETF protocol assignments"),
    (_net("192.0.2.0/24"), "documentation (TEST-NET-1)"),
    # Deprecated 6to4 relay anycast (RFC 7526): traffic there is handed to unknown relays.
    (_net("192.88.99.0/24"), "6to4 relay anycast (deprecated)"),
    (_net("192.168.0.0/16"), "private (RFC 1918)"),
    (_net("198.18.0.0/15"), "benchmarking"),
    (_net("198.51.100.0/24"), "documentation (TEST-NET-2)"),
    (_net("203.0.113.0/24"), "documentation (TEST-NET-3)"),
    (_net("224.0.0.0/4"), "multicast"),
    (_net("255.255.255.255/32"), "limited broadcast"),
    (_net("240.0.0.0/4"), "reserved"),
    # -- IPv6 --
    (_net("::/128"), "unspecified"),
    (_net("::1/128"), "loopback"),
    # Local-use NAT64 (RFC 8215) translates into the operator's own, often private, IPv4
    # space, and its embedding is prefix-length dependent, so it is denied outright.
    (_net("64:ff9b:1::/48"), "local-use NAT64"),
    (_net("100::/64"), "discard-only"),
    (_net("2001:2::/48"), "benchmarking"),
    (_net("2001:db8::/32"), "documentation"),
    (_net("3fff::/20"), "documentation"),
    (_net("fc00::/7"), "unique local"),
    (_net("fe80::/10"), "link-local"),
    (_net("fec0::/10"), "site-local (deprecated)"),
    (_net("ff00::/8"), "multicast"),
)

_MAPPED = _net("::ffff:0:0/96")
_SIIT = _net("::ffff:0:0:0/96")  # RFC 2765 "IPv4-translated" ::ffff:0:a.b.c.d
_COMPAT = _net("::/96")
_SIXTOFOUR = _net("2002::/16")
_NAT64 = _net("64:ff9b::/96")
_TEREDO = _net("2001::/32")
_V4_MASK = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class AclRule:
    """One user rule: ``action`` applies to ``network`` on ``ports`` (``None`` = all ports)."""

    action: Literal["allow", "deny"]
    network: IPNetwork
    ports: tuple[tuple[int, int], ...] | None = None

    def matches_port(self, port: int) -> bool:
        """Whether ``port`` is one of this rule's ports."""
        if self.ports is None:
            return True
        return any(lo <= port <= hi for lo, hi in self.ports)

    def __str__(self) -> str:
        if self.ports is None:
            return f"{self.action} {self.network}"
        spec = ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ports)
        return f"{self.action} {self.network} port {spec}"


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of :meth:`Acl.check`; ``reason`` is for logs and never contains secrets."""

    allowed: bool
    reason: str


class Acl:
    """An ordered list of user rules followed by the built-in defaults."""

    __slots__ = ("_allow_internet", "_rules")

    def __init__(self, rules: Iterable[AclRule] = (), *, allow_internet: bool = True) -> None:
        self._rules = tuple(rules)
        self._allow_internet = allow_internet

    @property
    def rules(self) -> tuple[AclRule, ...]:
        """The user rules, in evaluation order."""
        return self._rules

    @property
    def allow_internet(self) -> bool:
        """Whether addresses matched by no rule and no default range are allowed."""
        return self._allow_internet

    def __repr__(self) -> str:
        rules = [str(r) for r in self._rules]
        return f"Acl(rules={rules!r}, allow_internet={self._allow_internet})"

    @classmethod
    def from_config(
        cls,
        entries: Sequence[str | Mapping[str, object]],
        *,
        allow_internet: bool = True,
    ) -> Acl:
        """Build an ACL from rule strings (or TOML tables); see the module docstring.

        Raises :class:`ConfigError` naming the offending entry and its index.
        """
        if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
            raise ConfigError("ACL rules must be a list of rule strings")
        rules: list[AclRule] = []
        for index, entry in enumerate(entries):
            try:
                if isinstance(entry, str):
                    rules.extend(_parse_rule_text(entry))
                elif isinstance(entry, Mapping):
                    rules.extend(_parse_rule_table(entry))
                else:
                    raise ConfigError("must be a string like 'allow 10.0.0.0/8 port 22'")
            except ConfigError as exc:
                raise ConfigError(f"ACL rule {index} ({entry!r}): {exc}") from None
        return cls(rules, allow_internet=allow_internet)

    def check(self, addr: IPAddress, port: int) -> Decision:
        """Decide whether a connection to ``addr``:``port`` is allowed.

        ``addr`` must be the address that will actually be connected (after DNS).
        """
        if not 1 <= port <= 65535:
            return Decision(False, f"port {port} is never allowed")
        forms = _forms(addr)
        for index, rule in enumerate(self._rules):
            if rule.matches_port(port) and any(form in rule.network for form in forms):
                return Decision(rule.action == "allow", f"rule {index}: {rule}")
        for form in forms:
            for network, name in DEFAULT_DENY:
                if form in network:
                    shown = "" if form == addr else f" (embedded {form})"
                    return Decision(False, f"default deny: {network} {name}{shown}")
        if self._allow_internet:
            return Decision(True, "default: public internet")
        return Decision(False, "default: no rule allows it and allow_internet is off")


# -- rule parsing ---------------------------------------------------------------------------

_ACTIONS: dict[str, Literal["allow", "deny"]] = {"allow": "allow", "deny": "deny"}
_ANY = (_net("0.0.0.0/0"), _net("::/0"))


def _parse_rule_text(text: str) -> list[AclRule]:
    words = text.split()
    if len(words) not in (2, 4):
        raise ConfigError("expected 'allow|deny NETWORK [port PORTS]'")
    if len(words) == 4 and words[2].lower() != "port":
        raise ConfigError(f"expected 'port' after the network, got {words[2]!r}")
    ports = _parse_ports(words[3]) if len(words) == 4 else None
    return _make_rules(words[0], words[1], ports)


def _parse_rule_table(table: Mapping[str, object]) -> list[AclRule]:
    unknown = set(table) - {"action", "network", "ports"}
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)}; expected action, network, ports")
    action, network = table.get("action"), table.get("network")
    if not isinstance(action, str) or not isinstance(network, str):
        raise ConfigError("'action' and 'network' must be strings")
    raw_ports = table.get("ports")
    ports: tuple[tuple[int, int], ...] | None
    if raw_ports is None:
        ports = None
    elif isinstance(raw_ports, str):
        ports = _parse_ports(raw_ports)
    elif isinstance(raw_ports, int) and not isinstance(raw_ports, bool):
        ports = _parse_ports(str(raw_ports))
    elif isinstance(raw_ports, list) and raw_ports:
        items = []
        for item in raw_ports:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise ConfigError(f"bad port {item!r}")
            items.append(str(item))
        ports = _parse_ports(",".join(items))
    else:
        raise ConfigError("'ports' must be a string, an integer or a non-empty list")
    return _make_rules(action, network, ports)


def _make_rules(
    action_text: str, network_text: str, ports: tuple[tuple[int, int], ...] | None
) -> list[AclRule]:
    action = _ACTIONS.get(action_text.lower())
    if action is None:
        raise ConfigError(f"action must be 'allow' or 'deny', got {action_text!r}")
    if network_text.lower() == "any":
        return [AclRule(action, net, ports) for net in _ANY]
    try:
        network = ipaddress.ip_network(network_text, strict=True)
    except ValueError as exc:
        raise ConfigError(f"bad network {network_text!r}: {exc}") from None
    return [AclRule(action, network, ports)]


_PORT_ITEM = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")


def _parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for item in text.split(","):
        m = _PORT_ITEM.match(item.strip())
        if m is None:
            raise ConfigError(f"bad port {item!r}: expected N or N-M")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if not 1 <= lo <= hi <= 65535:
            raise ConfigError(f"bad port range {item!r}: need 1 <= N <= M <= 65535")
        ranges.append((lo, hi))
    return tuple(ranges)


# -- address forms ---------------------------------------------------------------------------


def embedded_ipv4(addr: IPAddress) -> tuple[IPv4Address, ...]:
    """Every IPv4 address a packet to ``addr`` may end up at, outermost first.

    Empty for IPv4 addresses and for IPv6 addresses that embed none. Teredo yields the
    client (the real destination) and then the Teredo server.
    """
    if isinstance(addr, IPv4Address):
        return ()
    plain = IPv6Address(int(addr))  # drop any %scope: it does not change the destination
    low32 = IPv4Address(int(plain) & _V4_MASK)
    if plain in _MAPPED or plain in _SIIT or plain in _NAT64:
        return (low32,)
    if plain in _COMPAT:
        # :: and ::1 are themselves (unspecified, loopback), not IPv4-compatible forms.
        return () if int(plain) <= 1 else (low32,)
    if plain in _SIXTOFOUR:
        return (IPv4Address((int(plain) >> 80) & _V4_MASK),)
    if plain in _TEREDO:
        server = IPv4Address((int(plain) >> 64) & _V4_MASK)
        client = IPv4Address(~int(plain) & _V4_MASK)  # stored inverted (RFC 4380)
        return (client, server)
    return ()


def normalise(addr: IPAddress) -> IPAddress:
    """The address the IPv4 rules should judge ``addr`` by.

    Unwraps IPv4-mapped, IPv4-compatible, SIIT, 6to4, NAT64 (64:ff9b::/96) and Teredo
    (the client address) into the embedded IPv4 address; drops an IPv6 scope id; returns
    anything else unchanged.
    """
    embedded = embedded_ipv4(addr)
    if embedded:
        return embedded[0]
    if isinstance(addr, IPv6Address) and addr.scope_id is not None:
        return IPv6Address(int(addr))
    return addr


def _forms(addr: IPAddress) -> tuple[IPAddress, ...]:
    if isinstance(addr, IPv4Address):
        return (addr,)
    return (IPv6Address(int(addr)), *embedded_ipv4(addr))


# -- numeric host spellings -------------------------------------------------------------------

# One inet_aton part: hex (0x), octal (leading 0) or decimal.
_AT_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
# Bits left for the last part when there are 1, 2, 3 or 4 parts (inet_aton(3)).
_LAST_PART_BITS = {1: 32, 2: 24, 3: 16, 4: 8}


def _parse_inet_aton(text: str) -> IPv4Address | None:
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if _AT_PART.fullmatch(part) is None:
            return None
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:], 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    last_bits = _LAST_PART_BITS[len(values)]
    if any(v > 0xFF for v in values[:-1]) or values[-1] >= 1 << last_bits:
        return None
    number = 0
    for v in values[:-1]:
        number = (number << 8) | v
    return IPv4Address((number << last_bits) | values[-1])


def parse_numeric_host(text: str) -> IPAddress | None:
    """The address a numeric host spelling denotes, or ``None`` for a host name.

    Accepts every spelling the server's ``inet_aton``/``getaddrinfo`` would treat as an
    address: dotted quad, and the inet_aton short, octal and hex forms (``127.1``,
    ``0177.0.0.1``, ``0x7f.1``, ``2130706433``, ``0x7f000001``); IPv6 with or without
    brackets, with an embedded IPv4 (``::ffff:127.0.0.1``) and with a zone (``fe80::1%eth0``,
    the zone dropped). Surrounding whitespace and one trailing dot are ignored, and like
    glibc's ``inet_aton`` anything after internal whitespace is too, so such a string can
    never be mistaken for a harmless name. The result still has to go through
    :meth:`Acl.check`.
    """
    host = text.strip()
    if not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        host = host.split("%", 1)[0]
        try:
            return IPv6Address(host)
        except ValueError:
            return None
    host = host.split(None, 1)[0]
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    return _parse_inet_aton(host)

"""The server's target policy: special ranges, embedded forms, numeric spellings, rules."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address
from ipaddress import ip_network as _net

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.errors import ConfigError
from resip.server.acl import (
    DEFAULT_DENY,
    Acl,
    AclRule,
    embedded_ipv4,
    normalise,
    parse_numeric_host,
)

DEMO = Acl.from_config(["allow 127.0.0.1/32 port 10000"])
DEFAULT = Acl.from_config([])


def _target(text: str) -> IPv4Address | IPv6Address:
    addr = parse_numeric_host(text)
    assert addr is not None, f"{text!r} should be recognised as numeric"
    return addr


# Every special-purpose range, with an address inside it and the edges where it helps.
DENIED_BY_DEFAULT = [
    "0.0.0.0",
    "0.255.255.255",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",
    "100.127.255.255",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.0.1",
    "192.168.255.255",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf:ffff::1",
    "fec0::1",
    "ff02::1",
    "ff0e::fb",
    "2001:db8::1",
    "2001:db8:ffff::1",
    "100::1",
    "64:ff9b:1::a00:1",
    "2001:2::1",
    "3fff::1",
    # IPv4-mapped, IPv4-compatible, SIIT, 6to4, NAT64 and Teredo wrapping special v4.
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:10.1.2.3",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "::127.0.0.1",
    "::192.168.1.1",
    "::ffff:0:127.0.0.1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101:1::1",
    "64:ff9b::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::10.0.0.1",
    # Teredo: server 65.54.227.120, client 127.0.0.1 stored inverted (80ff:fffe).
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    # Teredo whose server part is special (client public 8.8.8.8 = f7f7:f7f7 inverted).
    "2001:0:a00:1:8000:63bf:f7f7:f7f7",
    "fe80::1%eth0",
    "[::1]",
]

ALLOWED_BY_DEFAULT = [
    "8.8.8.8",
    "1.1.1.1",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001::200e",
    "::ffff:8.8.8.8",
    "2002:808:808::1",
    "64:ff9b::8.8.8.8",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
]


@pytest.mark.parametrize("text", DENIED_BY_DEFAULT)
def test_special_ranges_denied_by_default(text: str) -> None:
    decision = DEFAULT.check(_target(text), 443)
    assert not decision.allowed, decision
    assert decision.reason.startswith("default deny"), decision


@pytest.mark.parametrize("text", ALLOWED_BY_DEFAULT)
def test_public_addresses_allowed_by_default(text: str) -> None:
    decision = DEFAULT.check(_target(text), 443)
    assert decision.allowed, decision
    assert decision.reason == "default: public internet"


@pytest.mark.parametrize("text", ALLOWED_BY_DEFAULT)
def test_public_addresses_denied_without_allow_internet(text: str) -> None:
    acl = Acl.from_config([], allow_internet=False)
    decision = acl.check(_target(text), 443)
    assert not decision.allowed
    assert "allow_internet is off" in decision.reason


def test_every_default_range_has_a_table_case() -> None:
    # Adding a range to DEFAULT_DENY without a test case should fail here.
    covered = {
        net
        for net, _ in DEFAULT_DENY
        for text in DENIED_BY_DEFAULT
        if _target(text) in net or IPv6Address(int(_target(text))) in net
    }
    assert covered == {net for net, _ in DEFAULT_DENY}


@pytest.mark.parametrize(
    "spelling",
    [
        "2130706433",
        "0x7f.1",
        "0x7F.0.0.1",
        "0177.0.0.1",
        "0177.1",
        "127.1",
        "127.0.1",
        "0x7f000001",
        "017700000001",
        "127.0.0.1.",
        " 127.0.0.1 ",
        "[::1]",
        "::ffff:127.0.0.1",
        "::ffff:7f00:1",
        "::127.0.0.1",
        "[::ffff:127.0.0.1]",
        "0:0:0:0:0:ffff:7f00:0001",
    ],
)
def test_numeric_spellings_of_loopback(spelling: str) -> None:
    addr = _target(spelling)
    assert normalise(addr) in (IPv4Address("127.0.0.1"), IPv6Address("::1"))
    assert not DEFAULT.check(addr, 80).allowed
    # The demo's allow rule is about 127.0.0.1:10000, whatever spelling reached it.
    assert DEMO.check(addr, 10000).allowed == (normalise(addr) == IPv4Address("127.0.0.1"))


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("0", "0.0.0.0"),
        ("0x0", "0.0.0.0"),
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("169.16689662", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("4294967295", "255.255.255.255"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25eth0]", "fe80::1"),
        ("1.2.3.4 trailing", "1.2.3.4"),
    ],
)
def test_parse_numeric_host_values(spelling: str, expected: str) -> None:
    assert parse_numeric_host(spelling) == ip_address(expected)


@pytest.mark.parametrize(
    "name",
    [
        "example.com",
        "localhost",
        "a.b.c.d",
        "1.2.3.4.5",
        "4294967296",
        "08.0.0.1",
        "0x",
        "0x1g.1",
        "256.1.1.1",
        "1..2",
        "",
        "   ",
        "[example.com]",
        "::g",
        "1e3",
        "xn--80ak6aa92e.com",
    ],
)
def test_parse_numeric_host_rejects_names(name: str) -> None:
    assert parse_numeric_host(name) is None


_ATON_CHARS = st.sampled_from(list("0123456789abcdefxX.")) | st.sampled_from(["0x", "0", "."])


@settings(max_examples=400, deadline=None)
@given(st.lists(_ATON_CHARS, min_size=1, max_size=14).map("".join))
def test_parse_numeric_host_agrees_with_libc_inet_aton(text: str) -> None:
    try:
        libc = IPv4Address(socket.inet_aton(text))
    except OSError:
        libc = None
    ours = parse_numeric_host(text)
    if libc is not None:
        assert ours == libc
    elif not text.endswith("."):
        # We accept one trailing dot on purpose (a resolver may); otherwise no extras.
        assert ours is None


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["mapped", "compat", "siit", "6to4", "nat64"]))
def test_embedded_forms_judged_like_the_ipv4_address(n: int, form: str) -> None:
    v4 = IPv4Address(n)
    wrapped = {
        "mapped": IPv6Address((0xFFFF << 32) | n),
        "compat": IPv6Address(n),
        "siit": IPv6Address((0xFFFF << 48) | n),
        "6to4": IPv6Address((0x2002 << 112) | (n << 80)),
        "nat64": IPv6Address((0x64FF9B << 96) | n),
    }[form]
    if form == "compat" and n <= 1:
        return  # :: and ::1 are themselves, and denied on their own account
    assert normalise(wrapped) == v4
    assert DEFAULT.check(wrapped, 443).allowed == DEFAULT.check(v4, 443).allowed


def test_normalise_teredo_and_scope() -> None:
    teredo = IPv6Address("2001:0:4136:e378:8000:63bf:3fff:fdd2")
    assert normalise(teredo) == IPv4Address("192.0.2.45")
    assert embedded_ipv4(teredo) == (IPv4Address("192.0.2.45"), IPv4Address("65.54.227.120"))
    assert normalise(IPv6Address("fe80::1%eth0")) == IPv6Address("fe80::1")
    unscoped = normalise(IPv6Address("fe80::1%eth0"))
    assert isinstance(unscoped, IPv6Address)
    assert unscoped.scope_id is None
    assert normalise(IPv6Address("2606:4700::1")) == IPv6Address("2606:4700::1")
    assert normalise(IPv4Address("10.0.0.1")) == IPv4Address("10.0.0.1")
    assert normalise(IPv6Address("::1")) == IPv6Address("::1")


def test_deny_reason_names_the_range() -> None:
    reason = DEFAULT.check(ip_address("169.254.169.254"), 80).reason
    assert "169.254.0.0/16" in reason
    assert "metadata" in reason
    mapped = DEFAULT.check(ip_address("::ffff:10.0.0.1"), 80).reason
    assert "10.0.0.0/8" in mapped
    assert "embedded 10.0.0.1" in mapped


# -- ports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_invalid_ports_always_denied_even_with_allow_any(port: int) -> None:
    acl = Acl.from_config(["allow any"])
    decision = acl.check(ip_address("8.8.8.8"), port)
    assert not decision.allowed
    assert str(port) in decision.reason


@pytest.mark.parametrize(
    ("addr", "port", "allowed"),
    [
        ("10.1.2.3", 22, True),
        ("10.1.2.3", 80, True),
        ("10.1.2.3", 85, True),
        ("10.1.2.3", 90, True),
        ("10.1.2.3", 79, False),
        ("10.1.2.3", 91, False),
        ("10.1.2.3", 23, False),
        ("11.1.2.3", 25, False),
        ("11.1.2.3", 24, True),
        ("2606:4700::1", 25, False),
        ("::ffff:11.1.2.3", 25, False),
        ("2001:db8::5", 443, False),
        ("2001:db9::5", 443, True),
    ],
)
def test_port_rules(addr: str, port: int, allowed: bool) -> None:
    acl = Acl.from_config(
        ["allow 10.0.0.0/8 port 22,80-90", "deny any port 25", "deny 2001:db8::/32"]
    )
    assert acl.check(ip_address(addr), port).allowed is allowed


def test_first_match_wins() -> None:
    deny_first = Acl.from_config(["deny 8.8.8.0/24", "allow 8.8.8.8/32"])
    allow_first = Acl.from_config(["allow 8.8.8.8/32", "deny 8.8.8.0/24"])
    target = ip_address("8.8.8.8")
    assert not deny_first.check(target, 53).allowed
    assert deny_first.check(target, 53).reason == "rule 0: deny 8.8.8.0/24"
    assert allow_first.check(target, 53).allowed
    assert allow_first.check(target, 53).reason == "rule 0: allow 8.8.8.8/32"
    assert not allow_first.check(ip_address("8.8.8.9"), 53).allowed


def test_user_deny_applies_to_embedded_forms() -> None:
    acl = Acl.from_config(["deny 93.184.0.0/16"])
    for text in [
        "93.184.216.34",
        "::ffff:93.184.216.34",
        "2002:5db8:d822::1",
        "64:ff9b::5db8:d822",
    ]:
        assert not acl.check(ip_address(text), 443).allowed, text
    assert acl.check(ip_address("93.185.0.1"), 443).allowed


@pytest.mark.parametrize(
    ("addr", "port", "allowed"),
    [
        ("127.0.0.1", 10000, True),
        ("::ffff:127.0.0.1", 10000, True),
        ("127.0.0.1", 10001, False),
        ("127.0.0.1", 9999, False),
        ("127.0.0.1", 22, False),
        ("127.0.0.2", 10000, False),
        ("::1", 10000, False),
        ("10.0.0.1", 10000, False),
        ("169.254.169.254", 10000, False),
        ("8.8.8.8", 10000, True),
    ],
)
def test_demo_allow_opens_only_loopback_10000(addr: str, port: int, allowed: bool) -> None:
    assert DEMO.check(ip_address(addr), port).allowed is allowed


def test_allow_rule_opens_private_range_even_without_internet() -> None:
    acl = Acl.from_config(["allow 192.168.0.0/16 port 443"], allow_internet=False)
    assert acl.check(ip_address("192.168.1.10"), 443).allowed
    assert not acl.check(ip_address("192.168.1.10"), 80).allowed
    assert not acl.check(ip_address("8.8.8.8"), 443).allowed


# -- configuration syntax -----------------------------------------------------------------------


def test_rule_parsing_forms() -> None:
    acl = Acl.from_config(
        [
            "allow 127.0.0.1/32 port 10000",
            "DENY 0.0.0.0/0 PORT 25",
            "allow 10.0.0.0/8 port 22,80-90",
            "deny 2001:db8::/32",
            "allow 192.0.2.7",
            {"action": "allow", "network": "fd00::/8", "ports": [22, "80-81"]},
            {"action": "deny", "network": "any", "ports": 23},
        ]
    )
    assert acl.rules == (
        AclRule("allow", _net("127.0.0.1/32"), ((10000, 10000),)),
        AclRule("deny", _net("0.0.0.0/0"), ((25, 25),)),
        AclRule("allow", _net("10.0.0.0/8"), ((22, 22), (80, 90))),
        AclRule("deny", _net("2001:db8::/32"), None),
        AclRule("allow", _net("192.0.2.7/32"), None),
        AclRule("allow", _net("fd00::/8"), ((22, 22), (80, 81))),
        AclRule("deny", _net("0.0.0.0/0"), ((23, 23),)),
        AclRule("deny", _net("::/0"), ((23, 23),)),
    )
    assert str(acl.rules[2]) == "allow 10.0.0.0/8 port 22,80-90"


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "allow",
        "permit 10.0.0.0/8",
        "allow 10.0.0.0/33",
        "allow 10.1.2.3/8",
        "allow 10.0.0.0/8 port",
        "allow 10.0.0.0/8 ports 22",
        "allow 10.0.0.0/8 port 0",
        "allow 10.0.0.0/8 port 65536",
        "allow 10.0.0.0/8 port 90-80",
        "allow 10.0.0.0/8 port 22,",
        "allow 10.0.0.0/8 port 22;80",
        "allow 10.0.0.0/8 port -5",
        "allow example.com",
        "allow 127.0.0.1:10000",
        "allow 10.0.0.0/8 port 22 extra",
        "allow 2001:db8::/129",
        "allow 10.0.0.* ",
    ],
)
def test_rule_syntax_errors_name_the_entry(entry: str) -> None:
    with pytest.raises(ConfigError) as info:
        Acl.from_config(["allow 8.8.8.8/32", entry])
    assert repr(entry) in str(info.value)
    assert "rule 1" in str(info.value)


@pytest.mark.parametrize(
    "entry",
    [
        {"action": "allow"},
        {"action": "maybe", "network": "10.0.0.0/8"},
        {"action": "allow", "network": "10.0.0.0/8", "ports": True},
        {"action": "allow", "network": "10.0.0.0/8", "ports": []},
        {"action": "allow", "network": "10.0.0.0/8", "port": 22},
        42,
    ],
)
def test_rule_table_errors(entry: object) -> None:
    with pytest.raises(ConfigError, match="rule 0"):
        Acl.from_config([entry])  # type: ignore[list-item]


def test_rules_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match="list"):
        Acl.from_config("allow 10.0.0.0/8")

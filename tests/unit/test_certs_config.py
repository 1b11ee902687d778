"""TLS material, server config files, ``init_server`` and enrolment URIs."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import ssl
import stat
import tomllib
from ipaddress import ip_address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from hypothesis import given, settings
from hypothesis import strategies as st

from resip.core.enrol import Enrolment, format_uri, parse_uri
from resip.core.errors import ConfigError
from resip.server.acl import Acl
from resip.server.certs import (
    TlsMaterial,
    cert_fingerprint,
    make_ca_and_server_cert,
    write_private_file,
)
from resip.server.config import (
    ServerConfig,
    init_server,
    load_server_config,
    write_server_config,
)

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _chain(cfg: ServerConfig) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(cfg.tls_cert.read_bytes())


def _served_leaf_der(cfg: ServerConfig, ca_file: Path, server_hostname: str) -> bytes:
    """Run a real TLS handshake in memory (no sockets) and return the leaf the client saw."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values()), "handshake did not finish"
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return der


# -- init / load round trip ---------------------------------------------------------------------


def test_init_then_load_round_trips(tmp_path: Path) -> None:
    directory = tmp_path / "srv"
    cfg, enrolment = init_server(directory, public_host="resip.example.net")
    assert load_server_config(directory / "config.toml") == cfg
    assert cfg.public_host == "resip.example.net"
    assert (cfg.api_port, cfg.resip_port, cfg.listen_host) == (31265, 31266, "0.0.0.0")
    assert cfg.tls_cert == (directory / "cert.pem").resolve()
    assert cfg.tls_key == (directory / "key.pem").resolve()
    assert len(cfg.api_key) >= 40
    assert cfg.api_key != cfg.admin_key
    assert enrolment.api_key == cfg.api_key
    assert enrolment.host == "resip.example.net"
    assert (enrolment.api_port, enrolment.udp_port, enrolment.tcp_port) == (31265, 31266, 31266)
    assert parse_uri(format_uri(enrolment)) == enrolment
    # The default policy: internet yes, loopback no.
    acl = cfg.build_acl()
    assert acl.check(ip_address("8.8.8.8"), 443).allowed
    assert not acl.check(ip_address("127.0.0.1"), 443).allowed


def test_write_then_load_round_trips_every_field(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path / "a", public_host="2001:db8::7", listen_host="::")
    changed = ServerConfig(
        public_host="2001:db8::7",
        api_key='weird"key\\with-quotes-and-more',
        admin_key="another-long-admin-key-value",
        tls_cert=cfg.tls_cert,
        tls_key=cfg.tls_key,
        listen_host="::",
        api_port=8443,
        resip_port=9000,
        acl=("allow 127.0.0.1/32 port 10000", "deny any port 25"),
        allow_internet=False,
        max_sessions=7,
        max_channels_per_session=9,
        idle_timeout_hours=72.5,
        session_buffer_bytes=1 << 20,
        log_level="debug",
    )
    # Written to another directory, so the cert paths must be written absolute.
    out = tmp_path / "b" / "server.toml"
    out.parent.mkdir()
    write_server_config(changed, out)
    assert _mode(out) == 0o600
    assert load_server_config(out) == changed
    assert "#" in out.read_text()  # commented, for humans


def test_relative_cert_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    init_server(tmp_path / "orig", public_host="example.org")
    text = (tmp_path / "orig" / "config.toml").read_text()
    assert 'cert = "cert.pem"' in text
    moved = tmp_path / "elsewhere" / "moved"
    shutil.move(tmp_path / "orig", moved)
    cfg = load_server_config(moved / "config.toml")
    assert cfg.tls_cert == (moved / "cert.pem").resolve()


def test_file_modes(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path / "srv", public_host="example.org")
    assert _mode(cfg.tls_key) == 0o600
    assert _mode(tmp_path / "srv" / "config.toml") == 0o600
    assert _mode(cfg.tls_cert) == 0o644
    assert _mode(tmp_path / "srv") == 0o700


def test_write_private_file_tightens_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_text("old")
    target.chmod(0o644)
    write_private_file(target, "new")
    assert _mode(target) == 0o600
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temp file left behind


def test_init_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    cfg, enrolment = init_server(tmp_path, public_host="example.org")
    with pytest.raises(ConfigError, match="already exists"):
        init_server(tmp_path, public_host="example.org")
    assert load_server_config(tmp_path / "config.toml") == cfg  # untouched
    cfg2, enrolment2 = init_server(tmp_path, public_host="example.org", force=True)
    assert cfg2.api_key != cfg.api_key
    assert enrolment2.fingerprint != enrolment.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"public_host": "bad host"}, "bad host"),
        ({"public_host": ""}, "bad host"),
        ({"public_host": "example.org", "api_port": 0}, "api_port"),
        ({"public_host": "example.org", "resip_port": 70000}, "resip_port"),
        ({"public_host": "example.org", "api_port": 5000, "resip_port": 5000}, "differ"),
    ],
)
def test_init_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        init_server(tmp_path / "x", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "x" / "config.toml").exists()


# -- certificates ---------------------------------------------------------------------------------


def test_uri_fingerprint_is_sha256_of_served_leaf(tmp_path: Path) -> None:
    cfg, enrolment = init_server(tmp_path, public_host="resip.example.net")
    served = _served_leaf_der(cfg, tmp_path / "ca.pem", "resip.example.net")
    assert parse_uri(format_uri(enrolment)).fingerprint == hashlib.sha256(served).hexdigest()
    assert cert_fingerprint(served) == enrolment.fingerprint
    assert cert_fingerprint(cfg.tls_cert.read_bytes()) == enrolment.fingerprint


def test_tls_handshake_rejects_other_host_name(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path, public_host="resip.example.net")
    with pytest.raises(ssl.SSLCertVerificationError):
        _served_leaf_der(cfg, tmp_path / "ca.pem", "other.example.net")


def test_chain_verifies_for_dns_name(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path, public_host="resip.example.net")
    leaf, ca = _chain(cfg)
    verifier = (
        PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("resip.example.net"))
    )
    chain = verifier.verify(leaf, [])
    assert chain[0] == leaf
    assert chain[-1] == ca
    wrong = PolicyBuilder().store(Store([ca])).build_server_verifier(x509.DNSName("evil.test"))
    with pytest.raises(VerificationError):
        wrong.verify(leaf, [])


def test_chain_verifies_for_ip_address(tmp_path: Path) -> None:
    cfg, enrolment = init_server(tmp_path, public_host="2001:db8::7")
    assert format_uri(enrolment).startswith(f"resip://{enrolment.api_key}@[2001:db8::7]:31265/")
    leaf, ca = _chain(cfg)
    verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .build_server_verifier(x509.IPAddress(ip_address("2001:db8::7")))
    )
    assert verifier.verify(leaf, [])[0] == leaf
    # A CA from another init does not vouch for this leaf.
    _, other_ca = x509.load_pem_x509_certificates(
        make_ca_and_server_cert([], ["2001:db8::7"]).chain_pem
    )
    foreign = (
        PolicyBuilder()
        .store(Store([other_ca]))
        .build_server_verifier(x509.IPAddress(ip_address("2001:db8::7")))
    )
    with pytest.raises(VerificationError):
        foreign.verify(leaf, [])


def test_certificate_contents() -> None:
    now = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    material = make_ca_and_server_cert(["a.example", "b.example"], ["192.0.2.1", "::1"], now=now)
    ca = x509.load_pem_x509_certificate(material.ca_cert_pem)
    leaf = x509.load_pem_x509_certificate(material.server_cert_pem)

    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.not_valid_after_utc - now == dt.timedelta(days=3650)

    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ip_address("192.0.2.1"), ip_address("::1")]
    assert leaf.not_valid_after_utc - now == dt.timedelta(days=825)
    assert leaf.not_valid_before_utc <= now
    assert leaf.issuer == ca.subject

    key = serialization.load_pem_private_key(material.server_key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key.public_key() == leaf.public_key()


def test_make_cert_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        make_ca_and_server_cert([], [])
    with pytest.raises(ConfigError, match="IP address"):
        make_ca_and_server_cert([], ["not-an-ip"])


def test_fingerprint_pem_der_and_garbage() -> None:
    material = make_ca_and_server_cert(["x.example"], [])
    leaf = x509.load_pem_x509_certificate(material.server_cert_pem)
    der = leaf.public_bytes(serialization.Encoding.DER)
    expected = hashlib.sha256(der).hexdigest()
    assert cert_fingerprint(der) == expected
    assert cert_fingerprint(material.chain_pem) == expected  # leaf first, CA ignored
    assert cert_fingerprint(material.server_cert_pem.decode()) == expected
    assert cert_fingerprint(leaf) == expected
    assert material.fingerprint == expected
    assert cert_fingerprint(material.ca_cert_pem) != expected
    with pytest.raises(ConfigError):
        cert_fingerprint(b"not a certificate")
    with pytest.raises(ConfigError):
        cert_fingerprint(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_secrets_not_in_repr(tmp_path: Path) -> None:
    cfg, enrolment = init_server(tmp_path, public_host="example.org")
    material = make_ca_and_server_cert(["x.example"], [])
    assert cfg.api_key not in repr(cfg)
    assert cfg.admin_key not in repr(cfg)
    assert cfg.api_key not in repr(enrolment)
    assert isinstance(material, TlsMaterial)
    assert b"PRIVATE" not in repr(material).encode()


# -- load errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("api_port = 31265", 'api_port = "31265"', "[server] api_port"),
        ("api_port = 31265", "api_port = 0", "[server] api_port"),
        ("resip_port = 31266", "resip_port = 65536", "[server] resip_port"),
        ("resip_port = 31266", "resip_port = 31265", "[server] resip_port"),
        ("resip_port = 31266", "resip_port = true", "[server] resip_port"),
        ('public_host = "example.org"', 'public_host = "no such host"', "[server] public_host"),
        ('public_host = "example.org"', "", "[server] public_host"),
        ('log_level = "info"', 'log_level = "loud"', "[server] log_level"),
        ('listen_host = "0.0.0.0"', "listen_host = 0", "[server] listen_host"),
        ("api_key = ", "api_kee = ", "[auth] api_kee"),
        ("admin_key = ", "#", "[auth] admin_key"),
        ('cert = "cert.pem"', 'cert = "missing.pem"', "[tls] cert"),
        ('key = "key.pem"', 'key = ""', "[tls] key"),
        ("max_sessions = 1000", "max_sessions = -1", "[limits] max_sessions"),
        ("max_sessions = 1000", "max_sessions = 1.5", "[limits] max_sessions"),
        ("idle_timeout_hours = 96.0", "idle_timeout_hours = 0", "[limits] idle_timeout_hours"),
        ("idle_timeout_hours = 96.0", "idle_timeout_hours = nan", "[limits] idle_timeout_hours"),
        ("idle_timeout_hours = 96.0", 'idle_timeout_hours = "4d"', "[limits] idle_timeout_hours"),
        ("session_buffer_bytes = 67108864", "session_buffer_bytes = 1", "[limits] session_buf"),
        ("allow_internet = true", 'allow_internet = "yes"', "[acl] allow_internet"),
        ("rules = []", 'rules = ["allow 10.0.0.0/33"]', "[acl] rules"),
        ("rules = []", 'rules = "allow 10.0.0.0/8"', "[acl] rules"),
        ("rules = []", "rules = []\n[extra]\nx = 1", "[extra]"),
        ("[limits]", "[limit]", "[limit]"),
    ],
)
def test_load_errors_name_file_and_key(tmp_path: Path, old: str, new: str, named: str) -> None:
    init_server(tmp_path, public_host="example.org")
    path = tmp_path / "config.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_server_config(path)
    message = str(info.value)
    assert str(path) in message
    assert named in message


def test_load_short_key_error_does_not_echo_it(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path, public_host="example.org")
    path = tmp_path / "config.toml"
    path.write_text(path.read_text().replace(cfg.api_key, "short-secret"))
    with pytest.raises(ConfigError, match=r"\[auth\] api_key") as info:
        load_server_config(path)
    assert "short-secret" not in str(info.value)


def test_load_same_keys_rejected(tmp_path: Path) -> None:
    cfg, _ = init_server(tmp_path, public_host="example.org")
    path = tmp_path / "config.toml"
    path.write_text(path.read_text().replace(cfg.admin_key, cfg.api_key))
    with pytest.raises(ConfigError, match=r"\[auth\] admin_key"):
        load_server_config(path)


def test_load_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_server_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_server_config(bad)


def test_example_config_is_valid(tmp_path: Path) -> None:
    example = REPO / "configs" / "server.example.toml"
    init_server(tmp_path, public_host="example.org")  # provides cert.pem and key.pem
    shutil.copy(example, tmp_path / "example.toml")
    cfg = load_server_config(tmp_path / "example.toml")
    assert cfg.public_host == "resip.example.net"
    assert cfg.acl[0] == "allow 127.0.0.1/32 port 10000"
    acl = cfg.build_acl()
    assert isinstance(acl, Acl)
    assert acl.check(ip_address("127.0.0.1"), 10000).allowed
    assert not acl.check(ip_address("8.8.8.8"), 25).allowed
    # Every key the loader knows is documented in the example.
    documented = tomllib.loads(example.read_text())
    assert set(documented) == {"server", "auth", "tls", "limits", "acl"}


# -- enrolment URIs -------------------------------------------------------------------------------

_hosts = st.one_of(
    st.sampled_from(["example.org", "a-b.c0.example", "localhost", "x."]),
    st.ip_addresses().map(str),
    st.from_regex(
        r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z][a-z0-9]{0,10}){0,3}", fullmatch=True
    ),
)
_keys = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True),
    st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1),
)
_ports = st.integers(1, 65535)


@settings(max_examples=150, deadline=None)
@given(
    key=_keys,
    host=_hosts,
    api=_ports,
    udp=_ports,
    tcp=_ports,
    fp=st.none() | st.binary(min_size=32, max_size=32).map(bytes.hex),
)
def test_uri_round_trip(key: str, host: str, api: int, udp: int, tcp: int, fp: str | None) -> None:
    enrolment = Enrolment(
        api_key=key, host=host, api_port=api, udp_port=udp, tcp_port=tcp, fingerprint=fp
    )
    uri = format_uri(enrolment)
    assert uri.startswith("resip://")
    assert parse_uri(uri) == enrolment


def test_uri_defaults_and_leniency() -> None:
    fp = "AB" * 32
    e = parse_uri(f"  resip://key@example.org/?fp={fp}  ")
    assert (e.api_port, e.udp_port, e.tcp_port) == (31265, 31266, 31266)
    assert e.fingerprint == fp.lower()
    e = parse_uri("resip://key@example.org:1234?udp=4000")
    assert (e.api_port, e.udp_port, e.tcp_port, e.fingerprint) == (1234, 4000, 4000, None)
    assert parse_uri("resip://k%40y@[::1]:5").api_key == "k@y"
    assert parse_uri("resip://k%40y@[::1]:5").host == "::1"


GOOD_FP = "0" * 64


@pytest.mark.parametrize(
    ("uri", "match"),
    [
        ("", "resip://"),
        (f"http://key@example.org:1/?fp={GOOD_FP}", "resip://"),
        (f"resip:key@example.org/?fp={GOOD_FP}", "resip://"),
        (f"resip://example.org:1/?fp={GOOD_FP}", "no API key"),
        (f"resip://@example.org:1/?fp={GOOD_FP}", "no API key"),
        (f"resip://user:pass@example.org:1/?fp={GOOD_FP}", "':'"),
        (f"resip://key@:1/?fp={GOOD_FP}", "no host"),
        (f"resip://key@exa mple.org:1/?fp={GOOD_FP}", "whitespace"),
        (f"resip://key@bad_host.org:1/?fp={GOOD_FP}", "bad host"),
        (f"resip://key@example.org:0/?fp={GOOD_FP}", "API port"),
        (f"resip://key@example.org:65536/?fp={GOOD_FP}", "API port"),
        (f"resip://key@example.org:http/?fp={GOOD_FP}", "API port"),
        (f"resip://key@example.org:/?fp={GOOD_FP}", "API port"),
        (f"resip://key@::1:31265/?fp={GOOD_FP}", "brackets"),
        (f"resip://key@[::1/?fp={GOOD_FP}", "malformed"),
        (f"resip://key@[127.0.0.1]:1/?fp={GOOD_FP}", "bracket"),
        (f"resip://key@[::1]x/?fp={GOOD_FP}", "junk"),
        (f"resip://key@[fe80::1%25eth0]:1/?fp={GOOD_FP}", "zone"),
        ("resip://key@example.org:1/?fp=abc", "64 hex"),
        (f"resip://key@example.org:1/?fp={'g' * 64}", "64 hex"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}0", "64 hex"),
        ("resip://key@example.org:1/?fp=", "64 hex"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}&fp={GOOD_FP}", "repeats"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}&udp=0", "udp port"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}&udp=x", "udp port"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}&tcp=99999", "tcp port"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}&fingerprint=x", "unknown parameter"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}&udp", "malformed"),
        (f"resip://key@example.org:1/path?fp={GOOD_FP}", "path"),
        (f"resip://key@example.org:1/?fp={GOOD_FP}#frag", "fragment"),
        (f"resip://%ff@example.org:1/?fp={GOOD_FP}", "percent"),
        (f"resip://%0a@example.org:1/?fp={GOOD_FP}", "control"),
        (f"resip://a%20b@example.org:1/?fp={GOOD_FP}", "whitespace"),
    ],
)
def test_malformed_uris_rejected(uri: str, match: str) -> None:
    uri = uri.replace("key@", "s3cr3tk3y@")
    with pytest.raises(ConfigError) as info:
        parse_uri(uri)
    assert match in str(info.value)
    assert "s3cr3tk3y" not in str(info.value)


def test_format_uri_rejects_bad_fields() -> None:
    with pytest.raises(ConfigError):
        format_uri(Enrolment(api_key="", host="example.org"))
    with pytest.raises(ConfigError):
        format_uri(Enrolment(api_key="a b", host="example.org"))
    with pytest.raises(ConfigError):
        format_uri(Enrolment(api_key="k", host="example.org", fingerprint="xyz"))
    with pytest.raises(ConfigError):
        format_uri(Enrolment(api_key="k", host="example.org", udp_port=0))
    with pytest.raises(ConfigError):
        format_uri(Enrolment(api_key="k", host="not valid"))

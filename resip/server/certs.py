"""TLS material for the session API: a private CA, a server certificate, and their files.

Contract:

- :func:`make_ca_and_server_cert` makes a fresh CA (10 years, ``basicConstraints CA``,
  ``keyCertSign``) and a server certificate signed by it (825 days, SAN with every given
  DNS name and IP address, ``serverAuth``). The CA private key is discarded: nobody needs
  it after the one signature, and a key that does not exist cannot be stolen to mint
  certificates; re-running ``init`` makes a new chain (and a new fingerprint).
- Keys are EC P-256: key generation takes milliseconds (RSA-4096 in the prototype took
  seconds), handshakes are cheap, and every TLS client supports it.
- :func:`cert_fingerprint` is the lowercase hex SHA-256 of a certificate's DER encoding;
  for a PEM chain, of the first (leaf) certificate. Clients pin this value.
- :func:`write_private_file` writes secrets atomically with mode 0600, so a key is never
  readable by others, not even for a moment, and never half-written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from resip.core.errors import ConfigError

__all__ = [
    "CA_VALIDITY",
    "SERVER_VALIDITY",
    "TlsMaterial",
    "cert_fingerprint",
    "make_ca_and_server_cert",
    "write_private_file",
    "write_public_file",
    "write_tls_files",
]

CA_VALIDITY = dt.timedelta(days=3650)
#: The CA/Browser Forum's former maximum; long enough that a forgotten server keeps working.
SERVER_VALIDITY = dt.timedelta(days=825)
#: Certificates start an hour in the past so a client whose clock lags still accepts them.
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """PEM-encoded CA certificate, server certificate and server private key."""

    ca_cert_pem: bytes
    server_cert_pem: bytes
    server_key_pem: bytes = field(repr=False)

    @property
    def chain_pem(self) -> bytes:
        """Server certificate followed by the CA: what the server presents (``cert.pem``)."""
        return self.server_cert_pem + self.ca_cert_pem

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the server (leaf) certificate."""
        return cert_fingerprint(self.server_cert_pem)


def _serial() -> int:
    # 159 random bits: positive and within the 20-octet limit of RFC 5280.
    return secrets.randbits(159) | 1


def make_ca_and_server_cert(
    hostnames: Sequence[str],
    ips: Sequence[str],
    *,
    now: dt.datetime | None = None,
) -> TlsMaterial:
    """Create a private CA and a server certificate for ``hostnames`` and ``ips``.

    At least one name or address is required; the first becomes the subject's common
    name. ``now`` (aware datetime) is for tests; it defaults to the current UTC time.
    Raises :class:`ConfigError` for an unparsable IP address or an empty name list.
    """
    if now is None:
        now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = []
    for name in hostnames:
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"bad certificate host name {name!r}")
        sans.append(x509.DNSName(name))
    for text in ips:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(text.strip("[]"))))
        except ValueError:
            raise ConfigError(f"bad certificate IP address {text!r}") from None
    if not sans:
        raise ConfigError("a server certificate needs at least one host name or IP address")
    common_name = (list(hostnames) + list(ips))[0]

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ResIP"),
            # The serial in the name keeps two CAs made by different inits distinguishable.
            x509.NameAttribute(NameOID.COMMON_NAME, f"ResIP CA {secrets.token_hex(4)}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return TlsMaterial(
        ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        server_cert_pem=server_cert.public_bytes(serialization.Encoding.PEM),
        server_key_pem=server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def cert_fingerprint(pem_or_der: bytes | str | x509.Certificate) -> str:
    """Lowercase hex SHA-256 of the certificate's DER; for a PEM chain, of the leaf (first).

    Raises :class:`ConfigError` if the input is not a certificate.
    """
    if isinstance(pem_or_der, x509.Certificate):
        der = pem_or_der.public_bytes(serialization.Encoding.DER)
    else:
        data = pem_or_der.encode("ascii") if isinstance(pem_or_der, str) else pem_or_der
        try:
            if b"-----BEGIN" in data:
                cert = x509.load_pem_x509_certificate(data)
                der = cert.public_bytes(serialization.Encoding.DER)
            else:
                # Parse to reject garbage: a fingerprint of non-certificate bytes would pin
                # nothing and fail confusingly later.
                x509.load_der_x509_certificate(data)
                der = data
        except ValueError as exc:
            raise ConfigError(f"not a certificate: {exc}") from None
    return hashlib.sha256(der).hexdigest()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; only widen it when the content is public.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private_file(path: Path, data: bytes | str) -> None:
    """Atomically write ``data`` to ``path`` with mode 0600 (keys, configs with API keys)."""
    _write_atomic(path, data.encode() if isinstance(data, str) else data, 0o600)


def write_public_file(path: Path, data: bytes | str) -> None:
    """Atomically write ``data`` to ``path`` with mode 0644 (certificates)."""
    _write_atomic(path, data.encode() if isinstance(data, str) else data, 0o644)


def write_tls_files(material: TlsMaterial, directory: Path) -> tuple[Path, Path, Path]:
    """Write ``cert.pem`` (server + CA chain), ``key.pem`` (0600) and ``ca.pem``.

    Returns ``(cert_path, key_path, ca_path)``.
    """
    directory = Path(directory)
    cert_path, key_path, ca_path = (directory / n for n in ("cert.pem", "key.pem", "ca.pem"))
    write_private_file(key_path, material.server_key_pem)
    write_public_file(cert_path, material.chain_pem)
    write_public_file(ca_path, material.ca_cert_pem)
    return cert_path, key_path, ca_path

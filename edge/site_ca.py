"""The site CA: a self-signed authority made on the gateway at first start, and the broker's
TLS certificate it signs. Devices trust only this CA (its certificate is in their
provisioning file), so nothing on the LAN can pose as the broker without the CA's key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "site-ca.crt"
CA_KEY = "site-ca.key"
SERVER_CERT = "broker.crt"
SERVER_KEY = "broker.key"
# Long enough that a site never sees one expire in service; renewal means re-provisioning.
CA_DAYS = 20 * 365
SERVER_DAYS = 10 * 365


@dataclass(frozen=True, slots=True)
class SiteCa:
    """Paths of the CA and broker certificate files in one directory."""

    directory: Path

    @property
    def cert_path(self) -> Path:
        """The CA certificate (public: devices and browsers download it)."""
        return self.directory / CA_CERT

    @property
    def key_path(self) -> Path:
        """The CA's private key (0600, never leaves the gateway)."""
        return self.directory / CA_KEY

    def cert_pem(self) -> str:
        """The CA certificate in PEM."""
        return self.cert_path.read_text()


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by its owner only (created 0600, never world-readable in between)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_site_ca(directory: Path, site: str) -> SiteCa:
    """Create the site CA in ``directory`` unless it exists; returns its paths."""
    ca = SiteCa(directory)
    if ca.cert_path.exists() and ca.key_path.exists():
        return ca
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Smart Maintenance site CA {site}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca.key_path, _key_pem(key))
    ca.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def issue_server_cert(ca: SiteCa, names: list[str], out_dir: Path) -> None:
    """(Re)issue the broker's certificate for ``names`` into ``out_dir``, beside the CA's.

    ``names`` are host names and IP addresses devices reach the broker at. The CA's key stays
    in the CA's directory: the broker's directory gets its own key and the CA certificate only.
    """
    if not names:
        raise ValueError("the broker certificate needs at least one host name or address")
    ca_key = serialization.load_pem_private_key(ca.key_path.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{ca.key_path} is not an EC key made by ensure_site_ca")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_private(out_dir / SERVER_KEY, _key_pem(key))
    (out_dir / SERVER_CERT).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out_dir / CA_CERT).write_bytes(ca.cert_path.read_bytes())

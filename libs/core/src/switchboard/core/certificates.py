"""A local certificate authority and the certificates it issues: what `switchboard run` gives its
services (and tests their listeners), so the embedded default speaks TLS without a public CA.
Production takes its certificates from Secrets instead (docs/security.md, "TLS")."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from switchboard.core import nats_auth

# Every certificate serves and authenticates (mutual TLS): the same pair is a service's server
# certificate and its client certificate when it calls another service.
_USAGES = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its key were written."""

    cert_file: Path
    key_file: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_pair(cert_file: Path, cert: x509.Certificate, key_file: Path, key: bytes) -> None:
    """The key readable by its owner only; the certificate by anyone."""
    nats_auth.write_secret(key_file, key.decode())
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _builder(subject: str, issuer: x509.Name, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class LocalCA:
    """A CA whose key and certificate live in `folder` (ca.key at mode 0600, ca.crt), made on
    first use and kept, so certificates issued on another run still verify."""

    def __init__(self, folder: Path, name: str = "Switchboard local CA", days: int = 3650) -> None:
        self.folder = folder
        self.cert_file = folder / "ca.crt"
        self.key_file = folder / "ca.key"
        if not (self.cert_file.exists() and self.key_file.exists()):
            key = ec.generate_private_key(ec.SECP256R1())
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            cert = (
                _builder(name, subject, days)
                .public_key(key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
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
                .add_extension(ski, critical=False)
                .sign(key, hashes.SHA256())
            )
            _write_pair(self.cert_file, cert, self.key_file, _pem_key(key))
        self._key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        self._cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())

    def issue(self, name: str, hosts: Iterable[str], days: int = 397) -> Issued:
        """Write `<name>.crt` and `<name>.key` (mode 0600) into the CA's folder: a certificate for
        `hosts` (DNS names or IP addresses), for serving and for client authentication."""
        key = ec.generate_private_key(ec.SECP256R1())
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        cert = (
            _builder(name, self._cert.subject, days)
            .public_key(key.public_key())
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_USAGES, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        issued = Issued(self.folder / f"{name}.crt", self.folder / f"{name}.key")
        _write_pair(issued.cert_file, cert, issued.key_file, _pem_key(key))
        return issued

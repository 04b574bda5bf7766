"""Certificates for tests of the TLS listeners: a self-signed one for 127.0.0.1 (SIP over TLS,
SMTP STARTTLS, a TLS relay, HTTPS), and a local CA's for gRPC with mutual TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path

from switchboard.core.certificates import LocalCA
from switchboard.core.tls import ClientAuth, GrpcTls


def self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """Write `<name>.key` and `<name>.crt` (RSA 2048, valid one day, CN and subjectAltName
    127.0.0.1) into `folder` with openssl, and return (key, cert)."""
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return key, cert


def grpc_tls(folder: Path, client_auth: ClientAuth = "require") -> tuple[GrpcTls, GrpcTls]:
    """A local CA in `folder` and two certificates it issued for 127.0.0.1: (a server's gRPC TLS
    asking clients for certificates as `client_auth` says, a client's with its certificate)."""
    ca = LocalCA(folder)
    server, client = ca.issue("server", ["127.0.0.1", "localhost"]), ca.issue("client", [])
    return (
        GrpcTls(str(server.cert_file), str(server.key_file), str(ca.cert_file), client_auth),
        GrpcTls(str(client.cert_file), str(client.key_file), str(ca.cert_file)),
    )

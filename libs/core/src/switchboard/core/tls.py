"""TLS from certificate files: gRPC server and channel credentials (mutual TLS between services),
and the SSL contexts of the HTTP and SMTP listeners. The files are PEM, as cert-manager writes
them into a Secret (`tls.crt`, `tls.key`, `ca.crt`)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc

ClientAuth = Literal["require", "optional", "none"]


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


@dataclass(frozen=True)
class GrpcTls:
    """A service's gRPC certificate, its key and the CA it trusts.

    Serving: TLS when a certificate and key are given; `client_auth` says whether a client must
    present a certificate signed by the CA (require), may (optional) or is not asked (none).
    Calling: TLS when a CA is given, verifying the server by it, and presenting the certificate
    (mutual TLS) when there is one."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    client_auth: ClientAuth = "none"

    @property
    def serves(self) -> bool:
        return bool(self.cert_file and self.key_file)

    @property
    def calls(self) -> bool:
        return bool(self.ca_file)

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The server's credentials, or None to serve without TLS."""
        if not self.serves:
            return None
        asks = self.client_auth != "none"
        if asks and not self.ca_file:
            raise ValueError(f"client auth {self.client_auth!r} needs a CA to verify clients by")
        return grpc.ssl_server_credentials(
            [(_read(self.key_file), _read(self.cert_file))],
            root_certificates=_read(self.ca_file) if asks else None,
            require_client_auth=self.client_auth == "require",
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """A client's credentials, or None to call without TLS."""
        if not self.calls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file),
            private_key=_read(self.key_file) if self.serves else None,
            certificate_chain=_read(self.cert_file) if self.serves else None,
        )


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """An SSL context serving `cert_file` (TLS 1.2 or later), or None when no certificate is set."""
    if not (cert_file and key_file):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context

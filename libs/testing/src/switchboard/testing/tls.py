"""A self-signed certificate for 127.0.0.1, for tests of the TLS listeners (SIP over TLS, SMTP
STARTTLS, a TLS relay)."""

from __future__ import annotations

import subprocess
from pathlib import Path


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

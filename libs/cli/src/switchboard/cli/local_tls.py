"""The embedded default's TLS: a local CA in the run directory (`.run/tls/ca.key` at mode 0600,
kept across runs) issues each service a certificate at every start, which it serves gRPC (mutual
TLS: every caller shows a certificate of the same CA), HTTPS, STARTTLS and SIP over TLS with; the
CLI gets one of its own. The embedded nats-server requires TLS with a certificate of the same CA
(services and commands still sign in with their NATS users' passwords). SWITCHBOARD_RUN_TLS=off runs everything in plain text (to measure what TLS costs)."""

from __future__ import annotations

import os
from pathlib import Path

from switchboard.cli.endpoints import ServiceSpec
from switchboard.core.certificates import LocalCA

RUN_TLS_ENV = "SWITCHBOARD_RUN_TLS"
TLS_DIR = "tls"
# Every name a service is called by on this machine (and in a compose-style network).
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def enabled() -> bool:
    return os.environ.get(RUN_TLS_ENV, "on").lower() not in ("off", "0", "false", "no")


class LocalTls:
    def __init__(self, directory: Path) -> None:
        self.ca = LocalCA(directory / TLS_DIR)

    def service_env(self, spec: ServiceSpec) -> dict[str, str]:
        """The environment that turns TLS on for `spec`: its gRPC server and clients (mutual
        TLS, client certificates required) and its HTTP or SMTP listener."""
        issued = self.ca.issue(spec.name, [*LOCAL_HOSTS, spec.name])
        cert, key = str(issued.cert_file), str(issued.key_file)
        env = {
            "GRPC_TLS_CERT_FILE": cert,
            "GRPC_TLS_KEY_FILE": key,
            "GRPC_TLS_CA_FILE": str(self.ca.cert_file),
            "GRPC_TLS_CLIENT_AUTH": "require",
        }
        if spec.tls_env:
            env.update(zip(spec.tls_env, (cert, key), strict=True))
        env["NATS_TLS_CA_FILE"] = str(self.ca.cert_file)
        return env

    def nats_server(self) -> dict[str, str]:
        """The nats-server's `tls` block: its certificate, and the CA that issued it."""
        issued = self.ca.issue("nats", [*LOCAL_HOSTS, "nats"])
        return {
            "cert_file": str(issued.cert_file),
            "key_file": str(issued.key_file),
            "ca_file": str(self.ca.cert_file),
        }

    def cli(self) -> dict[str, str]:
        """The CLI's certificate, for `Endpoints.tls`."""
        issued = self.ca.issue("cli", [])
        return {
            "ca_file": str(self.ca.cert_file),
            "cert_file": str(issued.cert_file),
            "key_file": str(issued.key_file),
        }

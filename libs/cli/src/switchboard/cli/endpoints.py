"""Where the running platform is: written by `switchboard run` to .run/endpoints.json, read by the
other commands. Environment variables override the file (for a Kubernetes deployment)."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats

from switchboard.core import nats_auth
from switchboard.core.bus import nats_servers
from switchboard.core.router_groups import RouterGroups
from switchboard.core.settings import DEFAULT_MAX_LIFETIME_SECONDS, DEV_AUTH_SECRET
from switchboard.core.tls import GrpcTls

RUN_DIR_ENV = "SWITCHBOARD_RUN_DIR"


@dataclass(frozen=True)
class Listener:
    """A port a service listens on besides gRPC and metrics (SMTP, SIP, HTTP upload...)."""

    label: str  # shown in the banner, e.g. "SMTP/LMTP receive"
    env: str  # the env var that sets the port
    default: int
    scheme: str = ""  # e.g. smtp, sip, http: the banner shows scheme://127.0.0.1:port
    tls_scheme: str = ""  # the scheme when the platform runs with TLS, if it is another
    tls_only: bool = False  # listens only when the platform runs with TLS


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # folder and log prefix, e.g. email-ingest
    module: str  # python module run with -m
    grpc_env: str  # the env var that sets its gRPC port
    grpc_default: int
    http_env: str = ""  # the env var of an HTTP port, if it has one
    http_default: int = 0
    listeners: tuple[Listener, ...] = ()
    # The env vars naming its listeners' certificate and key (HTTPS, STARTTLS), besides gRPC's.
    tls_env: tuple[str, str] | None = None


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("case", "switchboard.case", "CASE_GRPC_PORT", 50052),
    ServiceSpec("router", "switchboard.router", "ROUTER_GRPC_PORT", 50051),
    ServiceSpec(
        "voice-gateway",
        "switchboard.voice_gateway",
        "VOICE_GRPC_PORT",
        50054,
        listeners=(
            Listener("SIP (UDP/TCP)", "VOICE_SIP_PORT", 5060, "sip"),
            Listener("SIP over TLS", "VOICE_SIP_TLS_PORT", 5061, "sips", tls_only=True),
        ),
        tls_env=("VOICE_SIP_TLS_CERT", "VOICE_SIP_TLS_KEY"),
    ),
    ServiceSpec(
        "chat",
        "switchboard.chat",
        "CHAT_GRPC_PORT",
        50053,
        "CHAT_HTTP_PORT",
        8080,
        tls_env=("CHAT_TLS_CERT_FILE", "CHAT_TLS_KEY_FILE"),
    ),
    ServiceSpec(
        "email-ingest",
        "switchboard.email_ingest",
        "EMAIL_GRPC_PORT",
        50055,
        listeners=(Listener("Email receive (SMTP)", "EMAIL_SMTP_PORT", 2525, "smtp"),),
        tls_env=("EMAIL_SMTP_TLS_CERT_FILE", "EMAIL_SMTP_TLS_KEY_FILE"),
    ),
    ServiceSpec(
        "fax",
        "switchboard.fax",
        "FAX_GRPC_PORT",
        50056,
        listeners=(
            Listener("Fax upload (HTTP POST /fax)", "FAX_HTTP_PORT", 8095, "http", "https"),
        ),
        tls_env=("FAX_TLS_CERT_FILE", "FAX_TLS_KEY_FILE"),
    ),
)


@dataclass
class Endpoints:
    nats_url: str
    grpc: dict[str, str] = field(default_factory=dict)  # service -> host:port
    http: dict[str, str] = field(default_factory=dict)  # service -> URL
    metrics: dict[str, str] = field(default_factory=dict)  # service -> Prometheus /metrics URL
    listeners: dict[str, str] = field(default_factory=dict)  # label -> address
    tenant: str = "demo"
    # The local CA and the CLI's own certificate (ca_file, cert_file, key_file) when the
    # platform runs with TLS.
    tls: dict[str, str] = field(default_factory=dict)
    # The embedded default's mail catcher: the page listing the mail the platform sent.
    mail_page: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: Path) -> Endpoints:
        path = run_dir / "endpoints.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        ep = cls(
            nats_url=data.get("nats_url", "nats://127.0.0.1:4222"),
            grpc=data.get("grpc", {}),
            http=data.get("http", {}),
            metrics=data.get("metrics", {}),
            listeners=data.get("listeners", {}),
            tenant=data.get("tenant", "demo"),
            tls=data.get("tls", {}),
            mail_page=data.get("mail_page", ""),
        )
        ep.nats_url = os.environ.get("NATS_URL", ep.nats_url)
        for spec in SERVICES:
            env = f"SWITCHBOARD_{spec.name.upper().replace('-', '_')}_ADDR"
            if env in os.environ:
                ep.grpc[spec.name] = os.environ[env]
            ep.grpc.setdefault(spec.name, f"127.0.0.1:{spec.grpc_default}")
        return ep

    def router(self, tenant: str, environ: Mapping[str, str] = os.environ) -> str:
        """The router address for `tenant`'s calls: its group's ROUTER_ENDPOINTS entry when
        ROUTER_GROUPS partitions the tenants across router groups (the same values the services
        read), else the single router address."""
        groups = RouterGroups.parse(
            environ.get("ROUTER_GROUPS", ""), environ.get("ROUTER_ENDPOINTS", "")
        )
        return groups.target(tenant, self.grpc["router"])

    def grpc_tls(self, environ: Mapping[str, str] = os.environ) -> GrpcTls | None:
        """How the CLI calls the services: GRPC_TLS_CA_FILE (with GRPC_TLS_CERT_FILE and
        GRPC_TLS_KEY_FILE for mutual TLS) when set, else the embedded default's CA and the
        CLI's certificate, else without TLS."""
        if environ.get("GRPC_TLS_CA_FILE"):
            return GrpcTls(
                environ.get("GRPC_TLS_CERT_FILE", ""),
                environ.get("GRPC_TLS_KEY_FILE", ""),
                environ["GRPC_TLS_CA_FILE"],
            )
        if self.tls:
            return GrpcTls(self.tls["cert_file"], self.tls["key_file"], self.tls["ca_file"])
        return None


def run_dir() -> Path:
    return Path(os.environ.get(RUN_DIR_ENV, ".run")).resolve()


def _secret_file(
    path: Path, create: bool, new: Callable[[], str] = lambda: secrets.token_urlsafe(32)
) -> str | None:
    """The secret kept in `path`; with `create`, a `new()` one written there (mode 0600) if none."""
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    value = new()
    nats_auth.write_secret(path, value + "\n")
    return value


def auth_secret(directory: Path, create: bool = False) -> str:
    """The platform's token secret: SWITCHBOARD_AUTH_SECRET, else .run/auth-secret (made on first run)."""
    if os.environ.get("SWITCHBOARD_AUTH_SECRET"):
        return os.environ["SWITCHBOARD_AUTH_SECRET"]
    return _secret_file(directory / "auth-secret", create) or DEV_AUTH_SECRET


def fax_upload_secret(directory: Path, create: bool = False) -> str:
    """The embedded default's fax upload secret (.run/fax-upload-secret, made on first run): the
    tenant's FAX_WEBHOOK_SECRETS entry, which `switchboard fax upload` signs with."""
    return _secret_file(directory / "fax-upload-secret", create) or ""


def case_master_key_file(directory: Path) -> Path:
    """The case store's master key of the embedded default (.run/case-master-key, made on first
    run): it wraps the data keys that seal personal data in the case store."""
    path = directory / "case-master-key"
    _secret_file(path, True, lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    return path


# The embedded nats-server's users and passwords, its configuration and its JetStream key.
NATS_CREDENTIALS = "nats-credentials.json"
NATS_CONFIG = "nats-server.conf"
NATS_KEY = "nats-jetstream-key"


def nats_server_config(
    directory: Path, tenants: list[str] | None, tls: Mapping[str, str] | None = None
) -> tuple[Path, dict[str, str], dict[str, str]]:
    """Write the embedded nats-server's configuration into `directory` (mode 0600): a user per
    service (passwords kept in nats-credentials.json), the operator, JetStream encrypted with
    the key in nats-jetstream-key (both made on first run, and kept: the store needs its key),
    and with `tls` (cert_file, key_file, ca_file) TLS required of every client.
    Returns the configuration's path, each user's password and the server's environment (the
    key, which the configuration only names)."""
    passwords = nats_auth.credentials(directory / NATS_CREDENTIALS)
    key = _secret_file(directory / NATS_KEY, create=True, new=nats_auth.new_jetstream_key) or ""
    text = nats_auth.server_config(passwords, tenants=tenants, tls=tls)
    path = nats_auth.write_secret(directory / NATS_CONFIG, text)
    return path, passwords, {nats_auth.KEY_ENV: key}


def nats_options(directory: Path, user: str = nats_auth.OPERATOR) -> dict[str, Any]:
    """How a command connects to NATS: NATS_USER/NATS_PASSWORD (and NATS_TLS_*) when set, else
    as `user` of the embedded default (its passwords in the run directory), else anonymously."""
    if os.environ.get("NATS_USER"):
        return nats_auth.options_from_env(os.environ)
    path = directory / NATS_CREDENTIALS
    if not path.exists():
        return nats_auth.options_from_env(os.environ)
    passwords = json.loads(path.read_text())
    env = dict(os.environ)
    ca_file = Endpoints.load(directory).tls.get("ca_file")
    if ca_file and not env.get("NATS_TLS_CA_FILE"):  # the embedded default's nats-server's CA
        env["NATS_TLS_CA_FILE"] = ca_file
    return {**nats_auth.options_from_env(env), "user": user, "password": passwords[user]}


def token_max_lifetime() -> int | None:
    """The longest a token the services accept may live (SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS,
    as they read it; 0: no limit)."""
    value = int(
        os.environ.get("SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS", DEFAULT_MAX_LIFETIME_SECONDS)
    )
    return value or None


async def connect_nats(url: str, options: dict[str, Any] | None = None) -> nats.NATS:
    """A one-shot command's NATS connection: fails at once rather than retrying."""
    return await nats.connect(
        nats_servers(url),
        connect_timeout=2,
        max_reconnect_attempts=0,
        allow_reconnect=False,
        **(options or {}),
    )

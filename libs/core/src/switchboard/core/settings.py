"""Typed, frozen settings read from the environment (names match deploy/k8s manifests).

One naming scheme: ``<SERVICE>_<THING>`` (CASE, CHAT, EMAIL, FAX, ROUTER, VOICE), a file is
``*_FILE`` (a configuration file ``*_CONFIG_FILE``), another service's address ``*_ADDR``
(host:port). A setting that was renamed keeps its old name for one release (`renamed`): it is
still read, and a warning names the new one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from typing import Any, Final, Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from switchboard.core import nats_auth
from switchboard.core.router_groups import RouterGroups
from switchboard.core.tls import ClientAuth, GrpcTls

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def renamed(name: str, *formerly: str) -> AliasChoices:
    """The environment variable `name` of a setting, also read under the names it had before
    (deprecated: a warning says to rename them)."""
    return AliasChoices(name, *formerly)


# A development secret, used only when SWITCHBOARD_AUTH_SECRET is unset (the embedded default
# writes a random one to .run/ and passes it to every service). It is public: a service in
# production mode refuses to start with it.
DEV_AUTH_SECRET = "switchboard-development-secret-change-me"
# SWITCHBOARD_MODE: every deployment is "production" unless `switchboard run` (or a developer)
# says "development".
PRODUCTION: Final = "production"
DEVELOPMENT: Final = "development"
# The longest an access token may live unless SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS says
# otherwise: partners' integrations renew their tokens at least monthly.
DEFAULT_MAX_LIFETIME_SECONDS = 30 * 24 * 3600


class UnsafeSettings(ValueError):
    """Settings that must not run in production."""


def env_name(field: FieldInfo) -> str:
    """The environment variable a field is read from now (not the old names `renamed` keeps)."""
    if isinstance(field.validation_alias, AliasChoices):
        return str(field.validation_alias.choices[0])
    return field.alias or ""


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclass per service and add its own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="")

    nats_url: str = Field("nats://127.0.0.1:4222", alias="NATS_URL")
    # Copies of every stream, key-value bucket and object store this service declares: 1 on a
    # single nats-server, 3 (or 5) on a clustered JetStream, so losing a node loses nothing.
    nats_stream_replicas: int = Field(1, alias="NATS_STREAM_REPLICAS", ge=1, le=5)
    # The service's own NATS user (docs/nats-security.md); empty: connect anonymously.
    nats_user: str = Field("", alias="NATS_USER")
    nats_password: str = Field("", alias="NATS_PASSWORD", repr=False)
    # TLS to NATS when a CA (or a client certificate, for mutual TLS) is given.
    nats_tls_ca_file: str = Field("", alias="NATS_TLS_CA_FILE")
    nats_tls_cert_file: str = Field("", alias="NATS_TLS_CERT_FILE")
    nats_tls_key_file: str = Field("", alias="NATS_TLS_KEY_FILE")
    grpc_host: str = Field("127.0.0.1", alias="GRPC_HOST")
    grpc_port: int = Field(0, alias="GRPC_PORT")
    # gRPC over TLS (docs/security.md, "TLS"): the server serves this certificate and key; the
    # service's clients verify other services by the CA and present the certificate (mutual
    # TLS). GRPC_TLS_CLIENT_AUTH: whether the server requires a client certificate signed by
    # the CA (require), accepts one (optional: partners come with tokens only) or asks none.
    grpc_tls_cert_file: str = Field("", alias="GRPC_TLS_CERT_FILE")
    grpc_tls_key_file: str = Field("", alias="GRPC_TLS_KEY_FILE")
    grpc_tls_ca_file: str = Field("", alias="GRPC_TLS_CA_FILE")
    grpc_tls_client_auth: ClientAuth = Field("none", alias="GRPC_TLS_CLIENT_AUTH")
    # Server reflection (what grpcurl lists) only to callers with a valid token; health stays
    # open for probes.
    grpc_reflection_requires_token: bool = Field(True, alias="GRPC_REFLECTION_REQUIRES_TOKEN")
    # A plaintext port serving gRPC health alone (0: none), for probes that cannot speak TLS.
    grpc_health_port: int = Field(0, alias="GRPC_HEALTH_PORT", ge=0, le=65535)
    # Prometheus /metrics; 0 serves none.
    metrics_port: int = Field(0, alias="METRICS_PORT")
    auth_secret: str = Field(DEV_AUTH_SECRET, alias="SWITCHBOARD_AUTH_SECRET")
    # The longest an access token may live, in seconds (0: no limit); never-expiring tokens are
    # refused while there is one.
    token_max_lifetime_seconds: int = Field(
        DEFAULT_MAX_LIFETIME_SECONDS, alias="SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS", ge=0
    )
    mode: Literal["production", "development"] = Field(PRODUCTION, alias="SWITCHBOARD_MODE")
    # Comma-separated tenants this deployment serves; empty means any well-formed tenant.
    tenants: str = Field("", alias="SWITCHBOARD_TENANTS")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    otel_exporter_otlp_endpoint: str = Field("", alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    shutdown_grace_seconds: float = Field(5.0, alias="SHUTDOWN_GRACE_SECONDS")
    replica_id: str = Field("", alias="SWITCHBOARD_REPLICA_ID")

    @model_validator(mode="before")
    @classmethod
    def _warn_of_old_names(cls, data: Any) -> Any:
        given = data if isinstance(data, dict) else {}
        for field in cls.model_fields.values():
            alias = field.validation_alias
            if not isinstance(alias, AliasChoices):
                continue
            new, *old = (str(choice) for choice in alias.choices)
            for name in old:
                used = name in given or (name in os.environ and new not in os.environ)
                if used and name not in _warned:
                    _warned.add(name)
                    logger.warning(
                        "setting %s is now called %s; the old name is read until the next release",
                        name,
                        new,
                    )
        return data

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable these settings read, by its current name."""
        return {name for field in cls.model_fields.values() if (name := env_name(field))}

    def nats_options(self) -> dict[str, Any]:
        """nats.connect's options for this service's user and TLS (Bus.connect passes them on)."""
        return nats_auth.client_options(
            self.nats_user,
            self.nats_password,
            self.nats_tls_ca_file,
            self.nats_tls_cert_file,
            self.nats_tls_key_file,
        )

    def grpc_tls(self) -> GrpcTls:
        """The service's gRPC certificate, key and CA, for its server and its clients."""
        return GrpcTls(
            self.grpc_tls_cert_file,
            self.grpc_tls_key_file,
            self.grpc_tls_ca_file,
            self.grpc_tls_client_auth,
        )

    @property
    def token_max_lifetime(self) -> int | None:
        return self.token_max_lifetime_seconds or None

    def refuse_unsafe_production(self) -> None:
        """Raise UnsafeSettings when a production deployment would run with the public
        development secret."""
        if self.mode == PRODUCTION and self.auth_secret == DEV_AUTH_SECRET:
            raise UnsafeSettings(
                "SWITCHBOARD_AUTH_SECRET is unset or the public development secret: set a secret "
                "of your own (or SWITCHBOARD_MODE=development on a developer's machine)"
            )

    @property
    def known_tenants(self) -> frozenset[str] | None:
        names = frozenset(t.strip() for t in self.tenants.split(",") if t.strip())
        return names or None


class RouterGroupSettings(ServiceSettings):
    """Settings of a service that serves or calls the router: the tenant-to-group map
    (ROUTER_GROUPS) and each group's address (ROUTER_ENDPOINTS), the same values for every
    component (switchboard.core.router_groups, docs/routing.md). Unset: one router group serves
    every tenant."""

    router_groups: str = Field("", alias="ROUTER_GROUPS")
    router_endpoints: str = Field("", alias="ROUTER_ENDPOINTS")

    @model_validator(mode="after")
    def _check_router_groups(self) -> RouterGroupSettings:
        self.router_map()  # a malformed map stops the service at start, saying why
        return self

    def router_map(self) -> RouterGroups:
        return RouterGroups.parse(self.router_groups, self.router_endpoints)

    def router_targets(self, default: str) -> str | Callable[[str], str]:
        """Where a client calls the router for each tenant: `default` (the single router
        address) when one group serves every tenant, else the tenant's group's endpoint
        (every group must have one: RouterGroupsError names those that do not)."""
        groups = self.router_map()
        if not groups.partitioned:
            return default
        groups.check_endpoints()
        return partial(groups.target, default=default)

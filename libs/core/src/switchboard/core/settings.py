"""Typed, frozen settings read from the environment (names match deploy/k8s manifests)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# A development secret, used only when SWITCHBOARD_AUTH_SECRET is unset (the embedded default
# writes a random one to .run/ and passes it to every service).
DEV_AUTH_SECRET = "switchboard-development-secret-change-me"


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclass per service and add its own fields."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="")

    nats_url: str = Field("nats://127.0.0.1:4222", alias="NATS_URL")
    # Copies of every stream, key-value bucket and object store this service declares: 1 on a
    # single nats-server, 3 (or 5) on a clustered JetStream, so losing a node loses nothing.
    nats_stream_replicas: int = Field(1, alias="NATS_STREAM_REPLICAS", ge=1, le=5)
    grpc_host: str = Field("127.0.0.1", alias="GRPC_HOST")
    grpc_port: int = Field(0, alias="GRPC_PORT")
    # Prometheus /metrics; 0 serves none.
    metrics_port: int = Field(0, alias="METRICS_PORT")
    auth_secret: str = Field(DEV_AUTH_SECRET, alias="SWITCHBOARD_AUTH_SECRET")
    # Comma-separated tenants this deployment serves; empty means any well-formed tenant.
    tenants: str = Field("", alias="SWITCHBOARD_TENANTS")
    log_level: str = Field("INFO", alias="LOG_LEVEL")
    otel_exporter_otlp_endpoint: str = Field("", alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    shutdown_grace_seconds: float = Field(5.0, alias="SHUTDOWN_GRACE_SECONDS")
    replica_id: str = Field("", alias="SWITCHBOARD_REPLICA_ID")

    @property
    def known_tenants(self) -> frozenset[str] | None:
        names = frozenset(t.strip() for t in self.tenants.split(",") if t.strip())
        return names or None

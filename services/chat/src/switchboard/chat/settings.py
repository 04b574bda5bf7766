from __future__ import annotations

from pydantic import Field, field_validator

from switchboard.chat.entrypoints.clients import trusted_networks
from switchboard.core import recording_seal
from switchboard.core.events import TENANT_RE
from switchboard.core.settings import (
    PRODUCTION,
    RouterGroupSettings,
    UnsafeSettings,
    renamed,
)


class ChatSettings(RouterGroupSettings):
    http_host: str = Field("127.0.0.1", alias="CHAT_HTTP_HOST")
    # 0 picks a free port; the bound one is reported as ChatApp.http_port.
    http_port: int = Field(8080, alias="CHAT_HTTP_PORT", ge=0, le=65535)
    # HTTPS (the web chat, Socket.IO, the inbox) when both are set: PEM files, e.g. a
    # cert-manager Secret's tls.crt and tls.key.
    tls_cert_file: str = Field("", alias="CHAT_TLS_CERT_FILE")
    tls_key_file: str = Field("", alias="CHAT_TLS_KEY_FILE")
    grpc_port: int = Field(50053, alias="CHAT_GRPC_PORT", ge=0, le=65535)
    consumer_name: str = Field("chat", alias="CHAT_CONSUMER")
    max_message_bytes: int = Field(4000, alias="CHAT_MAX_MESSAGE_BYTES", gt=0, le=512 * 1024)
    # WebSocket permessage-deflate (RFC 7692) accepted when a client offers it: off by default
    # (chat frames are small; compression costs CPU per frame and memory per socket).
    ws_compression: bool = Field(False, alias="CHAT_WS_COMPRESSION")
    default_tenant: str = Field("demo", alias="CHAT_DEFAULT_TENANT")
    # How long an agent's `join` waits for a ContactAssigned this replica has not consumed yet.
    assignment_wait_seconds: float = Field(5.0, alias="CHAT_ASSIGNMENT_WAIT_SECONDS", ge=0)
    # YAML: per-tenant allowed origins and hours, rate/size/upload limits (default embedded).
    config_file: str = Field("", alias="CHAT_CONFIG_FILE")
    # The router's gRPC address, for queue positions and agent availability; with a partitioned
    # router (ROUTER_GROUPS), each tenant's calls go to its group's ROUTER_ENDPOINTS entry.
    router_target: str = Field(
        "127.0.0.1:50051", validation_alias=renamed("CHAT_ROUTER_ADDR", "CHAT_ROUTER_TARGET")
    )
    # The NATS subject replicas share Socket.IO emits on (one per deployment).
    socketio_subject: str = Field("switchboard.chat.socketio", alias="CHAT_SOCKETIO_SUBJECT")
    # "jetstream" (durable, shared by replicas) or "memory" (one process, lost on restart).
    store: str = Field("jetstream", alias="CHAT_STORE", pattern="^(jetstream|memory)$")
    # The agent inbox (inbox/): its agents directory (YAML; default: the embedded demo agents),
    # the case service's gRPC address, and how long a desk outlives its last socket.
    agents_file: str = Field("", alias="CHAT_AGENTS_FILE")
    case_target: str = Field(
        "127.0.0.1:50052", validation_alias=renamed("CHAT_CASE_ADDR", "CHAT_CASE_TARGET")
    )
    desk_grace_seconds: float = Field(60.0, alias="CHAT_DESK_GRACE_SECONDS", ge=0)
    # Proxies (an ingress, a load balancer) whose X-Forwarded-For names the client, for the
    # per-client limits: addresses or networks, comma-separated; "" trusts none.
    trusted_proxies: str = Field("", alias="CHAT_TRUSTED_PROXIES")
    # The customer portal's public address, which sign-in links point to
    # (https://help.example.com/portal); unset, links are sent only to a loopback host's portal.
    portal_url: str = Field("", alias="CHAT_PORTAL_URL", pattern=r"^(https?://\S+)?$")
    # The voice gateways' gRPC addresses (comma-separated: each replica's, as a call lives on
    # one), for the wallboard's live call supervision; "" offers none.
    voice_endpoints: str = Field("", alias="CHAT_VOICE_ENDPOINTS")
    # Or (and) the gateways found by name: host:port of a Service whose name resolves to every
    # replica's address (Kubernetes: the StatefulSet's headless Service, voice-gateway:50054),
    # looked up at each "Listen"; TLS checks each replica's certificate against that host name.
    voice_service: str = Field(
        "", alias="CHAT_VOICE_SERVICE", pattern=r"^([A-Za-z0-9.-]+:[0-9]{1,5})?$"
    )
    # How long the wallboard's "Listen" waits for the supervisor to answer their phone: longer
    # than the gateways' VOICE_RING_TIMEOUT_SECONDS.
    voice_supervise_timeout_seconds: float = Field(
        60.0, alias="CHAT_VOICE_SUPERVISE_TIMEOUT_SECONDS", gt=0
    )

    def voice_targets(self) -> list[str]:
        return [t.strip() for t in self.voice_endpoints.split(",") if t.strip()]

    # The call recordings' master key and old keys, to play them in the inbox: the voice
    # gateway's own (the same variables and Secret; production refuses to start without them,
    # a developer's machine derives the key from SWITCHBOARD_AUTH_SECRET on both).
    recording_key_file: str = Field("", alias="VOICE_RECORDING_KEY_FILE")
    recording_key: str = Field("", alias="VOICE_RECORDING_KEY", repr=False)
    recording_old_keys_file: str = Field("", alias="VOICE_RECORDING_OLD_KEYS_FILE")

    def recording_keys(self) -> recording_seal.RecordingKeys:
        return recording_seal.recording_keys(
            self.recording_key,
            self.recording_key_file,
            self.recording_old_keys_file,
            self.auth_secret,
        )

    def recording_master_key(self) -> bytes:
        return self.recording_keys().current

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        trusted_networks(value)  # refuse a bad list at start
        return value

    @field_validator("default_tenant")
    @classmethod
    def _tenant_name(cls, value: str) -> str:
        if not TENANT_RE.match(value):
            raise ValueError(f"{value!r} is not a valid tenant name")
        return value

    def refuse_unsafe_production(self) -> None:
        """Also: the embedded demo agents, whose passwords are published, sign in only on a
        developer's machine; call recordings open only with their own key."""
        super().refuse_unsafe_production()
        if self.mode == PRODUCTION and not self.agents_file:
            raise UnsafeSettings(
                "CHAT_AGENTS_FILE is unset, so the inbox would take the demo agents and their "
                "published passwords: give your agents directory (or SWITCHBOARD_MODE=development "
                "on a developer's machine)"
            )
        if self.mode == PRODUCTION and (
            problem := recording_seal.production_problem(
                self.recording_key, self.recording_key_file, self.recording_old_keys_file
            )
        ):
            raise UnsafeSettings(problem)

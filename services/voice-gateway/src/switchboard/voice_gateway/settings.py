from __future__ import annotations

from pydantic import Field, field_validator

from switchboard.core import recording_seal
from switchboard.core.nats_auth import VOICE_GATEWAY_REPLICAS
from switchboard.core.settings import (
    PRODUCTION,
    RouterGroupSettings,
    UnsafeSettings,
    renamed,
)

KEY_BYTES = recording_seal.KEY_BYTES


class VoiceGatewaySettings(RouterGroupSettings):
    grpc_port: int = Field(
        50054, validation_alias=renamed("VOICE_GRPC_PORT", "VOICE_GATEWAY_GRPC_PORT")
    )
    # SIP over UDP and TCP share this port (0 picks a free one); TLS listens when a cert is set.
    sip_host: str = Field("127.0.0.1", alias="VOICE_SIP_HOST")
    sip_port: int = Field(5060, alias="VOICE_SIP_PORT", ge=0, le=65535)
    sip_tls_port: int = Field(5061, alias="VOICE_SIP_TLS_PORT", ge=0, le=65535)
    sip_tls_cert: str = Field("", alias="VOICE_SIP_TLS_CERT")
    sip_tls_key: str = Field("", alias="VOICE_SIP_TLS_KEY")
    # The address put in Via, Contact and SDP (the host's public address behind NAT).
    advertised_host: str = Field("", alias="VOICE_ADVERTISED_HOST")
    media_host: str = Field("", alias="VOICE_MEDIA_HOST")
    config_path: str = Field("", validation_alias=renamed("VOICE_CONFIG_FILE", "VOICE_CONFIG"))
    # Synthesised prompts are cached here (in cache/) at start: a writable folder (in a pod, an
    # emptyDir; `make run` passes .run/voice-prompts). Relative paths are under the working
    # directory. VOICE_PROMPT_CACHE_DIR puts the cache elsewhere (e.g. shared by gateways).
    prompts_dir: str = Field(".run/voice-prompts", alias="VOICE_PROMPTS_DIR")
    prompt_cache_dir: str = Field("", alias="VOICE_PROMPT_CACHE_DIR")
    # The speech synthesiser: Debian's espeak-ng (a name on PATH or a path).
    espeak: str = Field("espeak-ng", alias="VOICE_ESPEAK")
    # The router's gRPC address; with a partitioned router (ROUTER_GROUPS), each tenant's calls
    # go to its group's ROUTER_ENDPOINTS entry.
    router_addr: str = Field(
        "127.0.0.1:50051", validation_alias=renamed("VOICE_ROUTER_ADDR", "SWITCHBOARD_ROUTER_ADDR")
    )
    max_calls: int = Field(200, alias="VOICE_MAX_CALLS", gt=0)
    retry_after_seconds: int = Field(30, alias="VOICE_RETRY_AFTER_SECONDS", gt=0)
    ring_timeout_seconds: float = Field(15.0, alias="VOICE_RING_TIMEOUT_SECONDS", gt=0)
    position_poll_seconds: float = Field(5.0, alias="VOICE_POSITION_POLL_SECONDS", gt=0)
    options_ping_seconds: float = Field(30.0, alias="VOICE_OPTIONS_PING_SECONDS", gt=0)
    # How long a replica dialled in to supervise an agent whose call it does not hold waits for
    # the replica that holds it to answer (over NATS) before it answers 404.
    replica_lookup_seconds: float = Field(2.0, alias="VOICE_REPLICA_LOOKUP_SECONDS", gt=0)
    # Call recordings: the master key their tenants' keys derive from (a file holding 32 random
    # bytes, or their base64; the Secret voice-recording-key), the old master keys that still
    # open what they sealed (a file, one base64 key a line; absent: none), and the writable
    # folder where a call's WAV grows until the call ends (empty: the system's temporary
    # folder). Production refuses to start without a key; on a developer's machine the key
    # derives from SWITCHBOARD_AUTH_SECRET.
    recording_key_file: str = Field("", alias="VOICE_RECORDING_KEY_FILE")
    recording_key: str = Field("", alias="VOICE_RECORDING_KEY", repr=False)
    recording_old_keys_file: str = Field("", alias="VOICE_RECORDING_OLD_KEYS_FILE")
    recordings_dir: str = Field("", alias="VOICE_RECORDINGS_DIR")
    # Each replica consumes routing events with its own durable (it owns its calls' media).
    consumer_name: str = Field("voice-gateway", alias="VOICE_CONSUMER")

    @field_validator("replica_id")
    @classmethod
    def _replica_index(cls, value: str) -> str:
        """The gateway's durable is voice-gateway-<index>, and its NATS user may create only
        voice-gateway-0 to voice-gateway-15: the index must be one of those."""
        if value and not (value.isdigit() and int(value) < VOICE_GATEWAY_REPLICAS):
            raise ValueError(
                f"SWITCHBOARD_REPLICA_ID={value!r}: the voice gateway's replica id is its index,"
                f" 0 to {VOICE_GATEWAY_REPLICAS - 1} (a StatefulSet's pod index), because its NATS"
                " user may create only the durables voice-gateway-0 to"
                f" voice-gateway-{VOICE_GATEWAY_REPLICAS - 1}"
            )
        return value

    def recording_keys(self) -> recording_seal.RecordingKeys:
        """The recording master key (the one configured, or one derived from the platform's auth
        secret) and the old ones; ValueError naming the setting that is wrong."""
        return recording_seal.recording_keys(
            self.recording_key,
            self.recording_key_file,
            self.recording_old_keys_file,
            self.auth_secret,
        )

    def recording_master_key(self) -> bytes:
        """The master key that seals new recordings."""
        return self.recording_keys().current

    def refuse_unsafe_production(self) -> None:
        """Also: the embedded configuration's demo phones, whose SIP passwords are published,
        register only on a developer's machine; recordings are sealed with a key of their own."""
        super().refuse_unsafe_production()
        if self.mode == PRODUCTION and not self.config_path:
            raise UnsafeSettings(
                "VOICE_CONFIG_FILE is unset, so the gateway would take the demo phones and their "
                "published SIP passwords: give your configuration (or SWITCHBOARD_MODE=development "
                "on a developer's machine)"
            )
        if self.mode == PRODUCTION and (
            problem := recording_seal.production_problem(
                self.recording_key, self.recording_key_file, self.recording_old_keys_file
            )
        ):
            raise UnsafeSettings(problem)

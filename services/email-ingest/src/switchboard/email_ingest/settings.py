from __future__ import annotations

from pydantic import Field, model_validator

from switchboard.core import quarantine
from switchboard.core.settings import ServiceSettings, renamed


class EmailIngestSettings(ServiceSettings):
    grpc_port: int = Field(
        50055, validation_alias=renamed("EMAIL_GRPC_PORT", "EMAIL_INGEST_GRPC_PORT")
    )
    # Mailboxes and routing rules (YAML); empty uses the embedded default for the demo tenant.
    config_file: str = Field("", alias="EMAIL_CONFIG_FILE")
    # Direct receive (the embedded default): SMTP on smtp_port, LMTP on lmtp_port (0: off).
    smtp_host: str = Field("127.0.0.1", alias="EMAIL_SMTP_HOST")
    smtp_port: int = Field(2525, alias="EMAIL_SMTP_PORT")
    lmtp_port: int = Field(0, alias="EMAIL_LMTP_PORT")
    # STARTTLS on the SMTP and LMTP listeners when both are set (PEM files, e.g. a cert-manager
    # Secret's); with EMAIL_SMTP_REQUIRE_STARTTLS nothing but EHLO, NOOP, RSET, QUIT and
    # STARTTLS is answered before the upgrade (530): for a relay that always offers TLS, not
    # for an MX that strangers' servers deliver to.
    smtp_tls_cert_file: str = Field("", alias="EMAIL_SMTP_TLS_CERT_FILE")
    smtp_tls_key_file: str = Field("", alias="EMAIL_SMTP_TLS_KEY_FILE")
    smtp_require_starttls: bool = Field(False, alias="EMAIL_SMTP_REQUIRE_STARTTLS")
    # Mail over this many bytes is refused at SMTP (552) and quarantined over IMAP.
    max_message_bytes: int = Field(25 * 1024 * 1024, alias="EMAIL_MAX_MESSAGE_BYTES")
    max_attachment_bytes: int = Field(20 * 1024 * 1024, alias="EMAIL_MAX_ATTACHMENT_BYTES")
    max_attachments: int = Field(50, alias="EMAIL_MAX_ATTACHMENTS")
    # Outbound relay (agents' replies).
    relay_host: str = Field("127.0.0.1", alias="EMAIL_RELAY_HOST")
    relay_port: int = Field(25, alias="EMAIL_RELAY_PORT")
    relay_username: str = Field("", alias="EMAIL_RELAY_USERNAME")
    relay_password: str = Field("", alias="EMAIL_RELAY_PASSWORD")
    # starttls: upgrade when offered (required when credentials are set); tls: implicit TLS; none.
    relay_security: str = Field("starttls", alias="EMAIL_RELAY_SECURITY")
    relay_timeout_seconds: float = Field(30.0, alias="EMAIL_RELAY_TIMEOUT_SECONDS")
    relay_ca_file: str = Field("", alias="EMAIL_RELAY_CA_FILE")  # default: the system's CAs
    send_attempts: int = Field(5, alias="EMAIL_SEND_ATTEMPTS")
    send_backoff_seconds: float = Field(2.0, alias="EMAIL_SEND_BACKOFF_SECONDS")
    # IMAP behaviour.
    idle_renew_seconds: float = Field(5 * 60, alias="EMAIL_IDLE_RENEW_SECONDS")
    poll_seconds: float = Field(60.0, alias="EMAIL_POLL_SECONDS")
    stall_seconds: float = Field(300.0, alias="EMAIL_STALL_SECONDS")
    reconnect_max_seconds: float = Field(60.0, alias="EMAIL_RECONNECT_MAX_SECONDS")
    imap_timeout_seconds: float = Field(30.0, alias="EMAIL_IMAP_TIMEOUT_SECONDS")
    fetch_batch: int = Field(100, alias="EMAIL_FETCH_BATCH")
    # Processes that decode fetched mail beside the event loop; -1: one per CPU beyond the
    # first two (none on two CPUs or fewer), 0: decode inline.
    decode_workers: int = Field(-1, alias="EMAIL_DECODE_WORKERS", ge=-1)
    # Each IMAP mailbox is read by one replica at a time, the holder of its lease (bucket
    # email_leases). A replica that dies has its mailboxes taken over this long after its last
    # renewal (renewed every third of it). Fixed by the bucket once created.
    lease_ttl_seconds: float = Field(15.0, alias="EMAIL_LEASE_TTL_SECONDS", gt=0.5)
    outbound_consumer: str = Field("email-outbound", alias="EMAIL_OUTBOUND_CONSUMER")
    # A quarantined mail (its raw message, and the message on IMAP) is deleted this many days
    # after it came (sooner when its sender is erased); EMAIL_QUARANTINE_RETENTION_TENANTS=
    # "acme=7,demo=90" sets a tenant's own.
    quarantine_retention_days: float = Field(30.0, alias="EMAIL_QUARANTINE_RETENTION_DAYS")
    quarantine_retention_tenants: str = Field("", alias="EMAIL_QUARANTINE_RETENTION_TENANTS")
    quarantine_sweep_seconds: float = Field(3600.0, alias="EMAIL_QUARANTINE_SWEEP_SECONDS")

    @model_validator(mode="after")
    def _retention_parses(self) -> EmailIngestSettings:
        self.quarantine_retention  # noqa: B018 - a mistake in it stops the service at start
        return self

    @property
    def quarantine_retention(self) -> quarantine.Retention:
        """How long each tenant's quarantined mail is kept."""
        return quarantine.parse_retention(
            self.quarantine_retention_days,
            self.quarantine_retention_tenants,
            "EMAIL_QUARANTINE_RETENTION_TENANTS",
        )

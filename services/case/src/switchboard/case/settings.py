from __future__ import annotations

from pydantic import Field

from switchboard.core.settings import PRODUCTION, ServiceSettings, UnsafeSettings

SQLITE_BATCH = 1024  # the consumer's batch on SQLite (one process)
SHARED_BATCH = 256  # ... on a database replicas share


class CaseSettings(ServiceSettings):
    database_url: str = Field("sqlite+aiosqlite:///.run/case.db", alias="CASE_DATABASE_URL")
    grpc_port: int = Field(50052, alias="CASE_GRPC_PORT")
    consumer_name: str = Field("case", alias="CASE_CONSUMER")
    # How long an event fetched by a replica that died stays with it before JetStream hands it to
    # another; events waiting for it are retried for longer than twice this (RetryPolicy).
    consumer_ack_wait_seconds: float = Field(30.0, gt=0, alias="CASE_CONSUMER_ACK_WAIT_SECONDS")
    # Events fetched at once, recorded in one transaction: a backlog costs less CPU per event in
    # larger units (one fetch, one commit, a few preloading reads for all of them). 0: by the
    # database (see `batch_for`).
    consumer_batch: int = Field(0, ge=0, le=4096, alias="CASE_CONSUMER_BATCH")

    def batch_for(self, dialect: str) -> int:
        """The consumer's batch: CASE_CONSUMER_BATCH, else 1,024 on SQLite, whose one process is
        the only consumer, and 256 elsewhere, where replicas share the stream: larger batches
        there take a contact's later events to one replica while another still records its
        first, and those wait for a redelivery."""
        if self.consumer_batch:
            return self.consumer_batch
        return SQLITE_BATCH if dialect == "sqlite" else SHARED_BATCH

    # SLA policies, calendars, escalation, templates, recurring tasks (YAML); empty: the embedded
    # default for the demo tenant.
    policy_file: str = Field("", alias="CASE_POLICY_FILE")
    # How often the scheduler checks SLA clocks, auto-close and recurring tasks.
    scheduler_interval_seconds: float = Field(15.0, alias="CASE_SCHEDULER_INTERVAL_SECONDS")
    # Escalation emails; no host: escalation emails are skipped (the audit trail says so).
    smtp_host: str = Field("", alias="CASE_SMTP_HOST")
    smtp_port: int = Field(25, alias="CASE_SMTP_PORT")
    smtp_from: str = Field("switchboard@localhost", alias="CASE_SMTP_FROM")
    smtp_username: str = Field("", alias="CASE_SMTP_USERNAME")
    smtp_password: str = Field("", alias="CASE_SMTP_PASSWORD")
    smtp_starttls: bool = Field(False, alias="CASE_SMTP_STARTTLS")
    # The master key that wraps the tenants' data keys (docs/security.md, "Personal data at
    # rest"): base64 of 32 random bytes, in the variable or (from a Secret) in the file. Previous
    # master keys (files, comma-separated) are read while their tenant keys are wrapped again.
    master_key: str = Field("", alias="CASE_MASTER_KEY", repr=False)
    master_key_file: str = Field("", alias="CASE_MASTER_KEY_FILE")
    previous_master_key_files: str = Field("", alias="CASE_PREVIOUS_MASTER_KEY_FILES")

    def refuse_unsafe_production(self) -> None:
        super().refuse_unsafe_production()
        if self.mode == PRODUCTION and not (self.master_key or self.master_key_file):
            raise UnsafeSettings(
                "CASE_MASTER_KEY_FILE (or CASE_MASTER_KEY) is unset: personal data would be "
                "sealed with the public development master key"
            )

"""Email-ingest's settings follow the platform's naming scheme; the old name is still read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from switchboard.email_ingest.settings import EmailIngestSettings


def test_the_grpc_port_is_email_grpc_port_and_the_old_name_still_works() -> None:
    assert EmailIngestSettings(EMAIL_GRPC_PORT=8).grpc_port == 8
    assert EmailIngestSettings(EMAIL_INGEST_GRPC_PORT=9).grpc_port == 9


def test_the_quarantine_retention_is_30_days_unless_a_tenant_sets_its_own() -> None:
    retention = EmailIngestSettings(
        EMAIL_QUARANTINE_RETENTION_TENANTS="acme=7"
    ).quarantine_retention
    assert retention.of("demo") == timedelta(days=30)
    assert retention.of("acme") == timedelta(days=7)
    with pytest.raises(ValueError, match="EMAIL_QUARANTINE_RETENTION_TENANTS"):
        EmailIngestSettings(EMAIL_QUARANTINE_RETENTION_TENANTS="acme=never")

"""Email-ingest's settings follow the platform's naming scheme; the old name is still read."""

from __future__ import annotations

from switchboard.email_ingest.settings import EmailIngestSettings


def test_the_grpc_port_is_email_grpc_port_and_the_old_name_still_works() -> None:
    assert EmailIngestSettings(EMAIL_GRPC_PORT=8).grpc_port == 8
    assert EmailIngestSettings(EMAIL_INGEST_GRPC_PORT=9).grpc_port == 9

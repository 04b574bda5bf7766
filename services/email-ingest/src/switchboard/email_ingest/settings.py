from __future__ import annotations

from pydantic import Field

from switchboard.core.settings import ServiceSettings


class EmailIngestSettings(ServiceSettings):
    grpc_port: int = Field(50055, alias="EMAIL_INGEST_GRPC_PORT")

from __future__ import annotations

from pydantic import Field

from switchboard.core.settings import ServiceSettings


class CaseSettings(ServiceSettings):
    database_url: str = Field("sqlite+aiosqlite:///.run/case.db", alias="CASE_DATABASE_URL")
    grpc_port: int = Field(50052, alias="CASE_GRPC_PORT")
    consumer_name: str = Field("case", alias="CASE_CONSUMER")

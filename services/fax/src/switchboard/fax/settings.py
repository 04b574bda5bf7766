from __future__ import annotations

from pydantic import Field

from switchboard.core.settings import ServiceSettings


class FaxSettings(ServiceSettings):
    grpc_port: int = Field(50056, alias="FAX_GRPC_PORT")

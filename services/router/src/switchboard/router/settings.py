from __future__ import annotations

from pydantic import Field

from switchboard.core.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    grpc_port: int = Field(50051, alias="ROUTER_GRPC_PORT")
    accept_timeout_seconds: float = Field(20.0, alias="ROUTER_ACCEPT_TIMEOUT_SECONDS")
    consumer_name: str = Field("router", alias="ROUTER_CONSUMER")

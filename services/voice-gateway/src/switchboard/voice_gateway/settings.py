from __future__ import annotations

from pydantic import Field

from switchboard.core.settings import ServiceSettings


class VoiceGatewaySettings(ServiceSettings):
    grpc_port: int = Field(50054, alias="VOICE_GATEWAY_GRPC_PORT")

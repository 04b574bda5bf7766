"""Composition root. The voice-gateway channel is not built yet: the service starts, joins the bus and
reports healthy, and does nothing else."""

from __future__ import annotations

from switchboard.core.idle import IdleServiceApp
from switchboard.voice_gateway.settings import VoiceGatewaySettings


def bootstrap(settings: VoiceGatewaySettings | None = None) -> IdleServiceApp:
    return IdleServiceApp("voice-gateway", settings or VoiceGatewaySettings())

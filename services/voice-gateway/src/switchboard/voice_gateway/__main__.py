from __future__ import annotations

from switchboard.core import runtime
from switchboard.voice_gateway.bootstrap import bootstrap
from switchboard.voice_gateway.settings import VoiceGatewaySettings


def main() -> None:
    settings = VoiceGatewaySettings()

    async def factory() -> runtime.Service:
        return bootstrap(settings)

    runtime.run(factory, "voice-gateway", settings.log_level, settings.metrics_port)


if __name__ == "__main__":
    main()

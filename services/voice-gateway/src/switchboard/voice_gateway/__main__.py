from __future__ import annotations

from switchboard.core import runtime
from switchboard.voice_gateway.bootstrap import bootstrap
from switchboard.voice_gateway.settings import VoiceGatewaySettings


def main() -> None:
    runtime.main("voice-gateway", VoiceGatewaySettings(), bootstrap)


if __name__ == "__main__":
    main()

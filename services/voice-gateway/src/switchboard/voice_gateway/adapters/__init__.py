"""The gateway's adapters to other services (the router over gRPC)."""

from switchboard.voice_gateway.adapters.router import Position, RouterClient

__all__ = ["Position", "RouterClient"]

"""gRPC health follows the NATS connection: NOT_SERVING while it is down, SERVING once back."""

from __future__ import annotations

import asyncio

from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer


async def health_becomes(target: str, wanted: str) -> None:
    for _ in range(400):
        if await sb_grpc.check_health(target, timeout=1) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{target} never became {wanted}")


async def test_health_follows_the_bus(nats_server: NatsServer) -> None:
    bus = await Bus.connect(nats_server.url, source="health-test")
    server, port, _ = await sb_grpc.start_server([], "127.0.0.1", 0, "secret", bus=bus)
    target = f"127.0.0.1:{port}"
    try:
        assert await sb_grpc.check_health(target) == "SERVING"
        await asyncio.to_thread(nats_server.kill)
        await health_becomes(target, "NOT_SERVING")
        await asyncio.to_thread(nats_server.start)  # same port, same store
        await health_becomes(target, "SERVING")
        # and the bus works again after the outage
        await bus.ensure_streams()
    finally:
        await server.stop(0)
        await bus.drain()

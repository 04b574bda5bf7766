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


async def test_a_reconnect_does_not_override_a_service_condition(nats_server: NatsServer) -> None:
    """One readiness source: NATS coming back sets only its own condition, so a service that
    said it cannot serve (a standby router) stays NOT_SERVING across a NATS restart."""
    bus = await Bus.connect(nats_server.url, source="health-test")
    server, port, readiness = await sb_grpc.start_server([], "127.0.0.1", 0, "secret", bus=bus)
    target = f"127.0.0.1:{port}"
    try:
        await readiness.set("leader", False, "standby")
        assert await sb_grpc.check_health(target) == "NOT_SERVING"
        await asyncio.to_thread(nats_server.kill)
        await health_becomes(target, "NOT_SERVING")
        await asyncio.to_thread(nats_server.start)
        for _ in range(200):  # the bus has reconnected...
            if bus.nc.is_connected and "nats" not in readiness.reasons():
                break
            await asyncio.sleep(0.05)
        assert readiness.reasons() == {"leader": "standby"}
        assert await sb_grpc.check_health(target) == "NOT_SERVING"  # ...and it is still not
        await readiness.set("leader", True)
        assert await sb_grpc.check_health(target) == "SERVING"
    finally:
        await server.stop(0)
        await bus.drain()

"""`subscriptions_active`, the tests' barrier for "nats-server has this connection's
subscriptions", against nats-py's `flush()`, which is not one: what a client sends is read
between it and a real nats-server, operation by operation."""

from __future__ import annotations

import asyncio

import nats

from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.nats_proxy import NatsProxy
from switchboard.testing.waiting import subscriptions_active


async def test_flush_can_pass_a_subscription_and_the_barrier_cannot(
    nats_server: NatsServer,
) -> None:
    host, port = nats_server.url.removeprefix("nats://").rsplit(":", 1)
    proxy = await NatsProxy(host, int(port)).start()
    nc = await nats.connect(f"nats://{proxy.target}")
    try:
        await nc.flush()
        proxy.ops.clear()
        await nc.subscribe("sb.first")
        await nc.flush()
        await asyncio.sleep(0.2)  # only to let the proxy note what followed
        # The PING went out before the SUB made before it: its PONG says nothing of the SUB.
        assert proxy.ops.index("PING") < proxy.ops.index("SUB sb.first")

        proxy.ops.clear()
        await nc.subscribe("sb.second")
        await subscriptions_active(nc)
        # The message it waited for was sent after the SUB; the server reads a connection in
        # order, so it had the SUB before it could deliver that message back.
        barrier = next(op for op in proxy.ops if op.startswith("PUB "))
        assert proxy.ops.index("SUB sb.second") < proxy.ops.index(barrier)
    finally:
        await nc.close()
        await proxy.stop()

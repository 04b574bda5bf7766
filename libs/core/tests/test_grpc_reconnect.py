"""A channel the platform opens (`switchboard.core.grpc.channel`) keeps trying to reach a service
that went away about once a second, however long it has been away: a router restart or failover
is taken up by every desk, gateway and CLI within about a second of the service answering again.
gRPC's own default backs off up to two minutes between attempts (1 s, 1.6 s, 2.6 s, 4.1 s...),
so a client could stay away many seconds after the service was back.

The service here is a port that accepts each connection and closes it at once: every connection
attempt the channel makes is seen, and fails as a restarting service's would."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchboard.core import grpc as sb_grpc

# Long enough for gRPC's default schedule to reach its 4.1 s pause (about 9 s in, at most 11).
WATCH_SECONDS = 14.0


async def test_a_channel_tries_again_about_every_second_while_its_service_is_away() -> None:
    attempts: list[float] = []

    async def refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, sb_grpc.channel(f"127.0.0.1:{port}") as channel:
        # A call that waits for the service keeps the channel trying to connect.
        waiting = asyncio.ensure_future(
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=WATCH_SECONDS + 5, wait_for_ready=True
            )
        )
        await asyncio.sleep(WATCH_SECONDS)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await waiting
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) >= WATCH_SECONDS / 2, attempts
    # One second apart, give or take gRPC's jitter (a fifth) and a loaded machine.
    assert max(gaps) < 2.5, [round(g, 2) for g in gaps]

"""The channels the platform opens (`switchboard.core.grpc.channel`) and its servers
(`start_server`) as connections between services need them.

A channel keeps trying to reach a service that went away about once a second, however long it
has been away: a router restart or failover is taken up by every desk, gateway and CLI within
about a second of the service answering again. gRPC's own default backs off up to two minutes
between attempts (1 s, 1.6 s, 2.6 s, 4.1 s...), so a client could stay away many seconds after
the service was back.

A connection attempt that never completes (an address that drops packets: a dead node's pod, a
cut network) is given up after 5 s and another made, where gRPC's default waits 20 s.

Channels ping the service while a call is open (keepalive, so a vanished peer is found out:
tests/e2e/test_grpc_dead_peer.py), and the platform's servers take those pings: gRPC's default
server answers a client pinging more than once in five minutes with GOAWAY "too_many_pings",
which would end every quiet stream (an agent's offers) after a few pings."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from switchboard.core import grpc as sb_grpc

# Long enough for gRPC's default schedule to reach its 4.1 s pause (about 9 s in, at most 11).
WATCH_SECONDS = 14.0


async def test_a_channel_tries_again_about_every_second_while_its_service_is_away() -> None:
    attempts: list[float] = []

    async def refuse(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        writer.close()

    # A port that accepts each connection and closes it at once: every connection attempt the
    # channel makes is seen, and fails as a restarting service's would.
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


async def test_a_connection_attempt_that_never_completes_is_given_up_after_five_seconds() -> None:
    attempts: list[float] = []
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempts.append(time.monotonic())
        held.append(writer)  # open and silent: no HTTP/2 settings ever come back

    # A port that takes each connection and never answers on it: to the channel, an attempt
    # that does not complete, as to an address whose packets are dropped.
    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, sb_grpc.channel(f"127.0.0.1:{port}") as channel:
        waiting = asyncio.ensure_future(
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=20, wait_for_ready=True
            )
        )
        await asyncio.sleep(12)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await waiting
    for writer in held:
        writer.close()
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(attempts)]
    # Every 5 s (gRPC's default: one attempt in these 12 s, the next at 20 s).
    assert len(attempts) >= 2, attempts
    assert all(4.0 < gap < 7.0 for gap in gaps), gaps


async def test_a_quiet_stream_outlives_many_keepalive_pings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pings every second (not every ten), so that many come and go in a few seconds.
    monkeypatch.setattr(sb_grpc, "KEEPALIVE_TIME_MS", 1000)
    server, port, _readiness = await sb_grpc.start_server([], "127.0.0.1", 0, "secret")
    try:
        async with sb_grpc.channel(f"127.0.0.1:{port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            await watch.read()  # the status now; then nothing, as nothing changes
            # gRPC's default server sends GOAWAY at the third ping without data, in about 3 s.
            # (Cancelling a read would cancel the call: the read is left to run instead.)
            read = asyncio.ensure_future(watch.read())
            await asyncio.sleep(8)
            assert not read.done(), read.exception() if read.done() else None
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await read
    finally:
        await server.stop(None)


async def test_a_bidirectional_stream_carries_the_token_without_a_task_per_message() -> None:
    """The token (and trace context) go with a bidirectional call as it is made, not through
    grpc.aio's interceptor, which relays every message written through a queue and a task of its
    own: an agent's session, which carries each offer's accept, costs no task per message."""
    seen: list[tuple[tuple[str, str], ...]] = []

    async def chat(requests, context):  # type: ignore[no-untyped-def]
        seen.append(tuple((m.key, m.value) for m in context.invocation_metadata()))
        async for request in requests:
            yield request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Echo", {"Chat": grpc.stream_stream_rpc_method_handler(chat)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    loop = asyncio.get_running_loop()
    created = itertools.count()

    def counting(loop, coro, **kwargs):  # type: ignore[no-untyped-def]
        next(created)
        return asyncio.Task(coro, loop=loop, **kwargs)

    try:
        async with sb_grpc.channel(f"127.0.0.1:{port}", "the-token") as channel:
            call = channel.stream_stream("/test.Echo/Chat")()
            await call.write(b"first")
            assert await call.read() == b"first"
            assert ("authorization", "Bearer the-token") in seen[0]
            messages = 30
            before = next(created)
            loop.set_task_factory(counting)
            try:
                for n in range(messages):
                    await call.write(b"%d" % n)
                    assert await call.read() == b"%d" % n
            finally:
                loop.set_task_factory(None)
            tasks = next(created) - before - 1
            assert tasks < messages, tasks  # none, in fact
            await call.done_writing()
    finally:
        await server.stop(None)

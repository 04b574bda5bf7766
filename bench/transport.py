"""Raw transport baselines, measured in the same run as the end-to-end figures."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import nats
from nats.js import api as js_api

from bench import service_loop
from bench.stats import percentile
from switchboard.core.tls import GrpcTls

REPO = Path(__file__).resolve().parent.parent


async def jetstream_publish_consume(url: str, count: int, size: int = 400) -> float:
    """Messages/s for publish_async of `count` messages and their pull-consume with explicit ack."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCHRAW", subjects=["benchraw.>"])
    sub = await js.pull_subscribe(
        "benchraw.>",
        durable="raw",
        stream="BENCHRAW",
        config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.EXPLICIT),
    )
    payload = b"x" * size
    consumed = 0
    start = time.perf_counter()

    async def consume() -> None:
        nonlocal consumed
        while consumed < count:
            try:
                msgs = await sub.fetch(256, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                await m.ack()
            consumed += len(msgs)

    consumer = asyncio.create_task(consume())
    futures = [
        await js.publish_async(f"benchraw.{i % 16}", payload, headers={"Nats-Msg-Id": f"r{i}"})
        for i in range(count)
    ]
    await asyncio.gather(*futures)
    await consumer
    elapsed = time.perf_counter() - start
    await js.delete_stream("BENCHRAW")
    await nc.close()
    return count / elapsed


async def jetstream_hop(url: str, count: int, size: int = 400) -> dict[str, float]:
    """One message at a time, from this process to a pull consumer in another process (as a
    contact goes from its channel to the router): published -> fetched, p50/p99 ms. The floor of
    the published->offer path's first hop; that path has two more (the router's journal write,
    acknowledged, and the offer over gRPC)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCHHOP", subjects=["benchhop.>"])
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.transport",
        url,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert consumer.stdout is not None
    try:
        if (await consumer.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the JetStream hop's consumer did not start")
        payload = b"x" * size
        latencies = []
        for i in range(count):
            published = time.monotonic()
            ack = asyncio.ensure_future(
                js.publish(f"benchhop.{i % 16}", payload, headers={"Nats-Msg-Id": f"h{i}"})
            )
            fetched = float((await consumer.stdout.readline()).split()[1])
            await ack
            latencies.append((fetched - published) * 1e3)
    finally:
        consumer.kill()
        await consumer.wait()
    await js.delete_stream("BENCHHOP")
    await nc.close()
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


async def _hop_consumer(url: str) -> None:
    """The JetStream hop's other side: fetches, acknowledges, and prints "<msg id> <time>"
    (CLOCK_MONOTONIC, the same clock in every process of the machine)."""
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe(
        "benchhop.>",
        durable="hop",
        stream="BENCHHOP",
        config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.EXPLICIT),
    )
    print("ready", flush=True)
    while True:
        try:
            msgs = await sub.fetch(256, timeout=5)
        except nats.errors.TimeoutError:
            continue
        fetched = time.monotonic()
        for m in msgs:
            await m.ack()
            print(f"{(m.headers or {}).get('Nats-Msg-Id')} {fetched}", flush=True)


WARM_UP = 20  # messages sent before the timed ones: the stream's setup is not a hop


async def grpc_hop(count: int, size: int = 300) -> dict[str, float]:
    """One message at a time from this process down a grpc.aio server stream to its reader in
    another process (as an offer goes from the router to an agent's process): pushed -> read,
    p50/p99 ms. The floor of the published->offer path's last hop, measured as that path is
    (one at a time, across processes), where `grpc_stream_hop` is a burst within one process."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        while True:
            yield await queue.get()

    handler = grpc.method_handlers_generic_handler(
        "bench.Hop", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.transport",
        "grpc-reader",
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert reader.stdout is not None
    latencies = []
    try:
        for i in range(WARM_UP + count):
            pushed = time.monotonic()
            queue.put_nowait(i.to_bytes(8, "big") + b"y" * size)
            n, read = (await reader.stdout.readline()).split()
            assert int(n) == i, f"read {n!r} for message {i}"
            if i >= WARM_UP:
                latencies.append((float(read) - pushed) * 1e3)
    finally:
        reader.kill()
        await reader.wait()
        await server.stop(0)
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


async def _grpc_reader(target: str) -> None:
    """The gRPC hop's other side: reads the stream and prints "<n> <time>" for each message
    (CLOCK_MONOTONIC, the same clock in every process of the machine)."""
    async with grpc.aio.insecure_channel(target) as channel:
        async for item in channel.unary_stream("/bench.Hop/Stream")(b""):
            print(f"{int.from_bytes(item[:8], 'big')} {time.monotonic()}", flush=True)


async def grpc_stream_hop(
    count: int, tls: tuple[GrpcTls, GrpcTls] | None = None
) -> dict[str, float]:
    """A raw grpc.aio server-streaming hop: messages/s and per-message latency (ms); with `tls`
    (the server's, the client's), over mutual TLS."""

    async def stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        for _ in range(count):
            yield time.perf_counter_ns().to_bytes(8, "big") + b"y" * 300
            await asyncio.sleep(0)

    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server_creds, client_creds = (
        (tls[0].server_credentials(), tls[1].channel_credentials()) if tls else (None, None)
    )
    if server_creds is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", server_creds)
    await server.start()
    latencies = []
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.secure_channel(target, client_creds)
        if client_creds
        else grpc.aio.insecure_channel(target)
    )
    async with channel as ch:
        call = ch.unary_stream("/bench.Raw/Stream")(b"")
        start = time.perf_counter()
        async for item in call:
            latencies.append((time.perf_counter_ns() - int.from_bytes(item[:8], "big")) / 1e6)
        elapsed = time.perf_counter() - start
    await server.stop(0)
    return {
        "msgs_per_s": count / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


if __name__ == "__main__":
    if sys.argv[1] == "grpc-reader":
        service_loop.run(_grpc_reader(sys.argv[2]))
    else:
        service_loop.run(_hop_consumer(sys.argv[1]))

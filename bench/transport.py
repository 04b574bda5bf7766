"""Raw transport baselines, measured in the same run as the end-to-end figures."""

from __future__ import annotations

import asyncio
import time

import grpc
import nats
from nats.js import api as js_api

from bench.stats import percentile


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


async def grpc_stream_hop(count: int) -> dict[str, float]:
    """A raw grpc.aio server-streaming hop: messages/s and per-message latency (ms)."""

    async def stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        for _ in range(count):
            yield time.perf_counter_ns().to_bytes(8, "big") + b"y" * 300
            await asyncio.sleep(0)

    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    latencies = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
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

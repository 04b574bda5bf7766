"""Prometheus metrics: the bus and the gRPC server count what they do, and /metrics serves it."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import pytest
from prometheus_client import REGISTRY

from switchboard.core import events, metrics
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.testing.waiting import until
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def created(cid: str) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=cid, tenant="acme", channel=contact_pb2.CHANNEL_CHAT
        ),
    )


async def test_bus_counts_published_and_settled_events(nats_url: str, bus: Bus) -> None:
    before_pub = sample("switchboard_events_published_total", event="ContactCreated")
    before_ack = sample(
        "switchboard_events_settled_total", consumer="m", event="ContactCreated", outcome="ack"
    )
    before_bad = sample(
        "switchboard_events_settled_total", consumer="m", event="unknown", outcome="malformed"
    )
    before_parked = sample(
        "switchboard_events_parked_total", consumer="m", event="unknown", reason="malformed"
    )
    consumer = await Bus.connect(nats_url, source="metrics-test")
    seen: list[str] = []

    async def handler(event: events_pb2.ContactCreated) -> None:
        seen.append(event.contact.contact_id)

    consumer.subscribe("m", events_pb2.ContactCreated, handler)
    await consumer.start()
    await bus.publish(created("c1"))
    await bus.js.publish("contact.acme.chat.created", b"junk")
    for _ in range(200):
        if (
            seen
            and sample(
                "switchboard_events_settled_total",
                consumer="m",
                event="unknown",
                outcome="malformed",
            )
            > before_bad
        ):
            break
        await asyncio.sleep(0.025)
    assert sample("switchboard_events_published_total", event="ContactCreated") == before_pub + 1
    assert (
        sample(
            "switchboard_events_settled_total", consumer="m", event="ContactCreated", outcome="ack"
        )
        == before_ack + 1
    )
    assert sample("switchboard_event_handling_seconds_count", consumer="m", event="ContactCreated")
    assert (
        sample("switchboard_events_parked_total", consumer="m", event="unknown", reason="malformed")
        == before_parked + 1
    )
    assert sample("switchboard_nats_connected", service="metrics-test") == 1
    await consumer.drain()


async def test_grpc_calls_are_counted_by_status_code() -> None:
    server, port, _ = await sb_grpc.start_server(
        [
            (
                router_pb2_grpc.add_RouterServiceServicer_to_server,
                router_pb2_grpc.RouterServiceServicer(),
                "switchboard.v1.RouterService",
            )
        ],
        "127.0.0.1",
        0,
        "secret",
    )
    before = sample("switchboard_grpc_requests_total", method="ListAgents", code="UNAUTHENTICATED")
    async with sb_grpc.channel(f"127.0.0.1:{port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router_pb2_grpc.RouterServiceStub(ch).ListAgents(router_pb2.ListAgentsRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value
    # The server counts the call when its handler ends, which can be just after the client has
    # the status.
    await until(
        lambda: (
            sample("switchboard_grpc_requests_total", method="ListAgents", code="UNAUTHENTICATED")
            == before + 1
        ),
        "the refused call counted once",
    )
    await server.stop(0)


def test_metrics_endpoint_serves_prometheus_text() -> None:
    assert metrics.serve(0) == 0  # 0 turns it off
    port = metrics.serve(free_port(), host="127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "# TYPE switchboard_events_settled_total counter" in text
    assert "# TYPE switchboard_grpc_request_seconds histogram" in text

"""Reading what is on a JetStream stream, for tests."""

from __future__ import annotations

from typing import TypeVar

from google.protobuf.message import Message
from nats.js import api as js_api

from switchboard.core.bus import Bus

T = TypeVar("T", bound=Message)


async def published(bus: Bus, subject: str, event_type: type[T], stream: str = "EVENTS") -> list[T]:
    """Every event of `event_type` on `subject` in `stream` so far, oldest first."""
    sub = await bus.js.pull_subscribe(
        subject,
        stream=stream,
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    out: list[T] = []
    while True:
        try:
            msgs = await sub.fetch(100, timeout=1)
        except Exception:
            break
        out += [event_type.FromString(m.data) for m in msgs]
    await sub.unsubscribe()
    return out

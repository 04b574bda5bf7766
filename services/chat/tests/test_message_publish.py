"""A chat message's event is published pipelined, against a real JetStream: sent at once and its
ack awaited on the bus's one reply subscription (no request, with a reply inbox and timeout of
its own, per message), and the call still returns only once JetStream has stored the event."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from switchboard.chat.notifier import ChatNotifier, message_event
from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.v1 import contact_pb2, events_pb2


async def test_message_events_are_published_pipelined_and_stored_once(bus: Bus) -> None:
    notifier = ChatNotifier(bus)
    stored: list[str] = []
    got = asyncio.Event()

    async def on_message(event: events_pb2.MessageAdded) -> None:
        stored.append(event.message.message_id)
        if len(stored) == 4:
            got.set()

    bus.subscribe("chat-publish-test", events_pb2.MessageAdded, on_message)
    await bus.start()
    requests = 0
    request = bus.nc.request

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal requests
        requests += 1
        return await request(*args, **kwargs)

    bus.nc.request = counting  # type: ignore[method-assign]
    ids = [events.new_id() for _ in range(4)]
    try:
        await asyncio.gather(
            *(
                notifier.publish(
                    message_event(
                        "acme",
                        "c-1",
                        message_id,
                        contact_pb2.AUTHOR_CUSTOMER,
                        f"메시지 {n}",
                        datetime.now(UTC),
                    )
                )
                for n, message_id in enumerate(ids)
            )
        )
        # The same message again (a retried publish) is stored once.
        await notifier.publish(
            message_event(
                "acme", "c-1", ids[0], contact_pb2.AUTHOR_CUSTOMER, "메시지 0", datetime.now(UTC)
            )
        )
    finally:
        bus.nc.request = request  # type: ignore[method-assign]
    assert requests == 0
    await asyncio.wait_for(got.wait(), 10)
    await asyncio.sleep(0.2)
    assert sorted(stored) == sorted(ids)

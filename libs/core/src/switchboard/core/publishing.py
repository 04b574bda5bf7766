"""What a service's notifier publishes through: the Bus, or a test's fake
(`switchboard.testing.fakes.FakePublisher`). Every call returns, or resolves, once JetStream
has stored the event; only then may the source it came from be acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from google.protobuf.message import Message


class Publisher(Protocol):
    async def publish(self, event: Message) -> Any:
        """Publish one event and wait for JetStream to store it."""
        ...

    async def publish_async(self, event: Message, traceparent: str = "") -> asyncio.Future[Any]:
        """Send without waiting; the future resolves when JetStream has stored the event (which
        joins the trace `traceparent` names, or else the current one)."""
        ...

    async def publish_many(self, batch: Iterable[Message]) -> list[Any]:
        """Publish a batch pipelined, returning once JetStream has stored all of it."""
        ...

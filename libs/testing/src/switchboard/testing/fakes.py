"""Fakes of Switchboard's own interfaces, for unit tests that run without nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from switchboard.core import events

E = TypeVar("E", bound=Message)
T = TypeVar("T")


class FakePublisher:
    """A `switchboard.core.publishing.Publisher` that keeps what it is given, in order. Like
    JetStream, it refuses an event whose meta is not valid, and stores an event id once (a
    repeat is a duplicate, acknowledged and dropped).

    `hold` (an unset Event) keeps every publish waiting for its acknowledgement until it is set;
    `fail` (an exception) makes every publish fail with it, as when JetStream is away."""

    def __init__(self) -> None:
        self.events: list[Message] = []
        self.hold: asyncio.Event | None = None
        self.fail: BaseException | None = None
        self._ids: set[str] = set()

    def of(self, event_type: type[E]) -> list[E]:
        """The events of one type published so far."""
        return [e for e in self.events if isinstance(e, event_type)]

    async def _stored(self, event: Message) -> bool:
        events.validate_meta(event)
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        event_id = event.meta.event_id  # type: ignore[attr-defined]
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self.events.append(event)
        return True

    async def publish(self, event: Message) -> bool:
        """True when stored, False for a duplicate."""
        return await self._stored(event)

    async def publish_async(self, event: Message) -> asyncio.Future[bool]:
        events.validate_meta(event)
        return asyncio.ensure_future(self._stored(event))

    async def publish_many(self, batch: Iterable[Message]) -> list[bool]:
        return [await self._stored(event) for event in batch]


class FakeClock(Generic[T]):
    """A clock the test moves by hand: calling it returns `now` (a datetime for the case
    service, engine seconds for the router)."""

    def __init__(self, now: T) -> None:
        self.now = now

    def __call__(self) -> T:
        return self.now

    def advance(self, by: Any) -> T:
        """Move on by `by` (a timedelta, or seconds), and return the new time."""
        self.now = self.now + by  # type: ignore[operator]
        return self.now


class FakeMailer:
    """A mailer (`send(to, subject, text, key)`) that records the keys it sent, failing the
    first `failures` sends as an SMTP server that is away would."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[str] = []

    async def send(self, to: Sequence[str], subject: str, text: str, key: str) -> None:
        await asyncio.sleep(0)  # let another sender run in between
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("smtp is away")
        self.sent.append(key)

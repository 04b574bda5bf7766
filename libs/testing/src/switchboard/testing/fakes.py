"""Fakes of Switchboard's own interfaces, for unit tests that run without nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from switchboard.core import events
from switchboard.core.errors import DomainError, Retry, Unavailable

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


class FakeBus(FakePublisher):
    """A `switchboard.core.bus.Bus` in memory: what it publishes, as `FakePublisher` keeps it,
    and its consumers' handlers (`subscribe`), to which a test hands events (`deliver`), each
    settled as the Bus settles it: acknowledged when its handler returns; parked at once when
    it cannot be read (no valid meta) or its handler refuses it (a DomainError: invalid);
    redelivered later when its handler asks (Retry), its replica cannot serve it (Unavailable)
    or it crashed. Delivery is at least once: handing the same event twice is a redelivery."""

    ACK, RETRY, PARKED = "ack", "retry", "parked"

    def __init__(self) -> None:
        super().__init__()
        self.handlers: dict[tuple[str, type[Message]], Callable[[Any], Awaitable[None]]] = {}
        self.parked: list[tuple[Message, str]] = []  # (event, why): the dead letters
        self.started = self.drained = False

    async def ensure_streams(self) -> None:
        """Nothing to declare: the fake has no streams."""

    def watch(self, callback: Callable[[bool], Awaitable[None]]) -> None:
        """Its connection never changes: always up."""

    async def start(self) -> None:
        """Its consumers take events only when a test delivers them."""
        self.started = True

    async def drain(self) -> None:
        """Nothing is in flight between deliveries."""
        self.drained = True

    def subscribe(
        self,
        durable: str,
        event_type: type[E],
        handler: Callable[[E], Awaitable[None]],
        options: object = None,
    ) -> None:
        self.handlers[(durable, event_type)] = handler

    async def deliver(self, event: Message, durable: str = "") -> str:
        """Hand `event` to the handler subscribed to its type (on `durable`, if several are);
        return how it was settled: ACK, RETRY or PARKED."""
        handlers = [
            h
            for (name, event_type), h in self.handlers.items()
            if event_type is type(event) and durable in ("", name)
        ]
        if len(handlers) != 1:
            raise LookupError(f"{len(handlers)} handlers for {type(event).__name__} {durable!r}")
        try:
            events.validate_meta(event)
        except DomainError as exc:
            self.parked.append((event, f"malformed: {exc}"))
            return self.PARKED
        try:
            await handlers[0](event)
        except (Retry, Unavailable):
            return self.RETRY
        except DomainError as exc:
            self.parked.append((event, f"{type(exc).__name__}: {exc}"))
            return self.PARKED
        except Exception:
            return self.RETRY
        return self.ACK

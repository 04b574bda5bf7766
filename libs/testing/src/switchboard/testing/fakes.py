"""Fakes of Switchboard's own interfaces, for unit tests that run without nats-server."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from nats.js import api as js_api
from nats.js.errors import (
    BadRequestError,
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    ObjectNotFoundError,
)
from nats.js.kv import VALID_KEY_RE, KeyValue
from nats.js.object_store import ObjectStore

from switchboard.core import events, stores
from switchboard.core.errors import DomainError, NotFound, Retry, Unavailable

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

    async def publish_async(self, event: Message, traceparent: str = "") -> asyncio.Future[bool]:
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


class FakeKeyValue:
    """A `switchboard.core.stores.KeyValueBucket` in memory, with JetStream's answers (as
    nats-server 2.15 gives them): one revision sequence for the bucket, KeyNotFoundError for a key
    never written, deleted or purged, KeyWrongLastSequenceError when `update` names a revision
    that is not the key's last (0 for a new key), a BadRequestError when `delete` does,
    NoKeysError from `keys` of an empty bucket and InvalidKeyError for a key JetStream would
    refuse.

    `fail` (an exception) makes every call fail with it, as when JetStream is away."""

    def __init__(self, bucket: str = "fake") -> None:
        self.bucket = bucket
        self.fail: BaseException | None = None
        self.revision = 0  # the bucket's last
        self._last: dict[str, KeyValue.Entry] = {}  # by key; a deleted key keeps its marker

    async def _check(self, key: str) -> int:
        """The key's last revision (0 for a key never written), after letting another caller run
        (as a round trip to JetStream would), so a read-modify-write can lose a race."""
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if not key or key[0] == "." or key[-1] == "." or not VALID_KEY_RE.match(key):
            raise InvalidKeyError(key)
        found = self._last.get(key)
        return (found.revision or 0) if found is not None else 0

    def _write(self, key: str, value: bytes | None, operation: str | None = None) -> int:
        self.revision += 1
        self._last[key] = KeyValue.Entry(
            self.bucket, key, value or None, self.revision, None, None, operation
        )
        return self.revision

    async def get(self, key: str) -> KeyValue.Entry:
        await self._check(key)
        last = self._last.get(key)
        if last is None:
            raise KeyNotFoundError
        found = dataclasses.replace(last, operation=None)
        if last.operation in ("DEL", "PURGE"):
            raise KeyNotFoundError(found, last.operation)
        return found

    async def put(self, key: str, value: bytes) -> int:
        await self._check(key)
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        current = await self._check(key)
        if (last or 0) != current:
            raise KeyWrongLastSequenceError(f"wrong last sequence: {current}")
        return self._write(key, value)

    async def delete(self, key: str, last: int | None = None) -> bool:
        current = await self._check(key)
        if last and last != current:
            raise BadRequestError(
                code=400, err_code=10071, description=f"wrong last sequence: {current}"
            )
        self._write(key, None, "DEL")
        return True

    async def purge(self, key: str) -> bool:
        await self._check(key)
        self._write(key, None, "PURGE")
        return True

    async def keys(self) -> list[str]:
        if self.fail is not None:
            raise self.fail
        found = [k for k, e in self._last.items() if e.operation not in ("DEL", "PURGE")]
        if not found:
            raise NoKeysError
        return found

    def values(self) -> dict[str, bytes | None]:
        """Every key's value, deleted keys left out (for a test to look at)."""
        return {k: e.value for k, e in self._last.items() if e.operation not in ("DEL", "PURGE")}


class FakeObjectStore:
    """A `switchboard.core.stores.ObjectBucket` in memory: ObjectNotFoundError for a name never
    put or deleted; a put replaces the object of the same name, with its metadata (described by
    `meta`)."""

    def __init__(self, bucket: str = "fake") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.puts = 0  # how many times an object was written
        self._infos: dict[str, js_api.ObjectInfo] = {}
        self._deleted: dict[str, js_api.ObjectInfo] = {}  # what a delete left: a marker

    async def get_info(self, name: str, show_deleted: bool = False) -> js_api.ObjectInfo:
        try:
            return dataclasses.replace(self._infos[name])
        except KeyError:
            if show_deleted and name in self._deleted:
                return dataclasses.replace(self._deleted[name])
            raise ObjectNotFoundError from None

    async def get(self, name: str) -> ObjectStore.ObjectResult:
        info = await self.get_info(name)
        return ObjectStore.ObjectResult(info=info, data=self.objects[name])

    async def put(
        self, name: str, data: bytes, meta: js_api.ObjectMeta | None = None
    ) -> js_api.ObjectInfo:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        info = js_api.ObjectInfo(
            name=name,
            bucket=self.bucket,
            nuid=uuid.uuid4().hex,
            size=len(data),
            mtime=datetime.now(UTC).isoformat(),
            chunks=1 if data else 0,
            digest=f"SHA-256={digest}",
            description=meta.description if meta is not None else None,
            headers=meta.headers if meta is not None else None,
        )
        self.objects[name] = bytes(data)
        self._infos[name] = info
        self._deleted.pop(name, None)
        self.puts += 1
        return dataclasses.replace(info)

    async def delete(self, name: str) -> ObjectStore.ObjectResult:
        info = await self.get_info(name)
        del self.objects[name], self._infos[name]
        self._deleted[name] = dataclasses.replace(info, deleted=True, size=0, chunks=0, digest="")
        return ObjectStore.ObjectResult(info=info, data=b"")


class FakeObjectStores(stores.ObjectStores):
    """`switchboard.core.stores.ObjectStores` over FakeObjectStore buckets (`buckets`, by name):
    a bucket exists once created, by a first put or given here."""

    def __init__(self, *buckets: str) -> None:
        super().__init__(js=None)  # type: ignore[arg-type]  # JetStream is reached only in _bind
        self.buckets = {name: FakeObjectStore(name) for name in buckets}

    async def _bind(self, bucket: str, create: bool) -> stores.ObjectBucket:
        found = self.buckets.get(bucket)
        if found is None:
            if not create:
                raise NotFound("bucket", bucket)
            found = self.buckets[bucket] = FakeObjectStore(bucket)
        return found


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

"""JetStream stores every service opens the same way: key-value buckets and object stores bound
to, or created on first use (file storage, with the deployment's replicas), and the
AttachmentRef that names an object in a message.

The adapters hold a bucket as `KeyValueBucket` or `ObjectBucket`, the part of nats.py's
KeyValue and ObjectStore they use, so a unit test passes the in-memory ones of
`switchboard.testing.fakes` instead."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
    NotFoundError,
    ObjectNotFoundError,
)
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from switchboard.core import tasks
from switchboard.core.errors import Erased, NotFound
from switchboard.v1 import contact_pb2

logger = logging.getLogger(__name__)

# How long a bucket's scan waits for its watch's next entry before reading the rest key by key.
SCAN_STALL_SECONDS = 5.0


class KeyValueBucket(Protocol):
    """A key-value bucket as the services use it (nats.js.kv.KeyValue). Every write returns the
    new revision; `get` raises KeyNotFoundError for a key never written or deleted; `update`
    (also of a new key, whose last revision is 0) raises KeyWrongLastSequenceError when `last`
    is not the key's last revision, and `delete` with a `last` a BadRequestError. `purge`
    removes every revision of the key, leaving a marker that holds no value."""

    async def get(self, key: str) -> KeyValue.Entry: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...

    async def delete(self, key: str, last: int | None = None) -> bool: ...

    async def keys(self) -> list[str]: ...

    async def purge(self, key: str) -> bool: ...


class ObjectBucket(Protocol):
    """An object store bucket as the services use it (nats.js.object_store.ObjectStore): `get`,
    `get_info` and `delete` raise ObjectNotFoundError for a name never put, or deleted (unless
    `get_info` is asked to `show_deleted`)."""

    async def get(self, name: str) -> ObjectStore.ObjectResult: ...

    async def get_info(self, name: str, show_deleted: bool = False) -> js_api.ObjectInfo: ...

    async def put(
        self, name: str, data: bytes, meta: js_api.ObjectMeta | None = None
    ) -> js_api.ObjectInfo: ...

    async def delete(self, name: str) -> ObjectStore.ObjectResult: ...


async def key_value(
    js: JetStreamContext,
    bucket: str,
    *,
    history: int = 1,
    replicas: int = 1,
    ttl: float | None = None,
) -> KeyValue:
    """Bind to the key-value `bucket`, creating it (file storage, `history` values a key,
    `replicas` copies, values expiring after `ttl` seconds if given) when it does not exist
    yet."""
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BadRequestError):
        try:
            return await js.create_key_value(
                js_api.KeyValueConfig(
                    bucket=bucket,
                    history=history,
                    storage=js_api.StorageType.FILE,
                    replicas=replicas,
                    ttl=ttl,
                )
            )
        except BadRequestError:  # created concurrently by another replica
            return await js.key_value(bucket)


async def object_store(js: JetStreamContext, bucket: str, *, replicas: int = 1) -> ObjectStore:
    """Bind to the object store `bucket`, creating it (file storage, `replicas` copies) when it
    does not exist yet."""
    try:
        return await js.object_store(bucket)
    except (NotFoundError, BadRequestError):
        try:
            return await js.create_object_store(
                bucket,
                js_api.ObjectStoreConfig(
                    bucket=bucket, storage=js_api.StorageType.FILE, replicas=replicas
                ),
            )
        except BadRequestError:  # created concurrently by another replica
            return await js.object_store(bucket)


async def entry(kv: KeyValueBucket, key: str) -> KeyValue.Entry | None:
    """The current entry of `key`; None when there is none (never written, deleted or purged)."""
    try:
        found = await kv.get(key)
    except (KeyNotFoundError, NotFoundError):  # KeyDeletedError is a KeyNotFoundError
        return None
    if found is None or found.operation in ("DEL", "PURGE"):
        return None
    return found


async def create(kv: KeyValue, key: str, value: bytes) -> int | None:
    """Write `key` when it holds no value (never written, deleted, purged or expired): the new
    revision, or None when it holds one. The client's create, finding the key, reads it to see
    whether it is a delete marker; an entry expiring between the two makes that read raise 'key
    not found' although the key is free, so the create is tried again then."""
    for _ in range(3):
        try:
            return int(await kv.create(key, value))
        except KeyWrongLastSequenceError:
            return None
        except KeyNotFoundError:
            continue
    return None


async def value(kv: KeyValueBucket, key: str) -> bytes | None:
    """The value of `key`; None when there is none or it is empty."""
    found = await entry(kv, key)
    return found.value if found is not None and found.value else None


async def keys(kv: KeyValueBucket) -> list[str]:
    """Every key the bucket holds (none is not an error)."""
    try:
        found = list(await kv.keys())
    except NoKeysError:
        found = []
    if not found and isinstance(kv, KeyValue):
        return [e.key for e in await missed_by_watch(kv, ">")]
    return found


async def matching(kv: KeyValue, pattern: str) -> list[KeyValue.Entry]:
    """The current entries of the keys matching `pattern` (deleted and purged ones left out), read
    with one watch (see `_scan`)."""
    return [found async for found in _scan(kv, pattern)]


async def _scan(kv: KeyValue, pattern: str) -> AsyncIterator[KeyValue.Entry]:
    """The current entry of each key matching `pattern` (deleted and purged ones left out), as one
    watch of each key's last revision delivers them, up to the watch's sign that every key there at
    the start has been read. A watch that found nothing, or that went `SCAN_STALL_SECONDS` without
    delivering its next entry or that sign, is finished key by key (`missed_by_watch`): a scan
    never waits for ever on an ordered consumer that lost its place."""
    watcher = await kv.watch(pattern, ignore_deletes=True)
    seen: set[str] = set()
    stalled = False
    try:
        while True:
            try:
                found = watcher._updates.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    found = await watcher.updates(timeout=SCAN_STALL_SECONDS)
                except NatsTimeoutError:
                    stalled = True
                    logger.warning(
                        "reading %s (%s): the watch stalled after %d keys; reading the rest key by"
                        " key",
                        kv._name,
                        pattern,
                        len(seen),
                    )
                    break
            if not isinstance(found, KeyValue.Entry):  # None: every key there has been read
                break
            seen.add(found.key)
            yield found
    finally:
        await watcher.stop()
    if stalled or not seen:
        for found in await missed_by_watch(kv, pattern):
            if found.key not in seen:
                yield found


async def missed_by_watch(kv: KeyValue, pattern: str) -> list[KeyValue.Entry]:
    """The current entries of the keys matching `pattern`, read key by key; for a watch of
    `pattern` that found nothing. nats.py's watcher signals that every key has been read as
    soon as its consumer has nothing pending and it has received nothing yet, which is also
    true while the server's first messages are on their way (a busy process): a bucket that
    holds keys then reads as empty. The stream's own count of messages per subject tells."""
    info = await kv._js.stream_info(kv._stream, subjects_filter=f"{kv._pre}{pattern}")
    found: list[KeyValue.Entry] = []
    for subject in info.state.subjects or {}:
        try:
            found.append(await kv.get(subject[len(kv._pre) :]))
        except KeyNotFoundError:  # deleted or purged (KeyDeletedError is one)
            continue
    return found


async def subject_messages(
    js: JetStreamContext, stream: str, subject: str, since_seq: int = 0
) -> list[Msg]:
    """Every message of `subject` in `stream` after stream sequence `since_seq`, oldest first,
    read by an ephemeral pull consumer: it is asked how many messages it has, and that many are
    read. A new consumer may count none while the subject holds messages (seen under load); then
    it reads up to the subject's last message, so a subject with messages never reads as empty."""
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.NONE,
        inactive_threshold=30.0,
        **(
            {
                "deliver_policy": js_api.DeliverPolicy.BY_START_SEQUENCE,
                "opt_start_seq": since_seq + 1,
            }
            if since_seq > 0
            else {"deliver_policy": js_api.DeliverPolicy.ALL}
        ),
    )
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    out: list[Msg] = []
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        last = 0 if pending else await _last_seq(js, stream, subject)
        while pending > 0 or (
            last > since_seq and (not out or out[-1].metadata.sequence.stream < last)
        ):
            for msg in await sub.fetch(min(max(pending, 1), 256), timeout=5.0):
                out.append(msg)
                pending = msg.metadata.num_pending
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # the ephemeral consumer expires by itself
            pass
    return out


async def _last_seq(js: JetStreamContext, stream: str, subject: str) -> int:
    """The stream sequence of `subject`'s last message, 0 if none."""
    try:
        return int((await js.get_last_msg(stream, subject)).seq or 0)
    except NotFoundError:
        return 0


async def history(kv: KeyValue, key: str) -> list[KeyValue.Entry]:
    """Every revision the bucket keeps of `key` (deletes and purges included), oldest first; none
    is an empty list. nats.py's `history` ends where its watcher signals that everything has been
    read, which comes too early while the server's first messages are on their way (see
    `missed_by_watch`), and a key with revisions then has none; `subject_messages` counts first."""
    return [
        KeyValue.Entry(
            bucket=kv._name,
            key=key,
            value=msg.data,
            revision=msg.metadata.sequence.stream,
            delta=msg.metadata.num_pending,
            created=msg.metadata.timestamp,  # type: ignore[arg-type]  # as nats.py fills it
            operation=(msg.headers or {}).get("KV-Operation"),
        )
        for msg in await subject_messages(kv._js, kv._stream, f"{kv._pre}{key}")
    ]


async def current(kv: KeyValueBucket) -> AsyncIterator[KeyValue.Entry]:
    """Every key's current entry (deleted and purged keys left out), as the scan reaches it. A
    JetStream bucket is read in one pass (an ordered consumer of each key's last revision, which
    ends at the last key there when the scan began); another KeyValueBucket key by key."""
    if isinstance(kv, KeyValue):
        async for scanned in _scan(kv, ">"):
            yield scanned
        return
    for key in await keys(kv):
        found = await entry(kv, key)
        if found is not None:
            yield found


# What a followed bucket calls for each key's value: (key, value, revision).
OnValue = Callable[[str, str, int], Awaitable[None] | None]


async def follow(kv: KeyValue, on_value: OnValue, name: str) -> asyncio.Task[None]:
    """A task calling `on_value` for every key's value as it is now and whenever it changes
    (deletes left out), until cancelled (`stop_following`). A value that `on_value` fails on is
    logged and skipped; the following goes on."""
    watcher = await kv.watchall(ignore_deletes=True)

    async def run() -> None:
        try:
            async for found in watcher:
                if found is None or not found.key or not found.value:
                    continue
                try:
                    result = on_value(found.key, found.value.decode(), int(found.revision or 0))
                    if result is not None:
                        await result
                except Exception:
                    logger.exception("%s: applying the value of %s failed", name, found.key)
        finally:
            await watcher.stop()

    return asyncio.create_task(run(), name=name)


async def stop_following(task: asyncio.Task[None] | None) -> None:
    """Cancel a `follow` task and wait for it to end. The caller being cancelled meanwhile is
    cancelled (the task's own cancellation or failure is not its concern)."""
    await tasks.cancel_and_wait(task)


def attachment_ref(
    bucket: str, name: str, filename: str, content_type: str, data: bytes
) -> contact_pb2.AttachmentRef:
    """The reference to `data` stored as `name` in `bucket`, with its size and SHA-256."""
    return contact_pb2.AttachmentRef(
        bucket=bucket,
        object_name=name,
        filename=filename,
        content_type=content_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


class ObjectStores:
    """Objects by bucket and name; a bucket is bound once, and created on first put."""

    def __init__(self, js: JetStreamContext, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas  # copies of a bucket created here (NATS_STREAM_REPLICAS)
        self._stores: dict[str, ObjectBucket] = {}

    async def bucket(self, bucket: str, create: bool = False) -> ObjectBucket:
        """The object store `bucket`; NotFound when it does not exist and `create` is false."""
        store = self._stores.get(bucket)
        if store is None:
            store = await self._bind(bucket, create)
            self._stores[bucket] = store
        return store

    async def _bind(self, bucket: str, create: bool) -> ObjectBucket:
        """JetStream's object store `bucket` (created if need be when `create`)."""
        if create:
            return await object_store(self.js, bucket, replicas=self.replicas)
        try:
            return await self.js.object_store(bucket)
        except (NotFoundError, BadRequestError):
            raise NotFound("bucket", bucket) from None

    async def put(self, bucket: str, name: str, data: bytes, description: str = "") -> None:
        """Store `data` as `name` (returns once JetStream has it), creating the bucket if need be."""
        store = await self.bucket(bucket, create=True)
        meta = js_api.ObjectMeta(name=name, description=description) if description else None
        await store.put(name, data, meta=meta)

    async def get(self, bucket: str, name: str) -> bytes:
        """The bytes of `name`; NotFound when the bucket or the object does not exist, Erased
        (a NotFound) when it was deleted (only an erasure deletes the channels' objects)."""
        store = await self.bucket(bucket)
        reading = asyncio.ensure_future(store.get(name))
        try:
            # An object erased while it is read (its metadata marked deleted, then its chunks
            # purged) leaves nats-py waiting for chunks that will never come: look now and then.
            while not (await asyncio.wait({reading}, timeout=ERASURE_CHECK_SECONDS))[0]:
                if await _deleted(store, name):
                    raise Erased("object", f"{bucket}/{name}")
            result = reading.result()
        except (ObjectNotFoundError, NotFoundError):
            if await _deleted(store, name):
                raise Erased("object", f"{bucket}/{name}") from None
            raise NotFound("object", f"{bucket}/{name}") from None
        finally:
            reading.cancel()  # (done already, unless the object was erased or we are cancelled)
        return bytes(result.data or b"")

    async def delete(self, bucket: str, name: str) -> bool:
        """Delete `name` (its chunks are purged); False when there was nothing to delete (no such
        bucket or object, or deleted before), so a retried deletion is a no-op."""
        try:
            store = await self.bucket(bucket)
        except NotFound:
            return False
        try:
            await store.delete(name)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return True

    async def get_ref(self, ref: contact_pb2.AttachmentRef) -> bytes:
        """The bytes `ref` names; NotFound when its bucket or object does not exist."""
        return await self.get(ref.bucket, ref.object_name)


# How often a read of an object that has not finished looks whether the object was erased.
ERASURE_CHECK_SECONDS = 1.0


async def _deleted(store: ObjectBucket, name: str) -> bool:
    """Whether `name` was stored and deleted since (its metadata says so)."""
    try:
        info = await store.get_info(name, show_deleted=True)
    except (ObjectNotFoundError, NotFoundError):
        return False
    return bool(info.deleted)

"""The email channel's durable state in JetStream: mailbox checkpoints and the thread index in
key-value buckets, raw messages and attachments in the object store.

Of these, the thread index holds personal data (the customer's address and the subject), so an
erased customer's entries are purged (`forget_contacts`). The seen set (a hash of the mail's
Message-ID and bytes, and the contact id) and the sent set (command ids and our own Message-IDs)
hold none, and are kept: the seen set is what stops the erased customer's mail, fetched again,
from becoming a contact again. The raw mail is the case service's to delete."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError
from nats.js.object_store import (
    OBJ_CHUNKS_PRE_TEMPLATE,
    OBJ_DEFAULT_CHUNK_SIZE,
    OBJ_DIGEST_TEMPLATE,
    OBJ_META_PRE_TEMPLATE,
)
from nats.nuid import NUID

from switchboard.core import stores
from switchboard.core.acks import AckPublisher
from switchboard.v1 import contact_pb2, email_pb2

logger = logging.getLogger(__name__)

CHECKPOINTS = "email_checkpoints"
THREADS = "email_threads"
SEEN = "email_seen"
SENT = "email_sent"
OBJECTS = "email"


class LastValues:
    """The last message of many subjects of one stream in one request: a batch direct get
    (`multi_last`, NATS 2.11 and later, on a stream that allows direct gets). A batch of mail
    looks up its seen-set keys, and whether its objects are stored, with one request each
    instead of one per mail.

    Where the server cannot answer so (an older server, direct gets not allowed), `get` raises
    `LastValuesUnavailable` and the caller looks the subjects up one at a time."""

    MAX_SUBJECTS = 256  # per request (the server caps a batch)

    def __init__(self, nc: NATS, stream: str, timeout: float = 5.0) -> None:
        self.nc = nc
        self.stream = stream
        self.timeout = timeout
        self.available = True

    async def get(self, subjects: list[str]) -> dict[str, tuple[dict[str, str], bytes]]:
        """subject -> (headers, data) of its last message, for the subjects that have one."""
        if not self.available:
            raise LastValuesUnavailable(f"no batch direct get on {self.stream}")
        found: dict[str, tuple[dict[str, str], bytes]] = {}
        for i in range(0, len(subjects), self.MAX_SUBJECTS):
            part = subjects[i : i + self.MAX_SUBJECTS]
            found.update(await self._get(part))
        return found

    async def _get(self, subjects: list[str]) -> dict[str, tuple[dict[str, str], bytes]]:
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        found: dict[str, tuple[dict[str, str], bytes]] = {}
        try:
            request = json.dumps({"multi_last": subjects, "batch": len(subjects)}).encode()
            await self.nc.publish(f"$JS.API.DIRECT.GET.{self.stream}", request, reply=inbox)
            while True:
                try:
                    msg = await sub.next_msg(self.timeout)
                except TimeoutError as exc:
                    raise LastValuesUnavailable(f"no answer from {self.stream}") from exc
                headers = dict(msg.headers or {})
                status = headers.get("Status", "")
                if status == "204":  # end of the batch
                    return found
                if status == "404":  # none of the subjects has a message
                    return {}
                if status:
                    # 503: no responders (direct gets not allowed); 408/400: no batch gets.
                    self.available = False
                    logger.info(
                        "stream %s answers no batch direct get (%s %s): looking keys up one at "
                        "a time",
                        self.stream,
                        status,
                        headers.get("Description", ""),
                    )
                    raise LastValuesUnavailable(f"{self.stream}: {status}")
                subject = headers.get("Nats-Subject", "")
                if subject:
                    found[subject] = (headers, msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class LastValuesUnavailable(Exception):
    """The server cannot answer a batch direct get: look the subjects up one at a time."""


async def _values(
    lookup: LastValues | None, bucket: str, keys: list[str]
) -> dict[str, bytes | None] | None:
    """The current value of each key of key-value `bucket` (None where it has none or it was
    deleted or purged), in one request; None if `lookup` cannot answer so."""
    if not keys:
        return {}
    if lookup is None:
        return None
    try:
        found = await lookup.get([f"$KV.{bucket}.{k}" for k in keys])
    except LastValuesUnavailable:
        return None
    values: dict[str, bytes | None] = {}
    for k in keys:
        headers, data = found.get(f"$KV.{bucket}.{k}", ({}, b""))
        deleted = headers.get("KV-Operation") in ("DEL", "PURGE")
        values[k] = None if deleted or not data else data
    return values


async def batch_lookup(js: JetStreamContext, stream: str) -> LastValues | None:
    """Let `stream` answer direct gets and return its `LastValues`; None where it cannot."""
    try:
        info = await js.stream_info(stream)
        if not info.config.allow_direct:
            config = info.config
            config.allow_direct = True
            await js.update_stream(config)
    except Exception as exc:
        logger.info("stream %s: direct gets not enabled (%r)", stream, exc)
        return None
    return LastValues(js._nc, stream)


class EmailState:
    """Checkpoints, the thread index, the seen set and the sent set."""

    def __init__(
        self,
        checkpoints: stores.KeyValueBucket,
        threads: stores.KeyValueBucket,
        seen: stores.KeyValueBucket,
        sent: stores.KeyValueBucket,
        acks: AckPublisher | None = None,
        seen_lookup: LastValues | None = None,
        threads_lookup: LastValues | None = None,
    ) -> None:
        self.checkpoints = checkpoints
        self.threads = threads
        self.seen = seen
        self.sent = sent
        # Pipelines a batch's key-value writes (one wait for all their acks) when given.
        self.acks = acks
        # Look a batch's seen-set keys, and its thread-index keys, up in one request when given.
        self.seen_lookup = seen_lookup
        self.threads_lookup = threads_lookup

    @classmethod
    async def open(
        cls, js: JetStreamContext, replicas: int = 1, acks: AckPublisher | None = None
    ) -> EmailState:
        seen = await stores.key_value(js, SEEN, replicas=replicas)
        threads = await stores.key_value(js, THREADS, replicas=replicas)
        return cls(
            await stores.key_value(js, CHECKPOINTS, history=5, replicas=replicas),
            threads,
            seen,
            await stores.key_value(js, SENT, replicas=replicas),
            acks,
            await batch_lookup(js, f"KV_{SEEN}"),
            await batch_lookup(js, f"KV_{THREADS}"),
        )

    async def _put_all(
        self, bucket: str, kv: stores.KeyValueBucket, items: dict[str, bytes]
    ) -> None:
        """Write every key and return once JetStream has stored them all (or raise)."""
        if self.acks is None:
            await asyncio.gather(*(kv.put(k, v) for k, v in items.items()))
            return
        await self.acks.publish_all([(f"$KV.{bucket}.{k}", v, None) for k, v in items.items()])

    # ---- checkpoints --------------------------------------------------------------------------

    async def checkpoint(self, mailbox: str) -> email_pb2.MailboxCheckpoint | None:
        data = await stores.value(self.checkpoints, safe_key(mailbox))
        return email_pb2.MailboxCheckpoint.FromString(data) if data else None

    async def save_checkpoint(
        self, mailbox: str, uidvalidity: int, last_uid: int, previous_uidvalidity: int = 0
    ) -> None:
        cp = email_pb2.MailboxCheckpoint(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            last_uid=last_uid,
            previous_uidvalidity=previous_uidvalidity,
        )
        cp.updated_at.FromDatetime(datetime.now(UTC))
        await self.checkpoints.put(safe_key(mailbox), cp.SerializeToString())

    # ---- seen: what has been published (Message-ID + content hash) ----------------------------

    async def seen_id(self, key: str) -> str:
        data = await stores.value(self.seen, key)
        return data.decode() if data else ""

    async def seen_ids(self, keys: list[str]) -> list[str]:
        """`seen_id` of each key: one request for the whole batch where the server can."""
        found = await _values(self.seen_lookup, SEEN, keys)
        if found is not None:
            return [(found.get(k) or b"").decode() for k in keys]
        return list(await asyncio.gather(*(self.seen_id(k) for k in keys)))

    async def mark_seen(self, key: str, contact_id: str) -> None:
        await self.seen.put(key, contact_id.encode())

    async def record(
        self,
        entries: list[tuple[list[str], email_pb2.ThreadEntry]],
        seen: list[tuple[str, str]],
    ) -> None:
        """Index a batch's thread entries, then mark its mails seen (key, contact id): a mail in
        the seen set always has its thread entries. Each group is written pipelined."""
        indexed: dict[str, bytes] = {}
        for keys, entry in entries:
            entry.updated_at.FromDatetime(datetime.now(UTC))
            data = entry.SerializeToString()
            indexed.update(dict.fromkeys(keys, data))
        await self._put_all(THREADS, self.threads, indexed)
        await self._put_all(SEEN, self.seen, {k: v.encode() for k, v in seen})

    # ---- the thread index ---------------------------------------------------------------------

    async def thread(self, key: str) -> email_pb2.ThreadEntry | None:
        data = await stores.value(self.threads, key)
        return email_pb2.ThreadEntry.FromString(data) if data else None

    async def threads_of(self, keys: list[str]) -> dict[str, email_pb2.ThreadEntry | None]:
        """`thread` of each key: one request for the whole batch where the server can."""
        found = await _values(self.threads_lookup, THREADS, keys)
        if found is None:
            entries = await asyncio.gather(*(self.thread(k) for k in keys))
            return dict(zip(keys, entries, strict=True))
        return {k: email_pb2.ThreadEntry.FromString(v) if v else None for k, v in found.items()}

    async def put_threads(self, keys: list[str], entry: email_pb2.ThreadEntry) -> None:
        entry.updated_at.FromDatetime(datetime.now(UTC))
        data = entry.SerializeToString()
        await asyncio.gather(*(self.threads.put(k, data) for k in dict.fromkeys(keys)))

    async def forget_contacts(self, tenant: str, contact_ids: Iterable[str]) -> int:
        """Purge every thread-index entry of `tenant` that belongs to one of `contact_ids` (an
        erased customer's), under each of its keys (contact, conversation, Message-IDs, sender
        and subject, case number), with every earlier revision; the number of keys purged.

        The keys are hashes, so the entries are found by their value: one pass over the index.
        An entry a later contact of someone else overwrote is that contact's, and stays."""
        wanted = frozenset(contact_ids) - {""}
        if not wanted:
            return 0
        theirs: list[str] = []
        async for found in stores.current(self.threads):
            try:
                entry = email_pb2.ThreadEntry.FromString(found.value or b"")
            except DecodeError:
                continue
            if entry.tenant == tenant and entry.contact_id in wanted:
                theirs.append(found.key)
        for key in theirs:
            await self.threads.purge(key)
        return len(theirs)

    # ---- sent commands (idempotent outbound) --------------------------------------------------

    async def sent_message_id(self, command_id: str) -> str:
        data = await stores.value(self.sent, safe_key(command_id))
        return data.decode() if data else ""

    async def mark_sent(self, command_id: str, message_id: str) -> None:
        await self.sent.put(safe_key(command_id), message_id.encode())


def safe_key(name: str) -> str:
    """A key for a free-form name (keys allow [-/_=.a-zA-Z0-9])."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    if cleaned == name and name:
        return name
    return f"{cleaned[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"


class EmailObjects:
    """Raw messages and attachments, named by content so a re-ingested mail stores nothing twice."""

    def __init__(
        self,
        obs: stores.ObjectBucket,
        acks: AckPublisher | None = None,
        lookup: LastValues | None = None,
    ) -> None:
        self.obs = obs
        # Pipelines a batch's single-chunk objects (see store_many) when given.
        self.acks = acks
        # Finds which of a batch's objects are stored in one request when given.
        self.lookup = lookup
        self._nuid = NUID()

    @classmethod
    async def open(
        cls, js: JetStreamContext, replicas: int = 1, acks: AckPublisher | None = None
    ) -> EmailObjects:
        obs = await stores.object_store(js, OBJECTS, replicas=replicas)
        return cls(obs, acks, await batch_lookup(js, f"OBJ_{OBJECTS}"))

    @staticmethod
    def _meta_subject(name: str) -> str:
        return OBJ_META_PRE_TEMPLATE.format(
            bucket=OBJECTS, obj=base64.urlsafe_b64encode(name.encode()).decode()
        )

    async def _exist(self, names: list[str]) -> list[bool]:
        """Whether each object is stored (and not deleted): one request where the server can."""
        if self.lookup is not None and names:
            try:
                found = await self.lookup.get([self._meta_subject(n) for n in names])
            except LastValuesUnavailable:
                pass
            else:
                result = []
                for name in names:
                    _, data = found.get(self._meta_subject(name), ({}, b""))
                    try:
                        result.append(bool(data) and not json.loads(data).get("deleted"))
                    except ValueError:
                        result.append(False)  # unreadable metadata: stored again
                return result
        return list(await asyncio.gather(*(self._exists(n) for n in names)))

    def ref(
        self, tenant: str, kind: str, filename: str, content_type: str, data: bytes
    ) -> contact_pb2.AttachmentRef:
        """The reference `data` will have once stored (its name comes from its content)."""
        digest = hashlib.sha256(data).hexdigest()
        return stores.attachment_ref(
            OBJECTS, f"{tenant}/{kind}/{digest}", filename, content_type, data
        )

    async def store(self, ref: contact_pb2.AttachmentRef, data: bytes) -> None:
        """Store `data` under its reference, unless an earlier mail stored the same content."""
        try:
            await self.obs.get_info(ref.object_name)
        except (ObjectNotFoundError, NotFoundError):
            await self.obs.put(
                ref.object_name,
                data,
                meta=js_api.ObjectMeta(name=ref.object_name, description=ref.filename),
            )

    async def _exists(self, name: str) -> bool:
        try:
            await self.obs.get_info(name)
        except (ObjectNotFoundError, NotFoundError):
            return False
        return True

    async def store_many(self, items: list[tuple[contact_pb2.AttachmentRef, bytes]]) -> None:
        """Store every object not stored before; return once JetStream has them all (or raise).

        An object of one chunk is written as the object store writes it (its chunk, then its
        metadata), but all of the batch's chunks go out pipelined with one wait for their acks
        (one `publish_all`), then all the metadata with one more: two waits per batch instead of
        four round trips per object. Larger objects, and every object without an ack publisher, go through `store`.
        """
        if self.acks is None:
            await asyncio.gather(*(self.store(ref, data) for ref, data in items))
            return
        found = await self._exist([ref.object_name for ref, _ in items])
        missing = [item for item, there in zip(items, found, strict=True) if not there]
        small = [(r, d) for r, d in missing if 0 < len(d) <= OBJ_DEFAULT_CHUNK_SIZE]
        large = [(r, d) for r, d in missing if not 0 < len(d) <= OBJ_DEFAULT_CHUNK_SIZE]
        infos: list[js_api.ObjectInfo] = []
        chunks: list[tuple[str, bytes, dict[str, str] | None]] = []
        for ref, data in small:
            nuid = self._nuid.next().decode()
            subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=OBJECTS, obj=nuid)
            chunks.append((subject, data, None))
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
            infos.append(
                js_api.ObjectInfo(
                    name=ref.object_name,
                    description=ref.filename,
                    options=js_api.ObjectMetaOptions(max_chunk_size=OBJ_DEFAULT_CHUNK_SIZE),
                    bucket=OBJECTS,
                    nuid=nuid,
                    size=len(data),
                    chunks=1,
                    mtime=datetime.now(UTC).isoformat(),
                    digest=OBJ_DIGEST_TEMPLATE.format(digest=digest),
                )
            )
        # Every chunk is stored before any metadata names it.
        await asyncio.gather(
            self.acks.publish_all(chunks), *(self.store(ref, data) for ref, data in large)
        )
        rollup = {"Nats-Rollup": "sub"}  # replaces older metadata of the name
        await self.acks.publish_all(
            [
                (self._meta_subject(info.name), json.dumps(info.as_dict()).encode(), rollup)
                for info in infos
            ]
        )

    async def put(
        self, tenant: str, kind: str, filename: str, content_type: str, data: bytes
    ) -> contact_pb2.AttachmentRef:
        ref = self.ref(tenant, kind, filename, content_type, data)
        await self.store(ref, data)
        return ref

    async def get(self, name: str) -> bytes | None:
        try:
            result = await self.obs.get(name)
        except (ObjectNotFoundError, NotFoundError):
            return None
        return result.data or b""

"""Recordings in the object store, with the case: sealed as they are written (a call's Recorder)
or at the call's end, put in the `recordings` bucket as `<tenant>/<contact id>.wav`, then named
in a MessageAdded of the contact (author SYSTEM, the recording as its attachment), so the case
service keeps it with the case and erases it with the customer. Read back only by the tenant that owns it; deleted after the
tenant's retention."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.js import api as js_api
from nats.js.errors import NotFoundError, ObjectNotFoundError

from switchboard.core import events, recording_seal, stores
from switchboard.core.errors import NotFound
from switchboard.core.publishing import Publisher
from switchboard.v1 import contact_pb2, events_pb2
from switchboard.voice_gateway.recording import sealing
from switchboard.voice_gateway.recording.policy import RecordingPolicy

logger = logging.getLogger(__name__)

BUCKET = recording_seal.BUCKET
CONTENT_TYPE = "audio/wav"
SOURCE = "voice-gateway"
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
PURGE_EVERY = 3600.0


object_name = recording_seal.object_name


class RecordingStore:
    """Seal, put, announce, fetch and purge recordings."""

    def __init__(
        self,
        objects: stores.ObjectStores,
        bus: Publisher,
        policy: RecordingPolicy,
        master_key: recording_seal.Keys,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.objects = objects
        self.bus = bus
        self.policy = policy
        self.master_key = master_key
        self.clock = clock
        self.stored = 0

    async def store(
        self, tenant: str, contact_id: str, wav: Path, seconds: float, sealed: bool = False
    ) -> None:
        """Seal `wav` (unless it is `sealed` already: a Recorder's with a Sealer), put it and
        publish the MessageAdded naming it; retried until done (the recording is never lost to
        a passing outage), then `wav` is removed."""
        delay = FIRST_RETRY
        while True:
            try:
                if sealed:
                    await self._put(tenant, contact_id, wav, seconds)
                else:
                    await self._store_once(tenant, contact_id, wav, seconds)
                break
            except Exception as exc:  # an outage of NATS or the disk: try again later
                logger.warning(
                    "recording of %s not stored yet (%s): again in %.0fs",
                    contact_id,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)
        await asyncio.to_thread(wav.unlink, missing_ok=True)
        self.stored += 1

    async def _store_once(self, tenant: str, contact_id: str, wav: Path, seconds: float) -> None:
        with tempfile.NamedTemporaryFile(dir=wav.parent) as sealed:
            await asyncio.to_thread(self._seal, tenant, contact_id, wav, sealed)
            sealed.flush()
            await self._put(tenant, contact_id, Path(sealed.name), seconds)

    async def _put(self, tenant: str, contact_id: str, sealed: Path, seconds: float) -> None:
        """Put the sealed recording and publish the MessageAdded naming it."""
        name = object_name(tenant, contact_id)
        with sealed.open("rb") as src:
            reader = _Hashing(src)
            store = await self.objects.bucket(BUCKET, create=True)
            meta = js_api.ObjectMeta(name=name, description=f"{seconds:.1f}s call recording")
            # nats.py reads a file object chunk by chunk: the recording is never all in memory,
            # and its digest is taken as it is read.
            await store.put(name, reader, meta=meta)  # type: ignore[arg-type]
        size, digest = reader.size, reader.hash.hexdigest()
        ref = contact_pb2.AttachmentRef(
            bucket=BUCKET,
            object_name=name,
            filename=f"{contact_id}.wav",
            content_type=CONTENT_TYPE,
            size_bytes=size,
            sha256=digest,
        )
        message = contact_pb2.Message(
            message_id=recording_seal.message_id(contact_id),
            contact_id=contact_id,
            author=contact_pb2.AUTHOR_SYSTEM,
            parts=[contact_pb2.ContentPart(content_type="text/plain", text="Call recording")],
            attachments=[ref],
        )
        message.sent_at.FromDatetime(self.clock())
        meta_event = events.new_meta(
            tenant, contact_pb2.CHANNEL_VOICE, SOURCE, recording_seal.message_id(contact_id)
        )
        await self.bus.publish(events_pb2.MessageAdded(meta=meta_event, message=message))
        logger.info("call %s: %.1fs recording stored", contact_id, seconds)

    def _seal(self, tenant: str, contact_id: str, wav: Path, sealed: Any) -> None:
        with wav.open("rb") as src:
            sealing.seal(self.master_key, tenant, contact_id, src, sealed)

    async def fetch(self, tenant: str, contact_id: str) -> bytes:
        """The WAV of `tenant`'s call `contact_id`; NotFound when that tenant has none (another
        tenant's recording is never found: the name and the key are both the tenant's)."""
        try:
            sealed = await self.objects.get(BUCKET, object_name(tenant, contact_id))
        except NotFound:
            raise NotFound("recording", contact_id) from None
        out = io.BytesIO()
        try:
            sealing.open_sealed(self.master_key, tenant, contact_id, io.BytesIO(sealed), out)
        except sealing.SealError:
            logger.warning("recording of %s does not open for %s", contact_id, tenant)
            raise NotFound("recording", contact_id) from None
        return out.getvalue()

    async def purge(self) -> int:
        """Delete every recording older than its tenant's retention; the number deleted."""
        try:
            store = await self.objects.bucket(BUCKET)
        except NotFound:
            return 0
        try:
            infos = await store.list(ignore_deletes=True)  # type: ignore[attr-defined]
        except (NotFoundError, ObjectNotFoundError):
            return 0
        now = self.clock()
        deleted = 0
        for info in infos:
            tenant = info.name.partition("/")[0]
            if info.deleted or not info.mtime:
                continue
            stored = _parse_time(info.mtime)
            if stored is None:
                continue
            if now - stored > timedelta(days=self.policy.retention_days(tenant)):
                if await self.objects.delete(BUCKET, info.name):
                    deleted += 1
        if deleted:
            logger.info("%d recordings past their retention deleted", deleted)
        return deleted

    async def purge_forever(self, every: float = PURGE_EVERY) -> None:
        """Purge now and then every `every` seconds (each replica may: deleting is idempotent)."""
        while True:
            try:
                await self.purge()
            except Exception:  # NATS away: the next round deletes what this one could not
                logger.exception("purging expired recordings failed")
            await asyncio.sleep(every)


class _Hashing:
    """A file read by the object store, hashed and counted as it is read."""

    def __init__(self, src: Any) -> None:
        self.src = src
        self.hash = hashlib.sha256()
        self.size = 0

    def readinto(self, buffer: Any) -> int:
        n: int = self.src.readinto(buffer)
        if n:
            self.hash.update(memoryview(buffer)[:n])
            self.size += n
        return n


def _parse_time(text: str) -> datetime | None:
    """An object's mtime (RFC 3339, nanoseconds allowed) as an aware datetime."""
    text = text.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # fromisoformat takes at most microseconds
        digits = "".join(c for c in rest if c.isdigit())
        rest = digits[:6] + rest[len(digits) :]
        text = f"{head}.{rest}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

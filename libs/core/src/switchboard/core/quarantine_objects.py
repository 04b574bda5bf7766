"""Deleting what a channel quarantined, from the object stores: on its sender's erasure, and
when its tenant's retention has passed (switchboard.core.quarantine names the items)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from google.protobuf.message import Message
from nats.js import JetStreamContext
from prometheus_client import Counter

from switchboard.core import stores, stream_erasure
from switchboard.core.quarantine import Kept, QuarantineIndex, Retention
from switchboard.v1 import case_events_pb2

logger = logging.getLogger(__name__)

DELETED = Counter(
    "switchboard_quarantine_deleted_total",
    "Quarantined items a channel deleted: because their sender was erased (erasure), or because "
    "their tenant's retention had passed (retention).",
    ["channel", "reason"],
)

# Deletes what the channel keeps of an item outside the object stores (e.g. on IMAP).
ForgetElsewhere = Callable[[Kept], Awaitable[None]]


async def _nothing_elsewhere(kept: Kept) -> None:
    return None


class QuarantineEraser:
    """Deletes quarantined items: their objects (`bucket/name` each), what `elsewhere` keeps, their
    events on the bus, and then their index keys, so that an interrupted deletion is done again
    on redelivery."""

    def __init__(
        self,
        index: QuarantineIndex,
        objects: stores.ObjectStores,
        retention: Retention,
        elsewhere: ForgetElsewhere = _nothing_elsewhere,
        channel: str = "",
        js: JetStreamContext | None = None,
        event_types: tuple[type[Message], ...] = (),
    ) -> None:
        """`channel` labels the deletions counted (switchboard_quarantine_deleted_total). With
        `js`, an item's events of `event_types` (switchboard.core.stream_erasure.ITEM_OF: those
        naming the item, which carry its sender) are securely deleted from the bus with it."""
        self.js = js
        self.event_types = event_types
        self.channel = channel
        self.index = index
        self.objects = objects
        self.retention = retention
        self.elsewhere = elsewhere

    async def _delete(self, items: list[Kept], reason: str) -> int:
        """Delete each item; one that fails (its IMAP server down, say) does not hold up the
        others, and is named by the error raised once the rest are done (a redelivered event,
        or the next sweep, tries it again)."""
        failed: list[BaseException] = []
        for kept in items:
            try:
                for path in kept.objects:
                    bucket, _, name = path.partition("/")
                    await self.objects.delete(bucket, name)
                await self.elsewhere(kept)
                if self.js is not None and self.event_types:
                    await stream_erasure.erase_items(
                        self.js, kept.tenant, self.event_types, [kept.item]
                    )
                await self.index.forget(kept)
                DELETED.labels(self.channel, reason).inc()
            except Exception as exc:
                logger.warning("deleting quarantined item %s failed: %s", kept.item, exc)
                failed.append(exc)
        if failed:
            raise failed[0]
        return len(items)

    async def erase_senders(self, tenant: str, senders: list[str]) -> int:
        """Delete `tenant`'s items from these senders (an erased customer's sender keys); the
        number deleted (0 when delivered again)."""
        return await self._delete(await self.index.of_senders(tenant, senders), "erasure")

    async def sweep(self, now: datetime | None = None) -> int:
        """Delete every item kept longer than its tenant's retention; the number deleted."""
        deleted = await self._delete(await self.index.expired(self.retention, now), "retention")
        if deleted:
            logger.info("deleted %d quarantined items past their retention", deleted)
        return deleted


class Quarantine:
    """A channel's quarantine kept within bounds: an erased customer's items deleted when
    CustomerErased names their sender, and every item past its tenant's retention deleted by a
    sweep every `sweep_seconds`, whatever its sender."""

    def __init__(self, eraser: QuarantineEraser, sweep_seconds: float, items: str) -> None:
        self.eraser = eraser
        self.sweep_seconds = sweep_seconds
        self.items = items  # what the channel quarantines, for the log: "mails", "faxes"
        self._sweeping: asyncio.Task[None] | None = None

    async def on_customer_erased(self, event: case_events_pb2.CustomerErased) -> None:
        """Delete the erased customer's quarantined items (none when delivered again)."""
        deleted = await self.eraser.erase_senders(event.meta.tenant, list(event.sender_keys))
        if deleted:
            logger.info("deleted %d quarantined %s of an erased customer", deleted, self.items)

    def start(self) -> None:
        self._sweeping = asyncio.create_task(
            self._sweep(), name=f"quarantine-retention-{self.items}"
        )

    async def _sweep(self) -> None:
        while True:
            try:
                await self.eraser.sweep()
            except Exception:  # the next round tries again
                logger.exception("the quarantine's retention sweep of %s failed", self.items)
            await asyncio.sleep(self.sweep_seconds)

    async def stop(self) -> None:
        task, self._sweeping = self._sweeping, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

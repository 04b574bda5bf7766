"""Leases in JetStream key-value: one replica at a time holds a named key, by compare-and-set
on a bucket whose entries expire after the lease TTL unless renewed.

A replica takes a lease by creating its key (or by writing over it when it still names this
replica, e.g. after a restart under the same id), renews it by writing its name over the
revision it last wrote, and loses it when a renewal finds another revision (another replica
took it after it expired). Every taking is a new revision, so `check()` tells a replica whose
renewals stalled that it has been replaced: the fencing test before acting on what it holds.
"""

from __future__ import annotations

import contextlib
import logging
import time

import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from switchboard.core import stores

logger = logging.getLogger(__name__)


class Lease:
    """The lease `key` in the key-value `bucket` (entries live `ttl` seconds), for `replica`."""

    def __init__(
        self,
        js: JetStreamContext | None,
        bucket: str,
        key: str,
        replica: str,
        ttl: float,
        replicas: int = 1,
        kv: KeyValue | None = None,
    ) -> None:
        self.js = js
        self.bucket = bucket
        self.key = key
        self.replica = replica
        self.ttl = ttl
        self.replicas = replicas
        self.revision = 0
        # time.monotonic() of the last write that made (or kept) the lease ours; 0 when not held.
        self.written_at = 0.0
        self.kv: KeyValue
        if kv is not None:
            self.kv = kv

    async def ensure(self) -> None:
        """Bind the bucket, creating it (entries expiring after the TTL) when need be. Its
        entries expire after the bucket's TTL, set by whoever created it (several holders may
        share it): a replica configured otherwise renews by the bucket's TTL, or its lease would
        lapse between renewals (or be renewed needlessly often)."""
        assert self.js is not None
        self.kv = await bucket(self.js, self.bucket, self.ttl, self.replicas)
        bucket_ttl = (await self.kv.status()).ttl
        if bucket_ttl and abs(bucket_ttl - self.ttl) > 1e-3:
            logger.warning(
                "%s expires leases after %.1fs, not %.1fs as configured: the bucket's TTL applies",
                self.bucket,
                bucket_ttl,
                self.ttl,
            )
            self.ttl = bucket_ttl

    async def try_acquire(self) -> bool:
        """Take the lease if it is free, or take it back if it still names this replica (a
        restart under the same id, or a step-down to re-read the journal): a new revision
        either way, so the previous term's renewals fail."""
        created = await stores.create(self.kv, self.key, self.replica.encode())
        if created is not None:
            self.revision = created
            self.written_at = time.monotonic()
            return True
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return False
        if (entry.value or b"").decode() != self.replica or entry.revision is None:
            return False
        return await self._write_after(entry.revision)

    async def renew(self) -> bool:
        """Keep the lease for another TTL; False when another replica wrote it meanwhile."""
        return await self._write_after(self.revision)

    async def _write_after(self, revision: int | None) -> bool:
        """Write our name over `revision`; False when another replica wrote since."""
        try:
            self.revision = await self.kv.update(self.key, self.replica.encode(), last=revision)
            self.written_at = time.monotonic()
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    def fresh(self, margin: float = 0.8) -> bool:
        """Whether the last write that kept the lease is recent enough (under `margin` of the
        TTL) for the lease to be ours still, whatever a server we cannot reach may say."""
        return self.written_at > 0 and time.monotonic() - self.written_at < self.ttl * margin

    async def check(self) -> bool:
        """Whether the lease still names this replica at the revision it last wrote (a fencing
        test: False once another replica took it, or it expired)."""
        if not self.fresh():
            return False
        before = self.revision  # a renewal may land while the entry is read: either is ours
        found = await stores.entry(self.kv, self.key)
        return (
            found is not None
            and found.revision in (before, self.revision)
            and (found.value or b"").decode() == self.replica
        )

    async def holder(self) -> str:
        """The replica the lease names ("" when free)."""
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return ""
        return (entry.value or b"").decode()

    async def release(self) -> None:
        """Give the lease up at once (another replica need not wait for it to expire)."""
        self.written_at = 0.0
        with contextlib.suppress(Exception):
            if await self.holder() == self.replica:
                await self.kv.delete(self.key)


async def bucket(js: JetStreamContext, name: str, ttl: float, replicas: int = 1) -> KeyValue:
    """The lease bucket `name`, whose entries expire `ttl` seconds after their last write."""
    return await stores.key_value(js, name, ttl=ttl, replicas=replicas)

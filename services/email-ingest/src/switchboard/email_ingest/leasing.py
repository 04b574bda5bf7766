"""Which replica reads which IMAP mailbox: one lease per mailbox in JetStream key-value, and the
mailboxes spread over the live replicas.

Every replica, every third of the lease TTL:

1. writes its heartbeat (``replicas.<replica>`` in the bucket ``email_leases``, whose entries
   expire after the TTL: the keys of the mailboxes in its configuration), then reads the live
   replicas' (those with a heartbeat);
2. renews the leases it holds (``mailboxes.<tenant>.<mailbox>``, compare-and-set on the revision
   it wrote last); a lease another replica wrote over, or one it could not renew in time, is lost,
   and the mailbox's watcher stops at once;
3. works out which replica should read each mailbox (`domain.assignment.owners`: rendezvous
   hashing among the replicas that have the mailbox, at most ceil(mailboxes / replicas) each),
   stops reading and hands over the mailboxes
   that are another replica's share, and takes the leases of its own share that are free.

A replica that dies stops renewing: its heartbeat and leases expire after the TTL, and the
survivors take its mailboxes. The watchers are fenced (see `entrypoints.imap`), and the mail a
deposed replica may still publish carries the same event ids as the new reader's (JetStream
drops the duplicate) and is in the shared seen set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from switchboard.core import leases, stores
from switchboard.core.leases import Lease
from switchboard.email_ingest import metrics
from switchboard.email_ingest.adapters.jetstream import safe_key
from switchboard.email_ingest.domain.assignment import owners
from switchboard.email_ingest.entrypoints.imap import MailboxWatcher

logger = logging.getLogger(__name__)

BUCKET = "email_leases"
REPLICAS = "replicas."
MAILBOXES = "mailboxes."


def lease_key(tenant: str, mailbox: str) -> str:
    """The key of a mailbox's lease (tenant and mailbox name)."""
    return f"{MAILBOXES}{safe_key(tenant)}.{safe_key(mailbox)}"


class MailboxLeases:
    """The leases of `watchers`' mailboxes for `replica`; a watcher runs while its lease is held."""

    def __init__(
        self, kv: KeyValue, replica: str, ttl: float, watchers: list[MailboxWatcher]
    ) -> None:
        self.kv = kv
        self.replica = safe_key(replica)
        self.ttl = ttl
        self.watchers = {lease_key(w.mailbox.tenant, w.mailbox.name): w for w in watchers}
        self.held: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        js: JetStreamContext,
        replica: str,
        ttl: float,
        watchers: list[MailboxWatcher],
        replicas: int = 1,
    ) -> MailboxLeases:
        kv = await leases.bucket(js, BUCKET, ttl, replicas)
        status = await kv.status()
        if status.ttl and abs(status.ttl - ttl) > 0.01:
            # The TTL is the bucket's, fixed when it was created: leases expire after that one.
            logger.warning(
                "bucket %s keeps entries %.1fs, not the %.1fs configured; using %.1fs",
                BUCKET,
                status.ttl,
                ttl,
                status.ttl,
            )
            ttl = status.ttl
        return cls(kv, replica, ttl, watchers)

    @property
    def interval(self) -> float:
        return max(0.1, self.ttl / 3)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="email-leases")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.balance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("mailbox leases: %r; retrying", exc)
                await self._drop_stale()

    async def balance(self) -> None:
        """One round: heartbeat, renew, hand over what is another replica's share, take ours."""
        ours = sorted(self.watchers)
        await self.kv.put(REPLICAS + self.replica, "\n".join(ours).encode())
        readers = await self._readers()
        readers[self.replica] = ours
        for key, lease in list(self.held.items()):
            try:
                renewed = await lease.renew()
            except Exception as exc:
                if lease.fresh():
                    logger.warning("mailbox lease %s: renewal failed (%r); retrying", key, exc)
                    continue
                renewed = False
            if not renewed:
                await self._stop(key, "lost")
            elif not self.watchers[key].reading:
                # Its watcher stopped, fenced out, yet the lease is still ours: read on.
                logger.info("mailbox %s: lease still ours, reading it again", key)
                self.watchers[key].start(lease)
        wanted = owners(readers)
        for key in list(self.held):
            if wanted.get(key) != self.replica:
                await self._stop(key, "handed_over", to=wanted.get(key, ""))
        for key, watcher in self.watchers.items():
            if key in self.held:
                continue
            if wanted.get(key) == self.replica:
                lease = Lease(None, BUCKET, key, self.replica, self.ttl, kv=self.kv)
                if await lease.try_acquire():
                    self.held[key] = lease
                    watcher.start(lease)
                    metrics.LEASE_CHANGES.labels("acquired").inc()
                    logger.info("mailbox %s: lease taken, reading it", watcher.mailbox.name)
                    continue
            watcher.standby(await self._holder(key))
        metrics.MAILBOXES_HELD.set(len(self.held))

    async def _readers(self) -> dict[str, list[str]]:
        """The live replicas (with a heartbeat), each with the mailboxes it has."""
        readers = {}
        for key in await stores.keys(self.kv):
            if key.startswith(REPLICAS):
                value = await stores.value(self.kv, key)
                if value:  # gone meanwhile, or no IMAP mailbox
                    readers[key.removeprefix(REPLICAS)] = value.decode().split("\n")
        return readers

    async def _holder(self, key: str) -> str:
        value = await stores.value(self.kv, key)
        return value.decode() if value else ""

    async def _drop_stale(self) -> None:
        """Stop reading every mailbox whose lease could not be renewed in time (NATS is out of
        reach: another replica may take them once they expire)."""
        for key, lease in list(self.held.items()):
            if not lease.fresh():
                await self._stop(key, "lost")
        metrics.MAILBOXES_HELD.set(len(self.held))

    async def _stop(self, key: str, change: str, to: str = "") -> None:
        """Stop reading the mailbox of `key`: the watcher first, then (handing over) the lease."""
        lease = self.held.pop(key)
        watcher = self.watchers[key]
        await watcher.stop()
        watcher.standby(to)
        metrics.LEASE_CHANGES.labels(change).inc()
        if change == "handed_over":
            await lease.release()
            logger.info("mailbox %s: handed over to replica %s", watcher.mailbox.name, to)
        else:
            logger.warning(
                "mailbox %s: lease lost (another replica took it, or it was not renewed within "
                "%.1fs); stopped reading it",
                watcher.mailbox.name,
                self.ttl,
            )

    async def stop(self, release: bool = True) -> None:
        """Stop every watcher, then (`release`) give up the leases and the heartbeat, so the other
        replicas take the mailboxes at once rather than after the TTL."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for watcher in self.watchers.values():
            await watcher.stop()
        held, self.held = self.held, {}
        metrics.MAILBOXES_HELD.set(0)
        if not release:
            return
        deadline = time.monotonic() + 5
        for lease in held.values():
            if time.monotonic() < deadline:
                await lease.release()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kv.delete(REPLICAS + self.replica), 2)

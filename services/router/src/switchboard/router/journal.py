"""Durability and availability for the router: a write-ahead journal of every input, snapshots,
and a leader lease — all in JetStream.

- **Journal.** Every input the engine accepts (an agent's RPC, a contact event, a timer tick, a
  configuration change) is appended to the stream ``ROUTER_<GROUP>`` (subject
  ``router.journal.<group>``) with the time the engine saw it. The engine is deterministic, so
  replaying the journal rebuilds exactly the state it had: the same waiting contacts, the same
  live offers with the same ids, the same agent states. Appends carry
  ``Nats-Expected-Last-Sequence``, so a replica that lost the lease and did not notice cannot
  write after the new leader (JetStream refuses it, and the old leader stops).
- **Snapshots.** Every so often the leader writes the engine's state to the object store
  ``ROUTER_SNAPSHOTS`` and records in the key-value bucket ``ROUTER`` the journal sequence it
  covers. Recovery loads the newest snapshot and replays only the journal after it.
- **Lease.** The key ``<group>`` in the key-value bucket ``ROUTER_LEASES`` (whose entries live for
  the lease TTL) names the leader. The leader renews it with compare-and-set; a standby creates
  it once it has expired. A standby tails the journal all the time, so taking over is a matter
  of catching up the last entries.

A *group* is a set of tenants served by one leader. Today one group serves every tenant; the
journal, snapshot and lease are already per group, so tenants can be split across router groups
by giving each group its own configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext

logger = logging.getLogger(__name__)

SNAPSHOT_BUCKET = "ROUTER_SNAPSHOTS"
STATE_BUCKET = "ROUTER"
LEASE_BUCKET = "ROUTER_LEASES"


class Fenced(Exception):
    """Another replica has written to the journal: this one is no longer the leader."""


@dataclass(frozen=True)
class Entry:
    seq: int
    name: str  # the engine method
    at: float  # the engine's clock when it ran
    args: tuple[Any, ...]


def encode(name: str, at: float, args: tuple[Any, ...]) -> bytes:
    return pickle.dumps((name, at, args), protocol=pickle.HIGHEST_PROTOCOL)


def decode(seq: int, data: bytes) -> Entry:
    name, at, args = pickle.loads(data)  # written only by router replicas of this deployment
    return Entry(seq, name, at, args)


class Journal:
    def __init__(self, js: JetStreamContext, group: str) -> None:
        self.js = js
        self.group = group
        self.stream = f"ROUTER_{group.upper().replace('-', '_')}"
        self.subject = f"router.journal.{group}"
        self.last_seq = 0  # the last sequence this replica knows is in the journal

    async def ensure(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=7 * 24 * 3600,
        )
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)

    async def tail_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def append(self, name: str, at: float, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Send one entry after the ones already sent; the future resolves when JetStream has it."""
        expected = self.last_seq
        self.last_seq += 1
        headers = {"Nats-Expected-Last-Sequence": str(expected)}
        future = await self.js.publish_async(
            self.subject, encode(name, at, args), headers=headers, stream=self.stream
        )
        return asyncio.ensure_future(self._checked(future, expected))

    async def _checked(self, future: asyncio.Future[Any], expected: int) -> Any:
        try:
            return await future
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164) or "wrong last sequence" in str(exc).lower():
                raise Fenced(f"journal moved past {expected}: another replica leads") from exc
            raise

    async def read(self, after: int, until: int | None = None) -> AsyncIterator[Entry]:
        """Entries after sequence `after`, up to `until` (default: the end now)."""
        end = await self.tail_seq() if until is None else until
        if end <= after:
            return
        sub = await self.js.subscribe(
            self.subject,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            ),
        )
        try:
            while True:
                msg = await sub.next_msg(timeout=10)
                seq = msg.metadata.sequence.stream
                yield decode(seq, msg.data)
                if seq >= end:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def follow(self, after: int) -> AsyncIterator[Entry]:
        """Entries after `after`, as they are written, for a hot standby."""
        sub = await self.js.subscribe(
            self.subject,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            ),
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    continue
                yield decode(msg.metadata.sequence.stream, msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class Snapshots:
    def __init__(self, js: JetStreamContext, group: str) -> None:
        self.js = js
        self.group = group

    async def ensure(self) -> None:
        self.objects = await self.js.create_object_store(SNAPSHOT_BUCKET)
        self.kv = await self.js.create_key_value(bucket=STATE_BUCKET, history=1)

    async def save(self, engine_state: bytes, seq: int) -> None:
        name = f"{self.group}-{seq}"
        await self.objects.put(name, engine_state)
        previous = await self.latest_meta()
        await self.kv.put(
            f"{self.group}.snapshot",
            json.dumps({"object": name, "seq": seq, "at": time.time()}).encode(),
        )
        if previous and previous["object"] != name:
            with contextlib.suppress(Exception):
                await self.objects.delete(previous["object"])

    async def latest_meta(self) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(f"{self.group}.snapshot")
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        meta: dict[str, Any] = json.loads(entry.value)
        return meta

    async def load(self) -> tuple[bytes, int] | None:
        meta = await self.latest_meta()
        if meta is None:
            return None
        result = await self.objects.get(meta["object"])
        return bytes(result.data or b""), int(meta["seq"])


class Lease:
    """Leader election by compare-and-set on a key that expires unless renewed."""

    def __init__(self, js: JetStreamContext, group: str, replica: str, ttl: float) -> None:
        self.js = js
        self.key = group
        self.replica = replica
        self.ttl = ttl
        self.revision = 0

    async def ensure(self) -> None:
        try:
            self.kv = await self.js.key_value(LEASE_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self.kv = await self.js.create_key_value(bucket=LEASE_BUCKET, ttl=self.ttl, history=1)

    async def try_acquire(self) -> bool:
        try:
            self.revision = await self.kv.create(self.key, self.replica.encode())
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def renew(self) -> bool:
        try:
            self.revision = await self.kv.update(
                self.key, self.replica.encode(), last=self.revision
            )
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def holder(self) -> str:
        try:
            entry = await self.kv.get(self.key)
        except nats.js.errors.KeyNotFoundError:
            return ""
        return (entry.value or b"").decode()

    async def release(self) -> None:
        with contextlib.suppress(Exception):
            if await self.holder() == self.replica:
                await self.kv.delete(self.key)

"""Durability and availability for the router: a write-ahead journal of every input, snapshots,
and a leader lease — all in JetStream.

- **Journal.** Every input the engine accepts (an agent's RPC, a contact event, a timer tick, a
  configuration change) is appended to the stream ``ROUTER_<GROUP>`` (subject
  ``router.journal.<group>``) as a typed command (``switchboard.v1.RouterCommand``, see
  ``switchboard.router.commands``) with the time the engine saw it. One entry
  (``switchboard.v1.JournalEntry``) holds the commands of one engine pass: inputs that arrive
  while an entry is being written are decided together and go into the next one (group commit).
  The engine is deterministic, so replaying the journal rebuilds exactly the state it had: the
  same waiting contacts, the same live offers with the same ids, the same agent states. Appends
  carry ``Nats-Expected-Last-Sequence``, so a replica that lost the lease and did not notice
  cannot write after the new leader (JetStream refuses it, and the old leader stops).
- **Snapshots.** Every so often the leader writes the engine's state to the object store
  ``ROUTER_SNAPSHOTS`` and records in the key-value bucket ``ROUTER`` the journal sequence it
  covers. Recovery loads the newest snapshot and replays only the journal after it.
- **Trimming.** Once a snapshot covering sequence N is stored and its record acknowledged, the
  journal's entries up to N are purged: a contact's personal data (its AddContact command) is in
  the journal only until the next snapshot. A replica reading the journal notices entries it
  has not applied that are gone (`JournalTrimmed`) and loads the newest snapshot instead. The
  stream's ``max_age`` (7 days) stays, as a backstop.
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
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client as NATS
from nats.js import api
from nats.js.client import JetStreamContext

from switchboard.core import leases, router_groups, stores
from switchboard.core.acks import AckPublisher
from switchboard.router.commands import Call, JournalFormatError, decode_command
from switchboard.v1 import router_journal_pb2

logger = logging.getLogger(__name__)

SNAPSHOT_BUCKET = "ROUTER_SNAPSHOTS"
STATE_BUCKET = "ROUTER"
LEASE_BUCKET = "ROUTER_LEASES"


class Fenced(Exception):
    """Another replica has written to the journal: this one is no longer the leader."""


class JournalTrimmed(Exception):
    """Entries after the sequence a replica has applied were purged (a snapshot covers them):
    it must load the newest snapshot, then read on from there."""


VERSION = 1  # of switchboard.v1.JournalEntry


@dataclass(frozen=True)
class Entry:
    """One journal message: the inputs one engine pass decided, in order."""

    seq: int
    calls: tuple[Call, ...]


def encode(commands: list[router_journal_pb2.RouterCommand]) -> bytes:
    return router_journal_pb2.JournalEntry(version=VERSION, commands=commands).SerializeToString()


def decode(seq: int, data: bytes) -> Entry:
    """The entry at `seq`; JournalFormatError if it is not one this replica can replay."""
    try:
        message = router_journal_pb2.JournalEntry.FromString(data)
    except DecodeError as exc:
        raise JournalFormatError(f"journal entry {seq} is not a JournalEntry: {exc}") from None
    if message.version == 0 or not message.commands:
        raise JournalFormatError(
            f"journal entry {seq} is not a JournalEntry (an empty entry, or one written by a "
            "router from before the typed journal)"
        )
    if message.version > VERSION:
        raise JournalFormatError(
            f"journal entry {seq} has format version {message.version}; this router replays "
            f"up to {VERSION} (a newer router wrote it)"
        )
    try:
        return Entry(seq, tuple(decode_command(c) for c in message.commands))
    except JournalFormatError as exc:
        raise JournalFormatError(f"journal entry {seq}: {exc}") from None


class Journal:
    def __init__(
        self,
        js: JetStreamContext,
        group: str,
        acks: AckPublisher,
        nc: NATS,
        write_timeout: float = 2.0,
        replicas: int = 1,
    ) -> None:
        self.js = js
        self.group = group
        self.acks = acks
        self.nc = nc
        self.write_timeout = write_timeout
        self.replicas = replicas
        self.stream, self.subject = router_groups.journal_stream(group)
        self.last_seq = 0  # the last sequence this replica knows is in the journal

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def ensure(self) -> None:
        config = api.StreamConfig(
            name=self.stream,
            subjects=[self.subject],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=7 * 24 * 3600,
            num_replicas=self.replicas,
        )
        try:
            await self.js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(config)

    async def tail_seq(self) -> int:
        info = await self.js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def _check_kept(self, after: int) -> int:
        """The last sequence now; JournalTrimmed if entries after `after` are gone."""
        state = (await self.js.stream_info(self.stream)).state
        if state.last_seq > after and state.first_seq > after + 1:
            raise JournalTrimmed(
                f"journal {self.stream} starts at {state.first_seq}; entries after {after} "
                "were purged (a snapshot covers them)"
            )
        return int(state.last_seq)

    @staticmethod
    def _next(expected: int, seq: int) -> None:
        if seq != expected:
            raise JournalTrimmed(f"journal entry {expected} is gone (the next kept is {seq})")

    async def trim(self, seq: int) -> None:
        """Purge the entries up to `seq` (a durable snapshot covers them)."""
        if seq > 0:
            await self.js.purge_stream(self.stream, seq=seq + 1)

    async def append(self, commands: list[router_journal_pb2.RouterCommand]) -> asyncio.Future[Any]:
        """Send one entry (the commands of one engine pass) after the ones already sent. The
        future resolves when JetStream has it; it fails with Fenced if another replica wrote
        first, and with AckUnknown when no ack came within the write deadline (the entry may or
        may not be there)."""
        expected = self.last_seq
        self.last_seq += 1
        headers = {
            "Nats-Expected-Last-Sequence": str(expected),
            "Nats-Expected-Stream": self.stream,
        }
        future = await self.acks.publish(
            self.subject, encode(commands), headers, timeout=self.write_timeout
        )
        return asyncio.ensure_future(self._checked(future, expected))

    async def _checked(self, future: asyncio.Future[Any], expected: int) -> Any:
        try:
            return await future
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164) or "wrong last sequence" in str(exc).lower():
                raise Fenced(f"journal moved past {expected}: another replica leads") from exc
            raise

    async def _from(self, after: int) -> JetStreamContext.PushSubscription:
        """An ordered subscription to the entries after sequence `after`."""
        return await self.js.subscribe(
            self.subject,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            ),
        )

    async def read(self, after: int, until: int | None = None) -> AsyncGenerator[Entry, None]:
        """Entries after sequence `after`, up to `until` (default: the end now)."""
        last = await self._check_kept(after)
        end = last if until is None else until
        if end <= after:
            return
        sub = await self._from(after)
        expected = after + 1
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=10)
                except nats.errors.TimeoutError:
                    await self._check_kept(expected - 1)  # purged since it was checked
                    raise
                seq = msg.metadata.sequence.stream
                self._next(expected, seq)
                expected = seq + 1
                yield decode(seq, msg.data)
                if seq >= end:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def follow(self, after: int) -> AsyncIterator[Entry]:
        """Entries after `after`, as they are written, for a hot standby; JournalTrimmed when
        the next one it needs was purged (the standby fell behind a snapshot)."""
        await self._check_kept(after)
        sub = await self._from(after)
        expected = after + 1
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    await self._check_kept(expected - 1)
                    continue
                seq = msg.metadata.sequence.stream
                self._next(expected, seq)
                expected = seq + 1
                yield decode(seq, msg.data)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class Snapshots:
    def __init__(self, js: JetStreamContext, group: str, replicas: int = 1) -> None:
        self.js = js
        self.group = group
        self.replicas = replicas

    async def ensure(self) -> None:
        self.objects = await stores.object_store(self.js, SNAPSHOT_BUCKET, replicas=self.replicas)
        self.kv = await stores.key_value(self.js, STATE_BUCKET, replicas=self.replicas)

    async def save(self, engine_state: bytes, seq: int) -> None:
        """Store a snapshot covering journal sequence `seq` and make it the newest. The record
        never moves back: a replica deposed while it wrote an older snapshot leaves the newer
        one standing (the journal before the newer one may be purged already)."""
        name = f"{self.group}-{seq}"
        await self.objects.put(name, engine_state)
        key = f"{self.group}.snapshot"
        record = json.dumps({"object": name, "seq": seq, "at": time.time()}).encode()
        while True:
            current = await stores.entry(self.kv, key)
            previous: dict[str, Any] | None = (
                json.loads(current.value) if current is not None and current.value else None
            )
            if previous is not None and int(previous["seq"]) > seq:
                unwanted: str | None = name  # a newer snapshot is recorded already
                break
            try:
                if current is None:
                    await self.kv.create(key, record)
                else:
                    await self.kv.update(key, record, last=current.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # written meanwhile: look again
            unwanted = (
                None if previous is None or previous["object"] == name else previous["object"]
            )
            break
        if unwanted is not None:
            with contextlib.suppress(Exception):
                await self.objects.delete(unwanted)

    async def sticky_key(self) -> bytes:
        """The group's key for the sticky map's identity hashes (see `Engine.use_sticky_key`),
        created by the first replica that asks. Kept apart from the snapshots: a snapshot alone
        does not tell whose hashes it holds; deleting this key (with the group's replicas
        stopped) leaves every remembered identity unlinkable."""
        key = f"{self.group}.sticky-key"
        while True:
            found = await stores.value(self.kv, key)
            if found is not None:
                return bytes(found)
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self.kv.create(key, os.urandom(32))

    async def latest_meta(self) -> dict[str, Any] | None:
        value = await stores.value(self.kv, f"{self.group}.snapshot")
        if value is None:
            return None
        meta: dict[str, Any] = json.loads(value)
        return meta

    async def load(self) -> tuple[bytes, int] | None:
        meta = await self.latest_meta()
        if meta is None:
            return None
        result = await self.objects.get(meta["object"])
        return bytes(result.data or b""), int(meta["seq"])


class Lease(leases.Lease):
    """Leader election: the lease ``<group>`` in ``ROUTER_LEASES`` names the leader."""

    def __init__(
        self, js: JetStreamContext, group: str, replica: str, ttl: float, replicas: int = 1
    ) -> None:
        super().__init__(js, LEASE_BUCKET, group, replica, ttl, replicas)

"""Outbound fax jobs kept durably in JetStream key-value (bucket ``fax-jobs``), so that a restart
neither sends a reply twice nor stops reporting what became of it.

A job holds its OutboundFax command, with the customer's number and the reply's text, so an
erased customer's jobs are purged (`forget_contacts`); a job is followed with compare-and-set
writes, so a replica still following a purged job finds it gone instead of writing it back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from google.protobuf.message import DecodeError
from nats.js.client import JetStreamContext
from nats.js.errors import KeyWrongLastSequenceError

from switchboard.core import stores
from switchboard.v1 import events_pb2

BUCKET = "fax-jobs"


@dataclass
class Job:
    command: bytes  # the OutboundFax command, serialised
    job: str  # HylaFAX's job id
    attempt: int
    tries: int = 0
    final: bool = False
    revision: int = field(default=0, compare=False)  # the key's, when read (not stored)


def _key(command_id: str) -> str:
    return hashlib.sha256(command_id.encode()).hexdigest()[:40]


class Jobs:
    def __init__(self, kv: stores.KeyValueBucket) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> Jobs:
        return cls(await stores.key_value(js, BUCKET, replicas=replicas))

    async def get(self, command_id: str) -> Job | None:
        found = await stores.entry(self.kv, _key(command_id))
        return self._decode(found.value, found.revision) if found and found.value else None

    async def put(self, command_id: str, job: Job) -> int:
        """Record `job`; its new revision."""
        return await self.kv.put(_key(command_id), self._encode(job))

    async def replace(self, command_id: str, job: Job, last: int) -> int | None:
        """Record `job` over revision `last`; its new revision, or None when the job is no
        longer there (its customer was erased): it is not written back."""
        try:
            return await self.kv.update(_key(command_id), self._encode(job), last=last)
        except KeyWrongLastSequenceError:
            return None

    async def unfinished(self) -> list[Job]:
        out: list[Job] = []
        async for found in stores.current(self.kv):
            if found.value:
                job = self._decode(found.value, found.revision)
                if not job.final:
                    out.append(job)
        return out

    async def forget_contacts(self, tenant: str, contact_ids: Iterable[str]) -> int:
        """Purge the jobs of `tenant`'s replies to `contact_ids` (an erased customer's), with
        every earlier revision; the number purged. The keys are hashes of command ids, so the
        jobs are found by their command: one pass over the bucket."""
        wanted = frozenset(contact_ids) - {""}
        if not wanted:
            return 0
        theirs: list[str] = []
        async for found in stores.current(self.kv):
            try:
                command = events_pb2.OutboundFax.FromString(self._decode(found.value).command)
            except (ValueError, TypeError, KeyError, DecodeError):
                continue
            if command.meta.tenant == tenant and command.contact_id in wanted:
                theirs.append(found.key)
        for key in theirs:
            await self.kv.purge(key)
        return len(theirs)

    @staticmethod
    def _encode(job: Job) -> bytes:
        data = asdict(job)
        data["command"] = job.command.hex()
        del data["revision"]
        return json.dumps(data).encode()

    @staticmethod
    def _decode(value: bytes | None, revision: int | None = 0) -> Job:
        data = json.loads(value or b"")
        data["command"] = bytes.fromhex(data["command"])
        return Job(**data, revision=revision or 0)

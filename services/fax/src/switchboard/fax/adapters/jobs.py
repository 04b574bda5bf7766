"""Outbound fax jobs kept durably in JetStream key-value (bucket ``fax-jobs``), so that a restart
neither sends a reply twice nor stops reporting what became of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

BUCKET = "fax-jobs"


@dataclass
class Job:
    command: bytes  # the OutboundFax command, serialised
    job: str  # HylaFAX's job id
    attempt: int
    tries: int = 0
    final: bool = False


def _key(command_id: str) -> str:
    return hashlib.sha256(command_id.encode()).hexdigest()[:40]


class Jobs:
    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> Jobs:
        try:
            kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(bucket=BUCKET, history=1, replicas=replicas)
        return cls(kv)

    async def get(self, command_id: str) -> Job | None:
        try:
            entry = await self.kv.get(_key(command_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        return self._decode(entry.value) if entry.value else None

    async def put(self, command_id: str, job: Job) -> None:
        data = asdict(job)
        data["command"] = job.command.hex()
        await self.kv.put(_key(command_id), json.dumps(data).encode())

    async def unfinished(self) -> list[Job]:
        try:
            keys = await self.kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        out: list[Job] = []
        for key in keys:
            try:
                entry = await self.kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value:
                job = self._decode(entry.value)
                if not job.final:
                    out.append(job)
        return out

    @staticmethod
    def _decode(value: bytes) -> Job:
        data = json.loads(value)
        data["command"] = bytes.fromhex(data["command"])
        return Job(**data)

"""Outbound fax jobs kept durably in JetStream key-value (bucket ``fax-jobs``), so that a restart
neither sends a reply twice nor stops reporting what became of it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from nats.js.client import JetStreamContext

from switchboard.core import stores

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
    def __init__(self, kv: stores.KeyValueBucket) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> Jobs:
        return cls(await stores.key_value(js, BUCKET, replicas=replicas))

    async def get(self, command_id: str) -> Job | None:
        value = await stores.value(self.kv, _key(command_id))
        return self._decode(value) if value else None

    async def put(self, command_id: str, job: Job) -> None:
        data = asdict(job)
        data["command"] = job.command.hex()
        await self.kv.put(_key(command_id), json.dumps(data).encode())

    async def unfinished(self) -> list[Job]:
        out: list[Job] = []
        for key in await stores.keys(self.kv):
            value = await stores.value(self.kv, key)
            if value:
                job = self._decode(value)
                if not job.final:
                    out.append(job)
        return out

    @staticmethod
    def _decode(value: bytes) -> Job:
        data = json.loads(value)
        data["command"] = bytes.fromhex(data["command"])
        return Job(**data)

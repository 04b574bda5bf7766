"""Customers' uploaded files, kept in the JetStream object store and served back by id."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from switchboard.core import stores
from switchboard.v1 import contact_pb2

BUCKET = "chat_files"


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    filename: str
    content_type: str


class FileStore:
    def __init__(self, obs: stores.ObjectBucket) -> None:
        self.obs = obs

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> FileStore:
        return cls(await stores.object_store(js, BUCKET, replicas=replicas))

    async def put(
        self, tenant: str, filename: str, content_type: str, data: bytes
    ) -> contact_pb2.AttachmentRef:
        """Store a file under a fresh unguessable id; the reference to put in a message."""
        file_id = secrets.token_hex(16)
        name = f"{tenant}/{file_id}"
        description = json.dumps({"filename": filename, "content_type": content_type})
        await self.obs.put(name, data, meta=js_api.ObjectMeta(name=name, description=description))
        return stores.attachment_ref(BUCKET, name, filename, content_type, data)

    async def get(self, tenant: str, file_id: str) -> StoredFile | None:
        try:
            result = await self.obs.get(f"{tenant}/{file_id}")
        except (ObjectNotFoundError, NotFoundError):
            return None
        info = json.loads(result.info.description or "{}")
        return StoredFile(
            result.data or b"",
            str(info.get("filename", "file")),
            str(info.get("content_type", "application/octet-stream")),
        )

"""Documents and page images in the JetStream object store, referenced by AttachmentRef."""

from __future__ import annotations

import hashlib
import logging

from nats.js import JetStreamContext
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore

from switchboard.core.errors import NotFound
from switchboard.v1 import contact_pb2

logger = logging.getLogger(__name__)


class Objects:
    """Put and get objects by bucket and name; buckets are created on first use."""

    def __init__(self, js: JetStreamContext, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas  # copies of a bucket created here (NATS_STREAM_REPLICAS)
        self._stores: dict[str, ObjectStore] = {}

    async def _store(self, bucket: str, create: bool) -> ObjectStore:
        store = self._stores.get(bucket)
        if store is None:
            try:
                store = await self.js.object_store(bucket)
            except (BucketNotFoundError, NotFoundError):
                if not create:
                    raise NotFound("bucket", bucket) from None
                store = await self.js.create_object_store(
                    bucket,
                    ObjectStoreConfig(
                        bucket=bucket, storage=StorageType.FILE, replicas=self.replicas
                    ),
                )
            self._stores[bucket] = store
        return store

    async def put(
        self, bucket: str, name: str, data: bytes, filename: str, content_type: str
    ) -> contact_pb2.AttachmentRef:
        """Store `data` (returns once JetStream has it) and return its reference."""
        store = await self._store(bucket, create=True)
        await store.put(name, data)
        return contact_pb2.AttachmentRef(
            bucket=bucket,
            object_name=name,
            filename=filename,
            content_type=content_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

    async def get(self, ref: contact_pb2.AttachmentRef) -> bytes:
        """The bytes of `ref`; NotFound when the bucket or the object does not exist."""
        store = await self._store(ref.bucket, create=False)
        try:
            result = await store.get(ref.object_name)
        except (ObjectNotFoundError, NotFoundError):
            raise NotFound("object", f"{ref.bucket}/{ref.object_name}") from None
        return bytes(result.data or b"")

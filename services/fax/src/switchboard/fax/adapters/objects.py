"""Documents and page images in the JetStream object store, referenced by AttachmentRef."""

from __future__ import annotations

from nats.js import JetStreamContext

from switchboard.core import stores
from switchboard.v1 import contact_pb2


class Objects:
    """Put and get objects by bucket and name; buckets are created on first use."""

    def __init__(
        self,
        js: JetStreamContext | None = None,
        replicas: int = 1,
        *,
        buckets: stores.ObjectStores | None = None,
    ) -> None:
        """Over JetStream's object stores, or over `buckets` (a unit test's FakeObjectStores)."""
        if buckets is None:
            assert js is not None, "Objects needs JetStream or buckets"
            buckets = stores.ObjectStores(js, replicas)
        self.stores = buckets

    async def put(
        self, bucket: str, name: str, data: bytes, filename: str, content_type: str
    ) -> contact_pb2.AttachmentRef:
        """Store `data` (returns once JetStream has it) and return its reference."""
        await self.stores.put(bucket, name, data)
        return stores.attachment_ref(bucket, name, filename, content_type, data)

    async def get(self, ref: contact_pb2.AttachmentRef) -> bytes:
        """The bytes of `ref`; NotFound when the bucket or the object does not exist."""
        return await self.stores.get_ref(ref)

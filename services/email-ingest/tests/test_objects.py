"""The raw messages and attachments a batch stores, read back with nats.py's own object store."""

from __future__ import annotations

from nats.js.object_store import OBJ_DEFAULT_CHUNK_SIZE

from switchboard.email_ingest.adapters.jetstream import EmailObjects


async def test_a_batch_of_objects_reads_back_whole_and_is_stored_once(bus) -> None:
    objects = await EmailObjects.open(bus.js, acks=bus.acks)
    contents = [b"small %d" % i for i in range(50)] + [
        bytes(range(256)) * (OBJ_DEFAULT_CHUNK_SIZE // 256),  # exactly one chunk
        b"L" * (3 * OBJ_DEFAULT_CHUNK_SIZE + 17),  # several chunks
    ]
    refs = [
        objects.ref("t", "raw", f"m{i}.eml", "message/rfc822", c) for i, c in enumerate(contents)
    ]
    await objects.store_many(list(zip(refs, contents, strict=True)))
    for ref, content in zip(refs, contents, strict=True):
        assert await objects.get(ref.object_name) == content
        info = await objects.obs.get_info(ref.object_name)
        assert info.size == len(content) and info.description == ref.filename
    stream = f"OBJ_{objects.obs._name}"
    before = (await bus.js.stream_info(stream)).state.messages
    await objects.store_many(list(zip(refs, contents, strict=True)))  # already there
    assert (await bus.js.stream_info(stream)).state.messages == before

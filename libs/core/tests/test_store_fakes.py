"""The in-memory stores of switchboard.testing.fakes answer as JetStream does: each scenario runs
on a real nats-server's bucket and on the fake, with the same assertions."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import errors

from switchboard.core import stores
from switchboard.core.errors import Erased, NotFound
from switchboard.testing.fakes import FakeKeyValue, FakeObjectStore, FakeObjectStores


@pytest.fixture(params=["nats-server", "fake"])
async def kv(request: pytest.FixtureRequest) -> AsyncIterator[stores.KeyValueBucket]:
    if request.param == "fake":
        yield FakeKeyValue("contract")
        return
    nc = await nats.connect(request.getfixturevalue("nats_url"))
    yield await stores.key_value(nc.jetstream(), "contract")
    await nc.close()


@pytest.fixture(params=["nats-server", "fake"])
async def buckets(request: pytest.FixtureRequest) -> AsyncIterator[stores.ObjectStores]:
    if request.param == "fake":
        yield FakeObjectStores()
        return
    nc = await nats.connect(request.getfixturevalue("nats_url"))
    yield stores.ObjectStores(nc.jetstream())
    await nc.close()


async def test_key_value_reads_writes_and_revisions(kv: stores.KeyValueBucket) -> None:
    with pytest.raises(errors.NoKeysError):
        await kv.keys()
    with pytest.raises(errors.KeyNotFoundError):
        await kv.get("a")
    with pytest.raises(errors.InvalidKeyError):
        await kv.put("not a key", b"x")
    first = await kv.put("a", b"1")
    second = await kv.put("b", b"2")
    assert second == first + 1  # one sequence for the bucket
    found = await kv.get("a")
    assert (found.key, found.value, found.revision) == ("a", b"1", first)
    await kv.put("empty", b"")
    assert (await kv.get("empty")).value is None
    assert sorted(await kv.keys()) == ["a", "b", "empty"]


async def test_key_value_compare_and_set(kv: stores.KeyValueBucket) -> None:
    created = await kv.update("new", b"1")  # no last: only a key never written
    with pytest.raises(errors.KeyWrongLastSequenceError):
        await kv.update("new", b"2")
    with pytest.raises(errors.KeyWrongLastSequenceError):
        await kv.update("new", b"2", last=created + 5)
    updated = await kv.update("new", b"2", last=created)
    assert (await kv.get("new")).value == b"2"
    # A delete naming a stale revision is refused, but not as a KeyWrongLastSequenceError.
    with pytest.raises(errors.BadRequestError) as refused:
        await kv.delete("new", last=created)
    assert not isinstance(refused.value, errors.KeyWrongLastSequenceError)
    assert await kv.delete("new", last=updated)
    with pytest.raises(errors.KeyNotFoundError) as gone:
        await kv.get("new")
    assert gone.value.op == "DEL"
    assert await stores.entry(kv, "new") is None
    with pytest.raises(errors.KeyWrongLastSequenceError):  # its delete marker is its last revision
        await kv.update("new", b"3")
    await kv.put("new", b"4")
    assert await stores.value(kv, "new") == b"4"


async def test_key_value_purge_and_the_current_entries(kv: stores.KeyValueBucket) -> None:
    assert [e async for e in stores.current(kv)] == []
    await kv.put("a", b"1")
    await kv.put("a", b"2")
    await kv.put("b", b"3")
    await kv.put("c", b"4")
    await kv.delete("c")
    found = sorted([(e.key, e.value) async for e in stores.current(kv)])
    assert found == [("a", b"2"), ("b", b"3")]
    assert await kv.purge("a")
    with pytest.raises(errors.KeyNotFoundError) as gone:
        await kv.get("a")
    assert gone.value.op == "PURGE"
    assert await stores.entry(kv, "a") is None
    assert await kv.keys() == ["b"]
    assert [(e.key, e.value) async for e in stores.current(kv)] == [("b", b"3")]
    assert await kv.purge("a")  # purging again, or a key never written, is no error
    assert await kv.purge("never")
    with pytest.raises(errors.KeyWrongLastSequenceError):  # its marker is its last revision
        await kv.update("a", b"5")
    await kv.put("a", b"6")
    assert await stores.value(kv, "a") == b"6"


async def test_object_stores_put_get_and_not_found(buckets: stores.ObjectStores) -> None:
    with pytest.raises(NotFound, match="bucket 'docs' not found"):
        await buckets.get("docs", "a")
    await buckets.put("docs", "acme/a", b"pdf", description="report.pdf")
    await buckets.put("docs", "acme/empty", b"")
    assert await buckets.get("docs", "acme/a") == b"pdf"
    assert await buckets.get("docs", "acme/empty") == b""
    with pytest.raises(NotFound, match="object 'docs/acme/b' not found"):
        await buckets.get("docs", "acme/b")
    bucket = await buckets.bucket("docs")
    info = await bucket.get_info("acme/a")
    assert (info.name, info.size, info.description) == ("acme/a", 3, "report.pdf")
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"pdf").digest()).decode()
    assert info.digest == f"SHA-256={digest}"
    with pytest.raises(errors.ObjectNotFoundError):
        await bucket.get_info("acme/b")
    with pytest.raises(errors.ObjectNotFoundError):
        await bucket.get("acme/b")


async def test_object_stores_delete_and_say_erased(buckets: stores.ObjectStores) -> None:
    assert await buckets.delete("docs", "acme/a") is False  # no bucket yet
    await buckets.put("docs", "acme/a", b"scan")
    assert await buckets.delete("docs", "acme/a") is True
    with pytest.raises(Erased, match="object 'docs/acme/a' was erased"):
        await buckets.get("docs", "acme/a")
    assert await buckets.delete("docs", "acme/a") is False  # a retried deletion
    bucket = await buckets.bucket("docs")
    with pytest.raises(errors.ObjectNotFoundError):
        await bucket.get_info("acme/a")
    assert (await bucket.get_info("acme/a", show_deleted=True)).deleted
    with pytest.raises(NotFound) as never:
        await buckets.get("docs", "acme/never")
    assert not isinstance(never.value, Erased)
    await buckets.put("docs", "acme/a", b"scan again")
    assert await buckets.get("docs", "acme/a") == b"scan again"


async def test_a_fake_object_store_counts_its_writes() -> None:
    store = FakeObjectStore("files")
    await store.put("x", b"1")
    await store.put("x", b"2")
    assert store.puts == 2 and (await store.get("x")).data == b"2"

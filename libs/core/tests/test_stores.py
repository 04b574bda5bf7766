"""JetStream stores against a real nats-server: open-or-create, reads of what is missing, refs."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from switchboard.core import stores
from switchboard.core.bus import Bus
from switchboard.core.errors import Erased, NotFound


async def test_key_value_is_created_once_then_bound(bus: Bus) -> None:
    kv = await stores.key_value(bus.js, "things", history=3)
    await kv.put("a", b"1")
    again = await stores.key_value(bus.js, "things", history=3)
    assert await stores.value(again, "a") == b"1"
    status = await again.status()
    assert status.history == 3


async def test_concurrent_opens_all_get_the_bucket(bus: Bus) -> None:
    kvs = await asyncio.gather(*(stores.key_value(bus.js, "racy") for _ in range(4)))
    obss = await asyncio.gather(*(stores.object_store(bus.js, "racy_files") for _ in range(4)))
    await kvs[0].put("k", b"v")
    assert await stores.value(kvs[3], "k") == b"v"
    await obss[0].put("o", b"data")
    assert (await obss[3].get("o")).data == b"data"


async def test_missing_deleted_and_empty_values_read_as_none(bus: Bus) -> None:
    kv = await stores.key_value(bus.js, "values")
    assert await stores.value(kv, "never") is None
    assert await stores.keys(kv) == []
    await kv.put("gone", b"x")
    await kv.delete("gone")
    assert await stores.entry(kv, "gone") is None
    await kv.put("empty", b"")
    assert await stores.value(kv, "empty") is None
    await kv.put("full", b"y")
    found = await stores.entry(kv, "full")
    assert found is not None and found.value == b"y" and found.revision
    assert sorted(await stores.keys(kv)) == ["empty", "full"]


async def test_object_stores_put_get_and_not_found(bus: Bus) -> None:
    objects = stores.ObjectStores(bus.js)
    with pytest.raises(NotFound, match="bucket 'docs' not found"):
        await objects.get("docs", "a")
    await objects.put("docs", "acme/a", b"pdf", description="report.pdf")
    assert await objects.get("docs", "acme/a") == b"pdf"
    info = await (await objects.bucket("docs")).get_info("acme/a")
    assert info.description == "report.pdf"
    with pytest.raises(NotFound, match="object 'docs/acme/b' not found"):
        await objects.get("docs", "acme/b")
    # Another process binds the bucket this one created.
    other = stores.ObjectStores(bus.js)
    ref = stores.attachment_ref("docs", "acme/a", "report.pdf", "application/pdf", b"pdf")
    assert await other.get_ref(ref) == b"pdf"


async def test_a_read_overtaken_by_the_objects_erasure_ends_erased(bus: Bus) -> None:
    objects = stores.ObjectStores(bus.js)
    await objects.put("docs", "acme/fax", b"page" * 100)
    bucket = await objects.bucket("docs")
    info = await bucket.get_info("acme/fax")
    # An erasure under way as the read starts: the chunks already purged, the metadata not
    # yet marked deleted (the read finds the object, then waits for chunks that are gone).
    await bus.js.purge_stream("OBJ_docs", subject=f"$O.docs.C.{info.nuid}")
    reading = asyncio.ensure_future(objects.get("docs", "acme/fax"))
    await asyncio.sleep(0.1)
    await bucket.delete("acme/fax")  # the erasure finishes
    with pytest.raises(Erased):
        await asyncio.wait_for(reading, 30)  # bounded only so that a hang fails the test


def test_attachment_ref_carries_size_and_digest() -> None:
    ref = stores.attachment_ref("chat_files", "acme/f1", "a.txt", "text/plain", b"hello")
    assert ref.bucket == "chat_files" and ref.object_name == "acme/f1"
    assert ref.filename == "a.txt" and ref.content_type == "text/plain"
    assert ref.size_bytes == 5
    assert ref.sha256 == hashlib.sha256(b"hello").hexdigest()


async def test_a_watch_that_ends_before_reading_what_the_bucket_holds_is_read_again(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats.py's watcher can signal "every key read" before the server's first messages are
    read (nothing pending, nothing received yet: a busy process). A bucket holding keys must
    not then list as empty: its keys are read one by one, deleted ones left out."""
    from nats.js.kv import KeyValue

    kv = await stores.key_value(bus.js, "watch_race")
    await kv.put("a.1", b"one")
    await kv.put("a.2", b"two")
    await kv.put("b.1", b"gone")
    await kv.delete("b.1")

    async def ended_at_once(self: KeyValue, keys: str, **kwargs: object) -> object:
        watcher = await original(self, "nothing.matches.this", **kwargs)
        return watcher

    original = KeyValue.watch
    monkeypatch.setattr(KeyValue, "watch", ended_at_once)
    assert sorted(await stores.keys(kv)) == ["a.1", "a.2"]
    assert sorted(e.key for e in [e async for e in stores.current(kv)]) == ["a.1", "a.2"]
    assert [e.value for e in await stores.missed_by_watch(kv, "a.*")] == [b"one", b"two"]
    empty = await stores.key_value(bus.js, "watch_race_empty")
    assert await stores.keys(empty) == []


async def test_a_scan_whose_watch_never_signals_its_end_still_reads_every_key(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch that delivers some keys and then neither the next one nor its sign that every key
    has been read (an ordered consumer that lost its place) must not hold a scan for ever: after
    SCAN_STALL_SECONDS without an entry, the rest is read key by key, each key once."""
    from nats.js.kv import KeyValue

    kv = await stores.key_value(bus.js, "watch_stall")
    for key in ("a.1", "a.2", "a.3"):
        await kv.put(key, key.encode())
    await kv.put("b.1", b"gone")
    await kv.delete("b.1")

    async def stalls_after_one(self: KeyValue, keys: str, **kwargs: object) -> object:
        watcher = await original(self, keys, **kwargs)
        first = await watcher.updates(timeout=5)
        stalled: asyncio.Queue[object] = asyncio.Queue()
        stalled.put_nowait(first)  # one key, then nothing more, and no end sign
        watcher._updates = stalled  # type: ignore[assignment]
        return watcher

    original = KeyValue.watch
    monkeypatch.setattr(KeyValue, "watch", stalls_after_one)
    monkeypatch.setattr(stores, "SCAN_STALL_SECONDS", 0.2)
    async with asyncio.timeout(20):
        scanned = [e async for e in stores.current(kv)]
        matched = await stores.matching(kv, "a.*")
    assert sorted((e.key, e.value) for e in scanned) == [
        ("a.1", b"a.1"),
        ("a.2", b"a.2"),
        ("a.3", b"a.3"),
    ]
    assert sorted(e.key for e in matched) == ["a.1", "a.2", "a.3"]


async def test_a_keys_history_is_read_whole_even_when_a_watch_would_end_at_once(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same race in nats.py's `history` (a watcher): a key with revisions read as having
    none. `stores.history` counts the key's messages first and reads that many."""
    from nats.js.errors import NoKeysError
    from nats.js.kv import KeyValue

    kv = await stores.key_value(bus.js, "history_race", history=10)
    for value in (b"one", b"two", b"three"):
        await kv.put("agents.acme", value)
    await kv.delete("agents.acme")
    await kv.put("agents.other", b"not this key")

    async def ended_at_once(self: KeyValue, keys: str, **kwargs: object) -> object:
        return await original(self, "nothing.matches.this", **kwargs)

    original = KeyValue.watch
    monkeypatch.setattr(KeyValue, "watch", ended_at_once)
    with pytest.raises(NoKeysError):
        await kv.history("agents.acme")  # what the race does to nats.py's own

    history = await stores.history(kv, "agents.acme")
    assert [(e.value, e.operation) for e in history] == [
        (b"one", None),
        (b"two", None),
        (b"three", None),
        (b"", "DEL"),
    ]
    assert [e.revision for e in history] == sorted(e.revision for e in history)
    assert all(e.key == "agents.acme" and e.bucket == "history_race" for e in history)
    assert await stores.history(kv, "agents.nobody") == []


async def test_stop_following_passes_on_its_callers_own_cancellation() -> None:
    """A task stopping a follower, itself cancelled while the follower winds down, ends
    cancelled: a service stopping then stops, and does not go on as if nothing was asked."""
    winding_down = asyncio.Event()
    release = asyncio.Event()

    async def follower() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            winding_down.set()
            await release.wait()  # a slow end (a drain, say)
            raise

    task = asyncio.ensure_future(follower())
    await asyncio.sleep(0)
    went_on = asyncio.Event()

    async def stopper() -> None:
        await stores.stop_following(task)
        went_on.set()

    stopping = asyncio.ensure_future(stopper())
    await winding_down.wait()
    stopping.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    assert not went_on.is_set()
    assert task.cancelled()

    # Its own follower's cancellation, or failure, is not the caller's: stop_following returns.
    async def failing() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("the watcher broke")

    broken = asyncio.ensure_future(failing())
    await asyncio.sleep(0)
    await stores.stop_following(broken)
    await stores.stop_following(asyncio.ensure_future(asyncio.Event().wait()))

"""The quarantine index and sender keys (real nats-server): items are found by their sender's
key within their tenant only, an item of several senders is found once and forgotten under every
key, the retention is per tenant, and a sender key never shows the address."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from switchboard.core import sender_keys, stores
from switchboard.core.bus import Bus
from switchboard.core.quarantine import (
    Kept,
    QuarantineIndex,
    Retention,
    parse_retention,
)
from switchboard.core.quarantine_objects import QuarantineEraser
from switchboard.v1 import contact_pb2

EMAIL, PHONE = contact_pb2.IDENTITY_KIND_EMAIL, contact_pb2.IDENTITY_KIND_PHONE
KEY = sender_keys.secret_key("a deployment secret")


def test_sender_keys_are_keyed_normalised_and_per_tenant() -> None:
    ana = sender_keys.sender_key(KEY, "demo", EMAIL, "Ana@Example.com ")
    assert ana == sender_keys.sender_key(KEY, "demo", EMAIL, "ana@example.com")
    assert "ana" not in ana and len(ana) == 40 and ana.isalnum()
    assert ana != sender_keys.sender_key(KEY, "acme", EMAIL, "ana@example.com")
    assert ana != sender_keys.sender_key(
        sender_keys.secret_key("another"), "demo", EMAIL, "ana@example.com"
    )
    assert sender_keys.sender_key(KEY, "demo", PHONE, "") == ""


def test_retention_is_parsed_per_tenant() -> None:
    retention = parse_retention(30, "acme=7, demo=0.5", "X")
    assert retention.of("acme") == timedelta(days=7)
    assert retention.of("demo") == timedelta(hours=12)
    assert retention.of("other") == timedelta(days=30)
    for bad in ("acme", "acme=x", "acme=0", "acme=1,acme=2", "Not A Tenant=3"):
        with pytest.raises(ValueError, match="X"):
            parse_retention(30, bad, "X")
    with pytest.raises(ValueError):
        parse_retention(0, "", "X")


async def test_items_are_found_by_sender_within_their_tenant_and_forgotten(bus: Bus) -> None:
    index = await QuarantineIndex.open(bus.js, "test_quarantine_index")
    ana = sender_keys.sender_key(KEY, "demo", PHONE, "+82212345678")
    csid = sender_keys.sender_key(KEY, "demo", PHONE, "+82212340000")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    both = Kept("demo", "f1", at, ("fax-quarantine/demo/f1/reason.txt",), senders=(ana, csid))
    unknown = Kept("demo", "f2", at)
    elsewhere = Kept(
        "acme", "f3", at, senders=(sender_keys.sender_key(KEY, "acme", PHONE, "+82212345678"),)
    )
    for kept in (both, unknown, elsewhere, both):  # written again: the same
        await index.add(kept)

    assert await index.of_senders("demo", [ana, csid]) == [both]
    assert await index.of_senders("acme", [ana]) == []
    assert await index.of_senders("demo", ["", "none", "a.>"]) == []  # no key, nor a pattern
    assert {k.item for k in await index.expired(Retention(timedelta(days=1)), at)} == set()
    later = at + timedelta(days=2)
    assert {k.item for k in await index.expired(Retention(timedelta(days=1)), later)} == {
        "f1",
        "f2",
        "f3",
    }
    per_tenant = Retention(timedelta(days=1), {"acme": timedelta(days=3)})
    assert {k.item for k in await index.expired(per_tenant, later)} == {"f1", "f2"}

    await index.forget(both)
    assert await index.of_senders("demo", [csid]) == []
    assert {k.item for k in await index.expired(Retention(timedelta(days=1)), later)} == {
        "f2",
        "f3",
    }
    await index.forget(both)  # again: harmless


async def test_one_item_failing_does_not_hold_up_the_others(bus: Bus) -> None:
    """An item whose deletion fails (its IMAP server down, say) stays indexed, to be tried
    again; the others are deleted, and the failure is raised once they are."""
    index = await QuarantineIndex.open(bus.js, "test_quarantine_failing")
    objects = stores.ObjectStores(bus.js)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    ana = sender_keys.sender_key(KEY, "demo", EMAIL, "ana@example.com")
    items = [Kept("demo", f"m{i}", at, (f"test-q/demo/m{i}",), senders=(ana,)) for i in range(3)]
    for kept in items:
        await objects.put("test-q", f"demo/{kept.item}", b"raw")
        await index.add(kept)
    down = True

    async def elsewhere(kept: Kept) -> None:
        if kept.item == "m1" and down:
            raise ConnectionRefusedError("imap down")

    eraser = QuarantineEraser(index, objects, Retention(), elsewhere)
    with pytest.raises(ConnectionRefusedError):
        await eraser.erase_senders("demo", [ana])
    assert [k.item for k in await index.of_senders("demo", [ana])] == ["m1"]
    down = False
    assert await eraser.erase_senders("demo", [ana]) == 1  # delivered again: the rest
    assert await index.of_senders("demo", [ana]) == []
    assert not await objects.delete("test-q", "demo/m0")  # gone already

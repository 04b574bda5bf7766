"""An erased customer's quarantined mail (real nats-server, real Dovecot, the real email channel):
a mail it cannot take (here, over the size limit) is kept in quarantine (its raw message in the
object store, the message flagged in the IMAP folder) and indexed by its sender's address, keyed;
when CustomerErased names that address's sender key, the raw message, the message on IMAP and the
index entry go; another customer's quarantined mail stays; delivered again, nothing more goes. A
mail whose sender could not be parsed is bounded by its tenant's retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from nats.js.errors import NotFoundError
from prometheus_client import REGISTRY

from switchboard.core import events, sender_keys, stores
from switchboard.core.bus import Bus
from switchboard.core.settings import DEV_AUTH_SECRET
from switchboard.testing.streams import EventCollector, stored_payloads
from switchboard.testing.waiting import eventually, until
from switchboard.v1 import case_events_pb2, contact_pb2, email_pb2

TENANT = "demo"
QUARANTINE_INDEX = "email_quarantine_index"
LIMIT = 50_000


def key_of(address: str, tenant: str = TENANT) -> str:
    key = sender_keys.secret_key(DEV_AUTH_SECRET)
    return sender_keys.sender_key(key, tenant, contact_pb2.IDENTITY_KIND_EMAIL, address)


def customer_erased(tenant: str, *senders: str) -> case_events_pb2.CustomerErased:
    return case_events_pb2.CustomerErased(
        meta=events.new_meta(tenant, 0, "case"), customer_id="cust-1", sender_keys=senders
    )


async def raw_names(bus: Bus) -> set[str]:
    store = await bus.js.object_store("email")
    try:
        return {i.name for i in await store.list(ignore_deletes=True) if "/raw/" in i.name}
    except NotFoundError:  # nothing in it
        return set()


@pytest.mark.timeout(120)
async def test_erasing_a_customer_deletes_their_quarantined_mail_and_its_imap_copy(
    dovecot, make_app, make_config, make_mail, collector: EventCollector, bus: Bus
) -> None:
    big = "x" * (LIMIT * 2)
    alice = make_mail("Scan", big, sender="Alice@Example.com", message_id="<a@example.com>")
    bob = make_mail("Scan", big, sender="bob@example.com", message_id="<b@example.com>")
    # No From at all, and over the limit: its sender is unknown.
    nobody = b"Subject: ?\r\nMessage-ID: <n@example.com>\r\n\r\n" + big.encode() + b"\r\n"
    await dovecot.append([alice, bob, nobody])
    app = await make_app(
        make_config(dovecot),
        EMAIL_MAX_MESSAGE_BYTES=LIMIT,
        EMAIL_QUARANTINE_RETENTION_TENANTS="demo=7",
    )
    await collector.wait(lambda c: len(c.of(email_pb2.EmailQuarantined)) == 3)
    await until(lambda: app.watchers[0].status.last_uid == 3)
    quarantined = {q.origin.uid: q for q in collector.of(email_pb2.EmailQuarantined)}
    assert await dovecot.uids(criteria="KEYWORD $SwitchboardQuarantined") == [1, 2, 3]
    raws = {uid: q.raw.object_name for uid, q in quarantined.items()}

    async def all_stored() -> bool:
        return set(raws.values()) <= await raw_names(bus)

    await eventually(all_stored)

    erased = customer_erased(TENANT, key_of("alice@example.com"))
    labels = {"channel": "email", "reason": "erasure"}
    counted = REGISTRY.get_sample_value("switchboard_quarantine_deleted_total", labels) or 0
    await bus.publish(erased)

    def deleted() -> float:  # counted once the item's index keys are purged too
        return (REGISTRY.get_sample_value("switchboard_quarantine_deleted_total", labels) or 0) - (
            counted
        )

    async def alices_gone() -> bool:  # the raw message, the message on IMAP, the index keys
        gone = raws[1] not in await raw_names(bus) and await dovecot.uids() == [2, 3]
        return gone and deleted() > 0

    await eventually(alices_gone)
    assert deleted() == 1
    # Nothing on the bus names her address any more (her EmailQuarantined is securely deleted);
    # Bob's is still there.
    for stream in ("EVENTS", "DEADLETTER"):
        stored = b"\n".join(await stored_payloads(bus, stream))
        assert b"Alice@Example.com" not in stored and b"alice@example.com" not in stored, stream
    assert b"bob@example.com" in b"\n".join(await stored_payloads(bus, "EVENTS"))
    # Bob's mail and the unknown sender's stay, flagged.
    assert await dovecot.uids() == [2, 3]
    assert await dovecot.uids(criteria="KEYWORD $SwitchboardQuarantined") == [2, 3]
    assert {raws[2], raws[3]} <= await raw_names(bus)
    # The index names no sender in clear, and no longer names hers.
    index = await bus.js.key_value(QUARANTINE_INDEX)
    keys = set(await stores.keys(index))
    assert keys == {
        f"{key_of('bob@example.com')}.{quarantined[2].quarantine_id}",
        f"none.{quarantined[3].quarantine_id}",
    }
    assert [
        e.operation
        for e in await stores.history(
            index, f"{key_of('alice@example.com')}.{quarantined[1].quarantine_id}"
        )
    ] == ["PURGE"]

    # Delivered again, or for another tenant: nothing more goes.
    assert app.quarantine is not None
    await app.quarantine.on_customer_erased(erased)
    await app.quarantine.on_customer_erased(customer_erased("acme", key_of("bob@example.com")))
    assert await app.quarantine.eraser.erase_senders(TENANT, [key_of("alice@example.com")]) == 0
    assert await dovecot.uids() == [2, 3]
    assert set(await stores.keys(index)) == keys

    # Retention: nothing is due now; a week on, both are (the unknown sender's too).
    assert await app.quarantine.eraser.sweep() == 0
    assert await app.quarantine.eraser.sweep(datetime.now(UTC) + timedelta(days=7, minutes=1)) == 2
    assert await dovecot.uids() == []
    assert not {raws[2], raws[3]} & await raw_names(bus)
    assert await stores.keys(index) == []

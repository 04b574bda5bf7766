"""An erased customer's threads (real nats-server, the real email channel receiving over SMTP):
on CustomerErased the channel purges every thread-index key of the customer's contacts, with its
history, while another customer's threads stay; the seen set, which holds no personal data, is
kept."""

from __future__ import annotations

import aiosmtplib
import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError

from switchboard.core import events, stores
from switchboard.core.bus import Bus
from switchboard.email_ingest.adapters.jetstream import SEEN, THREADS
from switchboard.email_ingest.domain import threads
from switchboard.testing.streams import EventCollector
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, email_pb2, events_pb2

TENANT = "demo"


def customer_erased(tenant: str, *contact_ids: str) -> case_events_pb2.CustomerErased:
    return case_events_pb2.CustomerErased(
        meta=events.new_meta(tenant, 0, "case"), customer_id="cust-1", contact_ids=contact_ids
    )


async def test_customer_erased_purges_the_customers_thread_index_entries(
    make_app, make_config, make_mail, collector: EventCollector, bus: Bus
) -> None:
    app = await make_app(make_config(None))
    for sender, subject in (
        ("alice@example.com", "Refund for order 7731"),
        ("bob@example.com", "Delivery of order 9902"),
    ):
        await aiosmtplib.send(
            make_mail(subject, "Please help.", sender=sender),
            sender=sender,
            recipients=["support@demo.example"],
            hostname="127.0.0.1",
            port=app.smtp_port,
        )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 2)
    by_sender = {
        e.contact.identities[0].value: e.contact.contact_id
        for e in collector.of(events_pb2.ContactCreated)
    }
    alice, bob = by_sender["alice@example.com"], by_sender["bob@example.com"]
    index = await bus.js.key_value(THREADS)

    async def keys_of(contact_id: str) -> dict[str, int]:
        """The thread-index keys that hold the contact's entry, and their revisions."""
        found = {}
        async for entry in stores.current(index):
            if email_pb2.ThreadEntry.FromString(entry.value or b"").contact_id == contact_id:
                found[entry.key] = entry.revision or 0
        return found

    async def indexed() -> bool:  # the index is written once the mails' events are stored
        return all([await keys_of(alice), await keys_of(bob)])

    await eventually(indexed)
    alices = await keys_of(alice)
    # By contact, conversation, Message-ID, and sender with subject.
    assert threads.key("contact", alice) in alices and len(alices) >= 4
    bobs = await keys_of(bob)
    seen_before = await stores.keys(await bus.js.key_value(SEEN))

    await bus.publish(customer_erased(TENANT, alice, "chat-contact-1"))

    async def forgotten() -> bool:
        return await app.state.thread(threads.key("contact", alice)) is None

    await eventually(forgotten)
    assert await keys_of(alice) == {}
    for key, revision in alices.items():
        with pytest.raises(KeyNotFoundError):
            await index.get(key)
        assert [e.operation for e in await stores.history(index, key)] == ["PURGE"]
        with pytest.raises(NotFoundError):
            await bus.js.get_msg(f"KV_{THREADS}", revision)
    assert await keys_of(bob) == bobs  # another customer's threads stay
    # The seen set (hashes and contact ids) is kept: a mail fetched again is still known.
    assert await stores.keys(await bus.js.key_value(SEEN)) == seen_before

    # Delivered again, or another tenant's erasure naming the same ids: nothing more goes.
    assert app.acknowledger is not None
    await app.acknowledger.on_customer_erased(customer_erased(TENANT, alice))
    await app.acknowledger.on_customer_erased(customer_erased("acme", bob))
    assert await keys_of(bob) == bobs

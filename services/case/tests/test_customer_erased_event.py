"""Erasing a customer announces it on the bus: one CustomerErased naming the customer's contacts
(those of the customers merged into it too) is staged in the erasure's transaction and published
by the outbox after the commit, and none for an erasure rolled back (real nats-server, SQLite and
PostgreSQL). The channels forget the contacts in their key-value buckets when they receive it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import customers, outbox
from switchboard.case.adapters import orm
from switchboard.case.commands import CaseCommands
from switchboard.case.handlers import CaseHandlers
from switchboard.case.records import CaseRecords
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.sla.policy import parse
from switchboard.core import sender_keys, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.settings import DEV_AUTH_SECRET
from switchboard.testing.contacts import contact_created
from switchboard.testing.streams import published
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, contact_pb2

TENANT = "acme"
SUBJECT = f"case.{TENANT}.customer_erased"


def mail(contact_id: str, address: str) -> object:
    return contact_created(
        contact_id,
        channel=contact_pb2.CHANNEL_EMAIL,
        email=address,
        subject="my order",
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


async def customer_of(sessions: async_sessionmaker[AsyncSession], contact_id: str) -> str:
    async with sessions() as session:
        row = await session.get(orm.Contact, contact_id)
        assert row is not None and row.customer_id
        return row.customer_id


async def erased_events(bus: Bus) -> list[case_events_pb2.CustomerErased]:
    return await published(bus, SUBJECT, case_events_pb2.CustomerErased)


async def test_erasing_a_customer_publishes_one_customer_erased_after_the_commit(
    sessions: async_sessionmaker[AsyncSession], bus: Bus
) -> None:
    relay = outbox.OutboxRelay(sessions, bus)
    policies = parse({"default_phone_region": "KR"})
    records = CaseRecords(policies, SlaEngine(policies), orm.utc_now)
    handlers = CaseHandlers(sessions, "case", orm.utc_now, records)
    for contact_id, address in (
        ("mail-alice-1", "alice@example.com"),
        ("mail-alice-2", "alice@example.com"),
        ("mail-alice-old", "alice.old@example.com"),
        ("mail-bob", "bob@example.com"),
    ):
        await handlers.on_contact_created(mail(contact_id, address))  # type: ignore[arg-type]
    alice = await customer_of(sessions, "mail-alice-1")
    old = await customer_of(sessions, "mail-alice-old")
    bob = await customer_of(sessions, "mail-bob")
    commands = CaseCommands(sessions, records, orm.utc_now)
    await commands.merge(TENANT, "admin-1", alice, old)
    await relay.drain()
    assert await erased_events(bus) == []

    # Rolled back after the erasure staged its event: nothing is published, now or later.
    with pytest.raises(RuntimeError):
        async with sessions.begin() as session:
            await customers.erase(session, TENANT, bob, "admin-1", orm.utc_now())
            assert await erased_events(bus) == []  # not before the commit either
            raise RuntimeError("the erasure fails before its commit")
    await relay.drain()
    assert await erased_events(bus) == []

    assert await commands.erase(TENANT, "admin-1", alice) == (alice, 2)

    async def one_published() -> bool:
        return len(await erased_events(bus)) == 1

    await eventually(one_published)  # handed over by the commit, without the relay's round
    assert await relay.drain() == 0  # and only once
    [event] = await erased_events(bus)
    assert event.meta.tenant == TENANT and event.meta.event_id
    assert event.customer_id == alice
    assert sorted(event.contact_ids) == ["mail-alice-1", "mail-alice-2", "mail-alice-old"]
    # Her identities (the merged customer's too) by sender key, for the channels' quarantines:
    # keyed hashes, never the addresses.
    key = sender_keys.secret_key(DEV_AUTH_SECRET)
    assert sorted(event.sender_keys) == sorted(
        sender_keys.sender_key(key, TENANT, contact_pb2.IDENTITY_KIND_EMAIL, address)
        for address in ("alice@example.com", "alice.old@example.com")
    )
    assert b"@example.com" not in event.SerializeToString()
    # It names the contacts but holds nothing of them: erasing them from the streams keeps it.
    assert stream_erasure.contact_of(event) == ""
    await stream_erasure.erase_contacts(bus.js, TENANT, list(event.contact_ids))
    assert len(await erased_events(bus)) == 1

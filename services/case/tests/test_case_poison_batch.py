"""Poison events in the middle of a fetched batch, through the real consumer on a real nats-server:
each is parked in the dead-letter stream and terminated on its first delivery, and the rest of
the batch is recorded, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from switchboard.case import audit
from switchboard.case.adapters import orm
from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.core import deadletter, events
from switchboard.core.bus import Bus
from switchboard.testing.contacts import contact_created
from switchboard.v1 import contact_pb2, events_pb2

CHAT = contact_pb2.CHANNEL_CHAT


def meta(tenant: str = "acme") -> Any:
    return events.new_meta(tenant, CHAT, "test")


def created(cid: str, email: str, tenant: str = "acme") -> events_pb2.ContactCreated:
    return contact_created(cid, tenant=tenant, email=email)


def message(mid: str, text: str, agent: str = "") -> events_pb2.MessageAdded:
    return events_pb2.MessageAdded(
        meta=meta(),
        message=contact_pb2.Message(
            message_id=mid,
            contact_id="c-1",
            author=contact_pb2.AUTHOR_AGENT if agent else contact_pb2.AUTHOR_CUSTOMER,
            agent_id=agent,
            parts=[contact_pb2.ContentPart(content_type="text/plain", text=text)],
        ),
    )


@pytest.fixture
async def app(nats_url: str, database_url: str) -> AsyncIterator[CaseApp]:
    settings = CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        CASE_CONSUMER_ACK_WAIT_SECONDS=5,
        SWITCHBOARD_AUTH_SECRET="case-poison-secret",
        SHUTDOWN_GRACE_SECONDS=1.0,
    )
    service = bootstrap(settings, run_scheduler=False)
    yield service
    await service.stop()


async def test_poison_events_in_the_middle_of_a_batch_are_parked_and_the_rest_is_recorded(
    app: CaseApp, bus: Bus
) -> None:
    # A contact of another tenant, named by an acme event: refused by its handler.
    foreign = events_pb2.ContactAssigned(meta=meta(), contact_id="g-1", agent_id="agent-7")
    # A NUL character, which PostgreSQL cannot store in text (SQLite can).
    nul = message("m-nul", "broken\x00text")
    batch = [
        created("c-1", "ana@example.com"),
        created("g-1", "gus@globex.example", tenant="globex"),
        events_pb2.ContactQueued(meta=meta(), contact_id="c-1", queue="general"),
        foreign,
        message("m-1", "My invoice is wrong"),
        nul,
        events_pb2.ContactAssigned(meta=meta(), contact_id="c-1", agent_id="agent-7"),
        message("m-2", "Let me check", agent="agent-7"),
        created("c-2", "bo@example.com"),
        events_pb2.ContactEnded(meta=meta(), contact_id="c-1", agent_id="agent-7"),
    ]
    await bus.publish_many(batch)  # before the service starts: its first fetch takes them all
    await app.start()

    async def settled() -> bool:
        info = await bus.js.consumer_info("EVENTS", "case")
        return info.num_pending == 0 and info.num_ack_pending == 0

    for _ in range(400):
        if await settled():
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the batch was never settled")

    parked = {p.event_id: p for p in await deadletter.parked(bus.js, "case")}
    assert set(parked) == {foreign.meta.event_id, nul.meta.event_id}
    for p in parked.values():
        assert p.deliveries == 1, p.reason  # given up on at once, not retried
        assert p.reason.startswith("InvalidArgument"), p.reason
    assert "another tenant" in parked[foreign.meta.event_id].reason

    assert app.sessions is not None
    async with app.sessions() as session:
        contacts = {c.contact_id: c for c in await session.scalars(select(orm.Contact))}
        messages = set(await session.scalars(select(orm.Message.message_id)))
        claimed = set(await session.scalars(select(orm.ProcessedEvent.event_id)))
        c1_case = await session.get(orm.Case, contacts["c-1"].case_id)
        checked, breaks = await audit.verify(session, audit.CASE)
    assert set(contacts) == {"c-1", "g-1", "c-2"}
    assert (contacts["c-1"].status, contacts["c-1"].agent_id) == ("ended", "agent-7")
    assert contacts["g-1"].agent_id == "" and contacts["g-1"].tenant == "globex"
    assert messages == {"m-1", "m-2"}
    assert c1_case is not None and c1_case.assigned_agent_id == "agent-7"
    assert c1_case.first_response_at is not None
    assert claimed == {e.meta.event_id for e in batch} - set(parked)
    assert breaks == [] and checked == 3

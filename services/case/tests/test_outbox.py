"""The outbox hands a writer's events to the relay at its commit (real nats-server, SQLite and
PostgreSQL): they are published without waiting for the relay's round, the rows JetStream
acknowledged are deleted by the next writer's own transaction, and the relay's backstop publishes
only what is not on its way (a publish that failed)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from switchboard.case import outbox
from switchboard.case.adapters import orm
from switchboard.case.entrypoints.nats_consumer import handlers_by_type
from switchboard.case.handlers import CaseHandlers
from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.core.errors import Retry
from switchboard.testing.contacts import contact_created
from switchboard.testing.streams import published
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2


def created(contact_id: str) -> events_pb2.ContactCreated:
    return contact_created(
        contact_id,
        channel=contact_pb2.CHANNEL_EMAIL,
        email=f"{contact_id}@example.com",
        subject="invoice",
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


async def outbox_ids(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessions() as session:
        return set(await session.scalars(select(orm.OutboxEvent.event_id)))


async def published_count(bus: Bus, n: int) -> bool:
    return len(await cases_published(bus)) == n


async def cases_published(bus: Bus) -> list[str]:
    return [
        e.case_id for e in await published(bus, "case.acme.created", case_events_pb2.CaseCreated)
    ]


async def test_committed_events_are_published_at_once_and_deleted_by_the_next_writer(
    sessions: async_sessionmaker[AsyncSession], bus: Bus
) -> None:
    relay = outbox.OutboxRelay(sessions, bus)  # its backstop round never runs here
    handlers = CaseHandlers(sessions, "case")
    relay_transactions: list[int] = []

    def count_relay_writes(session: Session) -> None:
        if outbox.STAGED not in session.info and session.info.get(outbox.RELAY) is relay:
            relay_transactions.append(1)

    sa_event.listen(Session, "before_commit", count_relay_writes)
    try:
        await handlers.on_contact_created(created("c1"))
        first = await outbox_ids(sessions)
        assert first  # staged with the change it reports

        await eventually(lambda: published_count(bus, 1))  # without a relay round
        await handlers.on_contact_created(created("c2"))
        left = await outbox_ids(sessions)
        assert not left & first  # the second writer's transaction deleted the first's rows
        await eventually(lambda: published_count(bus, 2))
        assert relay_transactions == []  # the relay wrote nothing of its own
        assert await relay.drain() == 0  # nothing left for the backstop to publish
        assert await outbox_ids(sessions) == set()
        assert len(await cases_published(bus)) == 2
    finally:
        sa_event.remove(Session, "before_commit", count_relay_writes)


async def test_what_the_commit_could_not_publish_is_left_to_the_backstop(
    sessions: async_sessionmaker[AsyncSession], bus: Bus, monkeypatch: object
) -> None:
    relay = outbox.OutboxRelay(sessions, bus)
    handlers = CaseHandlers(sessions, "case")
    real = bus.publish_async
    calls = 0

    async def away_once(event: object) -> asyncio.Future[object]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("NATS is away")
        return await real(event)  # type: ignore[arg-type]

    bus.publish_async = away_once  # type: ignore[method-assign]
    try:
        await handlers.on_contact_created(created("c1"))
        await relay.drain(older_than=outbox.BACKSTOP_SECONDS)  # too recent for the backstop
        assert await outbox_ids(sessions)
        assert await relay.drain() >= 1  # the backstop publishes what failed
    finally:
        bus.publish_async = real  # type: ignore[method-assign]
    assert await outbox_ids(sessions) == set()
    assert len(await cases_published(bus)) == 1
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(orm.Case)) == 1


class Crash(Exception):
    pass


async def _apply_isolated(handlers: CaseHandlers, batch: list[Any], crash: bool = False) -> None:
    """Apply `batch` the way the bus's isolated retry does: each event in its savepoint, one that
    is not ready undone alone; with `crash`, the batch fails after its last event."""
    by_type = handlers_by_type(handlers)
    async with handlers.batch(batch, isolate=True) as unit:
        for event in batch:
            try:
                async with unit.each(event):
                    await by_type[type(event)](event)
            except Retry:
                pass
        if crash:
            raise Crash("the process dies before the batch's commit")


async def test_an_isolated_batch_hands_its_events_over_at_its_commit_not_at_each_savepoint(
    sessions: async_sessionmaker[AsyncSession], bus: Bus
) -> None:
    """Each event of an isolated batch runs in a savepoint; releasing one is not the commit.
    A batch that fails before its commit publishes nothing, and one that commits publishes the
    events of every savepoint kept, also those before a savepoint that was undone."""
    relay = outbox.OutboxRelay(sessions, bus)
    handlers = CaseHandlers(sessions, "case")

    def not_ready() -> events_pb2.ContactQueued:
        return events_pb2.ContactQueued(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test"),
            contact_id="not-recorded",
            queue="general",
        )

    with pytest.raises(Crash):
        await _apply_isolated(handlers, [created("c1"), not_ready(), created("c2")], crash=True)
    await relay.drain(older_than=outbox.BACKSTOP_SECONDS)  # settles nothing: nothing is due
    await relay._settled()
    assert await cases_published(bus) == []
    assert await outbox_ids(sessions) == set()

    await _apply_isolated(handlers, [created("c1"), not_ready(), created("c2")])
    await eventually(lambda: published_count(bus, 2))  # at the commit, not at the backstop
    assert await relay.drain() == 0

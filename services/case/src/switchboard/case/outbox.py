"""The transactional outbox: case events are written with the change they report and published
after the commit, so an event is never lost when the bus is briefly away, and never published for
a change that was rolled back. A relay publishes staged events oldest first (the event id is the
Nats-Msg-Id, so a re-publish after a crash is de-duplicated) and deletes each one JetStream
acknowledged."""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import Message
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters.orm import OutboxEvent, utc_now
from switchboard.core import events
from switchboard.core.bus import Bus

logger = logging.getLogger(__name__)
BATCH = 200


def stage(session: AsyncSession, event: Message) -> None:
    """Write `event` to the outbox in the caller's transaction."""
    events.validate_meta(event)
    session.add(
        OutboxEvent(
            event_id=event.meta.event_id,  # type: ignore[attr-defined]
            type_name=event.DESCRIPTOR.full_name,
            payload=event.SerializeToString(),
            created_at=utc_now(),
        )
    )


class OutboxRelay:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], bus: Bus | None) -> None:
        self._sessions = sessions
        self._bus = bus
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Publish every staged event; the number published. A publish failure leaves the rest
        for the next round."""
        if self._bus is None:
            return 0
        published = 0
        while True:
            async with self._sessions() as session:
                rows = list(
                    await session.scalars(
                        select(OutboxEvent)
                        .order_by(OutboxEvent.created_at, OutboxEvent.event_id)
                        .limit(BATCH)
                    )
                )
            if not rows:
                return published
            done = []
            try:
                for row in rows:
                    spec = events.spec_by_name(row.type_name)
                    if spec is not None:
                        event = spec.type()
                        event.ParseFromString(row.payload)
                        await self._bus.publish(event)
                    else:
                        logger.error("outbox event %s has unknown type", row.event_id)
                    done.append(row.event_id)
            finally:
                if done:
                    async with self._sessions.begin() as session:
                        await session.execute(
                            delete(OutboxEvent).where(OutboxEvent.event_id.in_(done))
                        )
                    published += len(done)
            if len(rows) < BATCH:
                return published

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Drain when woken (after a commit that staged events) or every `interval` seconds."""
        while not stop.is_set():
            try:
                await self.drain()
            except Exception:  # the bus or the database is away: try again later
                logger.warning("outbox relay failed; retrying", exc_info=True)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), interval)
            except TimeoutError:
                pass

"""The transactional outbox: case events are written with the change they report and published
after the commit, so an event is never lost when the bus is briefly away, and never published for
a change that was rolled back. A relay publishes staged events oldest first (the event id is the
Nats-Msg-Id, so a re-publish after a crash is de-duplicated), pipelined, and deletes each one
JetStream acknowledged. The same relay sends the mails of the mail outbox (see mail_outbox)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import bulk
from switchboard.case.adapters.orm import OutboxEvent, utc_now
from switchboard.case.mail_outbox import MailRelay
from switchboard.core import events
from switchboard.core.bus import Bus

logger = logging.getLogger(__name__)
BATCH = 200


def stage(session: AsyncSession, event: Message) -> None:
    """Write `event` to the outbox in the caller's transaction."""
    events.validate_meta(event)
    bulk.add_row(
        session,
        OutboxEvent,
        {
            "event_id": event.meta.event_id,  # type: ignore[attr-defined]
            "type_name": event.DESCRIPTOR.full_name,
            "payload": event.SerializeToString(),
            "created_at": utc_now(),
        },
    )


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: Bus | None,
        mail: MailRelay | None = None,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self.mail = mail
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def drain(self) -> int:
        """Publish every staged event and send every due mail; the number of events published. A
        publish failure leaves the rest for the next round; the mails are sent all the same."""
        try:
            published = await self._publish()
        finally:
            if self.mail is not None:
                await self.mail.drain()
        return published

    async def _publish(self) -> int:
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
            done: list[str] = []
            sent: list[tuple[str, asyncio.Future[Any]]] = []
            try:
                # Pipelined: all sent, then the acks awaited together. A row is deleted only
                # once JetStream has acknowledged it; the rest stay for the next round.
                for row in rows:
                    spec = events.spec_by_name(row.type_name)
                    if spec is None:
                        logger.error("outbox event %s has unknown type", row.event_id)
                        done.append(row.event_id)
                        continue
                    event = spec.type()
                    event.ParseFromString(row.payload)
                    sent.append((row.event_id, await self._bus.publish_async(event)))
            finally:
                outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
                done += [
                    event_id
                    for (event_id, _), outcome in zip(sent, outcomes, strict=True)
                    if not isinstance(outcome, BaseException)
                ]
                if done:
                    async with self._sessions.begin() as session:
                        await session.execute(
                            delete(OutboxEvent).where(OutboxEvent.event_id.in_(done))
                        )
                    published += len(done)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed  # the bus is away: the relay tries again later
            if len(rows) < BATCH:
                return published

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Drain when woken (after a commit that staged events or mails) or every `interval`
        seconds."""
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

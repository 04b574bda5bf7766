"""The transactional outbox: case events are written with the change they report and published
after the commit, so an event is never lost when the bus is briefly away, and never published for
a change that was rolled back.

The writer's own commit hands its events to the relay, which publishes them at once, pipelined,
in commit order; the rows JetStream acknowledged are deleted by the next writer's transaction
(one more statement in a transaction that writes anyway), not by a transaction of the relay's
own competing with the writers. The relay's periodic round is only the backstop: rows older
than BACKSTOP_SECONDS that are not on their way (a crash between commit and publish, a publish
that failed) are published again (the event id is the Nats-Msg-Id, so a repeat within
JetStream's duplicate window is dropped), and acknowledged rows no writer has deleted within
that time are deleted by the relay. The same relay sends the mails
of the mail outbox (see mail_outbox) and deletes the objects of erased customers (see
object_erasure)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import delete, select
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from switchboard.case import mail_outbox, object_erasure
from switchboard.case.adapters import bulk
from switchboard.case.adapters.orm import OutboxEvent, utc_now
from switchboard.case.mail_outbox import MailRelay
from switchboard.case.object_erasure import ObjectEraser
from switchboard.core import events
from switchboard.core.bus import Bus

logger = logging.getLogger(__name__)
BATCH = 200
BACKSTOP_SECONDS = 5.0  # well inside JetStream's 2-minute duplicate window

RELAY = "outbox_relay"  # session.info: the relay its commits hand their events to
# session.info, forgotten when a transaction or savepoint rolls back (database.TRANSACTION_CACHES):
STAGED = "outbox_staged"  # the events this transaction staged
MARKS = "outbox_marks"  # how many were staged when each open savepoint began
DELETING = "outbox_deleting"  # the acknowledged rows this transaction deletes


def stage(session: AsyncSession, event: Message) -> None:
    """Write `event` to the outbox in the caller's transaction."""
    events.validate_meta(event)
    session.info.setdefault(STAGED, []).append(event)
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
        objects: ObjectEraser | None = None,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self.mail = mail
        self.objects = objects
        self._wake = asyncio.Event()
        self._fresh: deque[Message] = deque()  # committed, not yet sent
        self._fresh_ready = asyncio.Event()
        self._sending: asyncio.Task[None] | None = None
        self._in_flight: set[str] = set()  # handed over by a commit, not yet acknowledged
        self._acked: dict[str, float] = {}  # acknowledged, not yet deleted: when
        self._acks: set[asyncio.Future[None]] = set()
        self._mail_waiting = False
        if bus is not None:
            # Every session from `sessions` hands its committed events to this relay.
            sessions.configure(info={**sessions.kw.get("info", {}), RELAY: self})

    def wake(self) -> None:
        self._wake.set()

    def mail_staged(self) -> None:
        """A committed transaction staged a mail (or an object's deletion): send it now, not at
        the next round."""
        self._mail_waiting = True
        self._wake.set()

    async def _side_work(self) -> None:
        """The mails to send and the erased objects to delete."""
        try:
            if self.mail is not None:
                await self.mail.drain()
        finally:
            if self.objects is not None:
                await self.objects.drain()

    # ---- the hot path: events handed over by their writer's commit -----------------------------

    def committed(self, staged: list[Message]) -> None:
        """`staged` was committed: publish it now (called from the commit, so nothing awaits)."""
        for event in staged:
            self._in_flight.add(event.meta.event_id)  # type: ignore[attr-defined]
        self._fresh.extend(staged)
        self._fresh_ready.set()
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._send_fresh())

    async def _send_fresh(self) -> None:
        """Send what commits handed over, in commit order, pipelined: acks are awaited apart."""
        assert self._bus is not None
        while self._fresh:
            batch = list(self._fresh)
            self._fresh.clear()
            sent: list[tuple[str, asyncio.Future[Any]]] = []
            try:
                for event in batch:
                    future = await self._bus.publish_async(event)
                    sent.append((event.meta.event_id, future))  # type: ignore[attr-defined]
            except Exception as exc:  # the bus is away: the backstop publishes the rest
                logger.warning("outbox publish after commit failed: %r", exc)
                for event in batch[len(sent) :]:
                    self._in_flight.discard(event.meta.event_id)  # type: ignore[attr-defined]
            acks = asyncio.ensure_future(self._settle(sent))
            self._acks.add(acks)
            acks.add_done_callback(self._acks.discard)

    async def _settle(self, sent: list[tuple[str, asyncio.Future[Any]]]) -> None:
        outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        now = time.monotonic()
        for (event_id, _), outcome in zip(sent, outcomes, strict=True):
            self._in_flight.discard(event_id)
            if not isinstance(outcome, BaseException):
                self._acked[event_id] = now

    def deletions(self) -> list[str]:
        """Acknowledged rows for a writer's transaction to delete."""
        return list(self._acked)

    def deleted(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            self._acked.pop(event_id, None)

    async def _settled(self) -> None:
        """Wait until what commits handed over is sent and acknowledged (or failed)."""
        while self._sending is not None and not self._sending.done():
            await asyncio.wait({self._sending})
        if self._acks:
            await asyncio.wait(set(self._acks))

    # ---- the backstop ----------------------------------------------------------------------------

    async def drain(self, older_than: float = 0.0) -> int:
        """Publish every staged event not on its way (only those staged more than `older_than`
        seconds ago), delete what was acknowledged, send every due mail and delete every due
        erased object; the number of events published here. A publish failure leaves the rest
        for the next round; the mails and objects are seen to all the same."""
        try:
            if not older_than:
                await self._settled()  # what commits handed over, acknowledged first
            published = await self._publish(older_than)
        finally:
            await self._side_work()
        return published

    async def _delete_acked(self, older_than: float) -> None:
        """Delete acknowledged rows no writer's transaction has deleted within `older_than`."""
        cutoff = time.monotonic() - older_than
        ids = [event_id for event_id, at in self._acked.items() if at <= cutoff]
        if not ids:
            return
        async with self._sessions.begin() as session:
            await session.execute(delete(OutboxEvent).where(OutboxEvent.event_id.in_(ids)))
            session.info.pop(DELETING, None)  # not this transaction's hand-over to deal with
        self.deleted(ids)

    async def _publish(self, older_than: float = 0.0) -> int:
        if self._bus is None:
            return 0
        await self._delete_acked(older_than)
        published = 0
        skip: set[str] = set()
        while True:
            query = select(OutboxEvent).order_by(OutboxEvent.created_at, OutboxEvent.event_id)
            if older_than:
                query = query.where(
                    OutboxEvent.created_at < utc_now() - timedelta(seconds=older_than)
                )
            async with self._sessions() as session:
                rows = [
                    row
                    for row in await session.scalars(query.limit(BATCH + len(skip)))
                    if row.event_id not in skip
                    and row.event_id not in self._in_flight
                    and row.event_id not in self._acked
                ][:BATCH]
            if not rows:
                return published
            done: list[str] = []
            sent: list[tuple[str, asyncio.Future[Any]]] = []
            outcomes: list[Any] = []
            try:
                # Pipelined: all sent, then the acks awaited together. A row is deleted only
                # once JetStream has acknowledged it; the rest stay for the next round.
                for row in rows:
                    skip.add(row.event_id)
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
        """The backstop round every `interval` seconds; mails as soon as a commit staged one.
        (Events need no round: their commit handed them over.)"""
        next_round = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_round:
                    next_round = time.monotonic() + interval
                    self._mail_waiting = False
                    await self.drain(older_than=BACKSTOP_SECONDS)
                elif self._mail_waiting:
                    self._mail_waiting = False
                    await self._side_work()
            except Exception:  # the bus or the database is away: try again later
                logger.warning("outbox relay failed; retrying", exc_info=True)
            self._wake.clear()
            if self._mail_waiting:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_round - time.monotonic()))
            except TimeoutError:
                pass


# A savepoint's release fires the session's commit events too; only the transaction's own
# commit publishes (a batch that fails after releasing savepoints publishes nothing). A savepoint
# rolled back takes back the events it staged, and only those.


@sa_event.listens_for(Session, "after_transaction_create")
def _mark_a_savepoint(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:
        marks = session.info.setdefault(MARKS, {})
        marks[transaction] = len(session.info.get(STAGED, ()))


@sa_event.listens_for(Session, "after_soft_rollback")
def _take_back_a_savepoints_events(session: Session, previous: SessionTransaction) -> None:
    mark = session.info.get(MARKS, {}).pop(previous, None)
    staged = session.info.get(STAGED)
    if mark is not None and staged is not None:
        del staged[mark:]


@sa_event.listens_for(Session, "before_commit")
def _delete_what_was_published(session: Session) -> None:
    # A writer's transaction (one that staged events: it holds the write lock) deletes the rows
    # JetStream has acknowledged, in the same commit.
    relay = session.info.get(RELAY)
    if relay is None or session.in_nested_transaction() or not session.info.get(STAGED):
        return
    ids = relay.deletions()
    if ids:
        # Rows committed earlier: the transaction's own pending objects need no flush first.
        with session.no_autoflush:
            session.execute(delete(OutboxEvent).where(OutboxEvent.event_id.in_(ids)))
        session.info[DELETING] = ids


@sa_event.listens_for(Session, "after_commit")
def _hand_over_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        session.info.get(MARKS, {}).pop(session.get_nested_transaction(), None)
        return
    relay = session.info.get(RELAY)
    staged = session.info.pop(STAGED, None)
    deleting = session.info.pop(DELETING, None)
    mail = session.info.pop(mail_outbox.STAGED, None)
    objects = session.info.pop(object_erasure.STAGED, None)
    if relay is None:
        return
    if mail or objects:
        relay.mail_staged()
    if deleting:
        relay.deleted(deleting)
    if staged:
        relay.committed(staged)

"""The case service's bus handlers: each applies one event in one transaction, at most once.

Delivery is at least once and in no guaranteed order across redeliveries, so every handler
- records (event_id, consumer) in processed_events in the same transaction as its effects, and
  does nothing when the event was already applied;
- also treats natural keys (contact_id, message_id) as idempotency keys, since a channel may
  republish the same contact or message under a new event id;
- raises Retry when the event refers to a contact not recorded yet (the bus redelivers later),
  and InvalidArgument when the event itself is unusable (the bus terminates it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters.database import insert_ignore
from switchboard.case.adapters.orm import (
    EXTERNAL_ID,
    Case,
    Contact,
    Customer,
    CustomerIdentity,
    Message,
    ProcessedEvent,
    new_id,
    utc_now,
)
from switchboard.core.errors import InvalidArgument, Retry
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

logger = logging.getLogger(__name__)

QUEUED, OFFERED, ASSIGNED, ENDED, ABANDONED = "queued", "offered", "assigned", "ended", "abandoned"
TERMINAL = frozenset({ENDED, ABANDONED})
CLOSED_CASE = (case_pb2.CASE_STATUS_RESOLVED, case_pb2.CASE_STATUS_CLOSED)
SUBJECT_CHARS = 120
INITIAL_SUFFIX = ":initial"

Clock = Callable[[], datetime]


def _when(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _text(value: str, field: str, limit: int = EXTERNAL_ID, required: bool = False) -> str:
    # Checked here so SQLite and PostgreSQL agree, and a too-long value is a clear termination
    # rather than a database error redelivered until the bus gives up.
    if required and not value:
        raise InvalidArgument(field)
    if len(value) > limit:
        raise InvalidArgument(field, f"is longer than {limit} characters")
    return value


def _identities(contact: contact_pb2.Contact) -> list[tuple[int, str]]:
    """The contact's identities, normalised (emails lower-cased) and de-duplicated in order."""
    seen: dict[tuple[int, str], None] = {}
    for i, identity in enumerate(contact.identities):
        value = identity.value.strip()
        if not value:  # an empty identity recognises nobody; keep the contact
            continue
        if identity.kind == contact_pb2.IDENTITY_KIND_EMAIL:
            value = value.lower()
        seen[(identity.kind, _text(value, f"contact.identities[{i}].value"))] = None
    return list(seen)


def message_body(parts: Sequence[contact_pb2.ContentPart]) -> tuple[str, str]:
    """The text and content type kept for content parts: the text/plain parts when there are any
    (an email's alternatives), else the parts of the first part's type, joined by blank lines."""
    if not parts:
        return "", "text/plain"
    types = [p.content_type.split(";")[0].strip().lower() or "text/plain" for p in parts]
    chosen = "text/plain" if "text/plain" in types else types[0]
    text = "\n\n".join(p.text for p, t in zip(parts, types, strict=True) if t == chosen)
    return text, _text(chosen, "content_type")


def case_subject(contact: contact_pb2.Contact) -> str:
    if contact.subject:
        return contact.subject
    for part in contact.content:
        words = " ".join(part.text.split())
        if words:
            return words[:SUBJECT_CHARS]
    return ""


# The transaction of the batch being handled, when the bus runs a batch scope.
_batch_session: ContextVar[AsyncSession | None] = ContextVar("case_batch_session", default=None)


class CaseHandlers:
    """Applies contact and routing events to the case store."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], consumer: str, clock: Clock = utc_now
    ) -> None:
        self._sessions = sessions
        self._consumer = consumer
        self._clock = clock

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        """One transaction for a whole batch of events (the bus's batch scope): one commit, one
        fsync, instead of one per event. If anything in it fails, all of it rolls back and the
        bus hands each event over again on its own."""
        async with self._sessions.begin() as session:
            token = _batch_session.set(session)
            try:
                yield
            finally:
                _batch_session.reset(token)

    async def _claim(self, session: AsyncSession, event: ProtoMessage) -> bool:
        """Record the event as processed; False if it already was (a redelivery)."""
        event_id = event.meta.event_id  # type: ignore[attr-defined]
        claimed = await insert_ignore(
            session,
            ProcessedEvent,
            {"event_id": event_id, "consumer": self._consumer, "processed_at": self._clock()},
            ["event_id", "consumer"],
        )
        if not claimed:
            logger.debug("%s %s already applied", type(event).__name__, event_id)
        return claimed

    async def _apply(
        self, event: ProtoMessage, work: Callable[[AsyncSession], Awaitable[None]]
    ) -> None:
        shared = _batch_session.get()
        if shared is not None:
            if await self._claim(shared, event):
                await work(shared)
            return
        try:
            async with self._sessions.begin() as session:
                if await self._claim(session, event):
                    await work(session)
        except IntegrityError as exc:
            # Another replica wrote the same key (an identity, a contact) at the same moment;
            # redelivered, this event sees the row that won.
            raise Retry(f"concurrent write conflict ({type(exc.orig).__name__})") from exc

    async def _contact(self, session: AsyncSession, tenant: str, contact_id: str) -> Contact:
        contact = await session.get(Contact, contact_id, with_for_update=True)
        if contact is None:
            # Events can overtake the ContactCreated they refer to.
            raise Retry(f"contact {contact_id} is not recorded yet")
        if contact.tenant != tenant:
            raise InvalidArgument("contact_id", "belongs to another tenant")
        return contact

    async def _touch(self, session: AsyncSession, case_id: str) -> None:
        await session.execute(
            update(Case).where(Case.id == case_id).values(updated_at=self._clock())
        )

    # ---- ContactCreated ---------------------------------------------------------------------

    async def on_contact_created(self, event: events_pb2.ContactCreated) -> None:
        """Record a contact: resolve its customer, join the open case or open one."""
        tenant = event.meta.tenant
        if not event.HasField("contact"):
            raise InvalidArgument("contact")
        c = event.contact
        _text(c.contact_id, "contact.contact_id", EXTERNAL_ID - len(INITIAL_SUFFIX), required=True)
        if c.tenant and c.tenant != tenant:
            raise InvalidArgument("contact.tenant", "does not match meta.tenant")
        _text(c.language, "contact.language", 35)
        _text(c.queue, "contact.queue")
        identities = _identities(c)
        text, content_type = message_body(c.content)
        created = _when(c.created_at) or _when(event.meta.occurred_at) or self._clock()
        channel = c.channel or event.meta.channel

        async def work(session: AsyncSession) -> None:
            existing = await session.get(Contact, c.contact_id)
            if existing is not None:
                if existing.tenant != tenant:
                    raise InvalidArgument("contact.contact_id", "belongs to another tenant")
                return  # republished under a new event id: already recorded
            customer = await self._resolve_customer(
                session, tenant, identities, c.customer_name, created
            )
            case, opened = await self._join_or_open_case(session, customer, c, created)
            session.add(
                Contact(
                    contact_id=c.contact_id,
                    tenant=tenant,
                    case_id=case.id,
                    channel=channel,
                    language=c.language,
                    skills=list(c.skills),
                    queue=c.queue,
                    subject=c.subject,
                    agent_id="",
                    status=QUEUED,
                    created_at=created,
                )
            )
            await session.flush()
            if c.content:
                session.add(
                    Message(
                        message_id=c.contact_id + INITIAL_SUFFIX,
                        contact_id=c.contact_id,
                        tenant=tenant,
                        author=contact_pb2.AUTHOR_CUSTOMER,
                        agent_id="",
                        text=text,
                        content_type=content_type,
                        sent_at=created,
                    )
                )
            logger.info(
                "contact %s recorded in %s case %s",
                c.contact_id,
                "new" if opened else "open",
                case.id,
            )

        await self._apply(event, work)

    async def _resolve_customer(
        self,
        session: AsyncSession,
        tenant: str,
        identities: list[tuple[int, str]],
        name: str,
        created: datetime,
    ) -> Customer:
        """The customer any of `identities` belongs to (the oldest, if they name several), or a
        new one (always, for a contact with no identities); unknown identities are added to it."""
        known: list[CustomerIdentity] = []
        if identities:
            matches = or_(
                *(
                    and_(CustomerIdentity.kind == k, CustomerIdentity.value == v)
                    for k, v in identities
                )
            )
            result = await session.execute(
                select(CustomerIdentity).where(CustomerIdentity.tenant == tenant, matches)
            )
            known = list(result.scalars())
        customer: Customer | None = None
        if known:
            # The row lock serialises two contacts of one customer choosing (or opening) its case.
            chosen = await session.execute(
                select(Customer)
                .where(Customer.id.in_({i.customer_id for i in known}))
                .order_by(Customer.created_at, Customer.id)
                .limit(1)
                .with_for_update()
            )
            customer = chosen.scalar_one()
            if name and not customer.display_name:
                customer.display_name = name
        else:
            customer = Customer(id=new_id(), tenant=tenant, display_name=name, created_at=created)
            session.add(customer)
            await session.flush()
        taken = {(i.kind, i.value) for i in known}
        for kind, value in identities:
            if (kind, value) not in taken:
                session.add(
                    CustomerIdentity(tenant=tenant, kind=kind, value=value, customer_id=customer.id)
                )
        return customer

    async def _join_or_open_case(
        self,
        session: AsyncSession,
        customer: Customer,
        contact: contact_pb2.Contact,
        created: datetime,
    ) -> tuple[Case, bool]:
        result = await session.execute(
            select(Case)
            .where(Case.customer_id == customer.id, Case.status.not_in(CLOSED_CASE))
            .order_by(Case.created_at.desc(), Case.id)
            .limit(1)
        )
        case = result.scalar_one_or_none()
        if case is not None:
            case.updated_at = self._clock()
            if not case.subject:
                case.subject = case_subject(contact)
            return case, False
        case = Case(
            id=new_id(),
            tenant=customer.tenant,
            customer_id=customer.id,
            status=case_pb2.CASE_STATUS_NEW,
            subject=case_subject(contact),
            assigned_agent_id="",
            created_at=created,
            updated_at=self._clock(),
        )
        session.add(case)
        await session.flush()
        return case, True

    # ---- MessageAdded -----------------------------------------------------------------------

    async def on_message_added(self, event: events_pb2.MessageAdded) -> None:
        """Append a message to its contact's conversation (once per message_id)."""
        tenant = event.meta.tenant
        if not event.HasField("message"):
            raise InvalidArgument("message")
        m = event.message
        _text(m.message_id, "message.message_id", required=True)
        _text(m.contact_id, "message.contact_id", required=True)
        _text(m.agent_id, "message.agent_id")
        text, content_type = message_body(m.parts)
        sent = _when(m.sent_at) or _when(event.meta.occurred_at) or self._clock()

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, m.contact_id)
            values = {
                "message_id": m.message_id,
                "contact_id": m.contact_id,
                "tenant": tenant,
                "author": m.author,
                "agent_id": m.agent_id,
                "text": text,
                "content_type": content_type,
                "sent_at": sent,
            }
            if await insert_ignore(session, Message, values, ["message_id"]):
                await self._touch(session, contact.case_id)

        await self._apply(event, work)

    # ---- routing and lifecycle --------------------------------------------------------------

    async def on_contact_queued(self, event: events_pb2.ContactQueued) -> None:
        _text(event.contact_id, "contact_id", required=True)
        _text(event.queue, "queue")
        await self._set_status(event, event.contact_id, QUEUED, queue=event.queue)

    async def on_contact_offered(self, event: events_pb2.ContactOffered) -> None:
        _text(event.contact_id, "contact_id", required=True)
        await self._set_status(event, event.contact_id, OFFERED)

    async def _set_status(
        self, event: ProtoMessage, contact_id: str, status: str, queue: str = ""
    ) -> None:
        tenant = event.meta.tenant  # type: ignore[attr-defined]

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, contact_id)
            if queue:
                contact.queue = queue
            # A late queued/offered must not undo an assignment or an end.
            if contact.status == ASSIGNED or contact.status in TERMINAL:
                return
            contact.status = status
            await self._touch(session, contact.case_id)

        await self._apply(event, work)

    async def on_contact_assigned(self, event: events_pb2.ContactAssigned) -> None:
        """The contact is with an agent; so is its case."""
        tenant = event.meta.tenant
        _text(event.contact_id, "contact_id", required=True)
        _text(event.agent_id, "agent_id", required=True)
        _text(event.queue, "queue")
        assigned = _when(event.meta.occurred_at) or self._clock()

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, event.contact_id)
            contact.agent_id = event.agent_id
            contact.assigned_at = assigned
            if event.queue:
                contact.queue = event.queue
            if contact.status not in TERMINAL:
                contact.status = ASSIGNED
            case = await session.get(Case, contact.case_id, with_for_update=True)
            if case is not None:
                case.assigned_agent_id = event.agent_id
                if case.status == case_pb2.CASE_STATUS_NEW:
                    case.status = case_pb2.CASE_STATUS_ASSIGNED
                case.updated_at = self._clock()
            logger.info("contact %s assigned to %s", event.contact_id, event.agent_id)

        await self._apply(event, work)

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        _text(event.contact_id, "contact_id", required=True)
        _text(event.agent_id, "agent_id")
        await self._end(event, event.contact_id, ENDED, agent_id=event.agent_id)

    async def on_contact_abandoned(self, event: events_pb2.ContactAbandoned) -> None:
        _text(event.contact_id, "contact_id", required=True)
        await self._end(event, event.contact_id, ABANDONED)

    async def _end(
        self, event: ProtoMessage, contact_id: str, status: str, agent_id: str = ""
    ) -> None:
        tenant = event.meta.tenant  # type: ignore[attr-defined]
        ended = _when(event.meta.occurred_at) or self._clock()  # type: ignore[attr-defined]

        async def work(session: AsyncSession) -> None:
            contact = await self._contact(session, tenant, contact_id)
            if contact.status in TERMINAL:  # the first end is the one that happened
                return
            contact.status = status
            contact.ended_at = ended
            if agent_id and not contact.agent_id:
                contact.agent_id = agent_id
            await self._touch(session, contact.case_id)
            logger.info("contact %s %s", contact_id, status)

        await self._apply(event, work)

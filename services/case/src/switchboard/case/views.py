"""The read side of the case store: cases as the protobuf messages CaseService returns."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit, customers
from switchboard.case.adapters import orm
from switchboard.case.commands import find_case
from switchboard.case.pagination import CaseQuery, Cursor
from switchboard.case.sla.engine import SlaEngine
from switchboard.core import hash_chain
from switchboard.core.errors import InvalidArgument, NotFound
from switchboard.v1 import case_pb2, contact_pb2

ORDER_CREATED_DESC = case_pb2.CASE_ORDER_CREATED_DESC
ORDER_CREATED_ASC = case_pb2.CASE_ORDER_CREATED_ASC
ORDER_UPDATED_DESC = case_pb2.CASE_ORDER_UPDATED_DESC
ORDER_PRIORITY_DESC = case_pb2.CASE_ORDER_PRIORITY_DESC


def timestamp(value: datetime | None) -> Timestamp | None:
    """A datetime as a protobuf Timestamp; None stays None (the field is left unset)."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _duration(seconds: float) -> Duration:
    d = Duration()
    d.FromMilliseconds(round(seconds * 1000))
    return d


def _message(row: orm.Message) -> contact_pb2.Message:
    return contact_pb2.Message(
        message_id=row.message_id,
        contact_id=row.contact_id,
        author=row.author,  # type: ignore[arg-type]
        agent_id=row.agent_id,
        parts=[contact_pb2.ContentPart(content_type=row.content_type, text=row.text)],
        sent_at=timestamp(row.sent_at),
    )


def _contact(row: orm.Contact, messages: Sequence[orm.Message]) -> case_pb2.CaseContact:
    return case_pb2.CaseContact(
        contact_id=row.contact_id,
        channel=row.channel,  # type: ignore[arg-type]
        language=row.language,
        skills=list(row.skills or []),
        queue=row.queue,
        agent_id=row.agent_id,
        created_at=timestamp(row.created_at),
        assigned_at=timestamp(row.assigned_at),
        ended_at=timestamp(row.ended_at),
        subject=row.subject,
        messages=[_message(m) for m in messages],
        status=row.status,
        conversation_id=row.conversation_id,
    )


class CaseViews:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        sla: SlaEngine | None = None,
        clock: Callable[[], datetime] = orm.utc_now,
    ) -> None:
        self._sessions = sessions
        self._sla = sla
        self._clock = clock

    async def get_case(self, tenant: str, case_id: str) -> case_pb2.Case:
        """The whole case (by id or reference): customer with identities, contacts in order, each
        with its messages, notes and SLA timers. A case of another tenant does not exist."""
        async with self._sessions() as session:
            row = await find_case(session, tenant, case_id)
            return (await self._build(session, [row], with_messages=True))[0]

    async def audit_trail(self, tenant: str, case_id: str, customer_id: str) -> case_pb2.AuditTrail:
        """A case's (or a customer's) audit entries in order, and whether its chain verifies."""
        async with self._sessions() as session:
            if case_id:
                entity, entity_id = audit.CASE, (await find_case(session, tenant, case_id)).id
            elif customer_id:
                row = await session.scalar(
                    select(orm.Customer).where(
                        orm.Customer.id == customer_id, orm.Customer.tenant == tenant
                    )
                )
                if row is None:
                    raise NotFound("customer", customer_id)
                entity, entity_id = audit.CUSTOMER, row.id
            else:
                raise InvalidArgument("case_id", "name a case or a customer")
            entries = await audit.trail(session, entity, entity_id)
        return case_pb2.AuditTrail(
            entries=[
                case_pb2.AuditEntry(
                    seq=e.seq,
                    at=timestamp(e.at),
                    actor=e.actor,
                    action=e.action,
                    data_json=audit.data_json(e),
                    prev_hash=e.prev_hash,
                    hash=e.hash,
                )
                for e in entries
            ],
            intact=hash_chain.check_chain(entries) is None,
        )

    async def customer_history(
        self, tenant: str, customer_id: str, max_cases: int
    ) -> case_pb2.CustomerHistory:
        """A customer's cases newest first, each with its contacts (following merges)."""
        async with self._sessions() as session:
            customer = await customers.get(session, tenant, customer_id)
            rows = list(
                await session.scalars(
                    select(orm.Case)
                    .where(orm.Case.customer_id == customer.id, orm.Case.tenant == tenant)
                    .order_by(orm.Case.created_at.desc(), orm.Case.id)
                    .limit(max_cases)
                )
            )
            cases = await self._build(session, rows, with_messages=False)
            if cases:
                summary = cases[0].customer
            else:
                summary = (await self._customers(session, {customer.id}))[customer.id]
        return case_pb2.CustomerHistory(customer=summary, cases=cases)

    async def _customers(
        self, session: AsyncSession, customer_ids: set[str]
    ) -> dict[str, case_pb2.Customer]:
        rows = {
            c.id: c
            for c in await session.scalars(
                select(orm.Customer).where(orm.Customer.id.in_(customer_ids))
            )
        }
        identities: dict[str, list[contact_pb2.CustomerIdentity]] = defaultdict(list)
        for i in await session.scalars(
            select(orm.CustomerIdentity)
            .where(orm.CustomerIdentity.customer_id.in_(customer_ids))
            .order_by(orm.CustomerIdentity.kind, orm.CustomerIdentity.value)
        ):
            identities[i.customer_id].append(
                contact_pb2.CustomerIdentity(
                    kind=i.kind,  # type: ignore[arg-type]
                    value=i.sealed or i.value,  # value: the blind index (or, not backfilled, it)
                )
            )
        return {
            cid: case_pb2.Customer(
                customer_id=c.id, display_name=c.display_name, identities=identities[cid]
            )
            for cid, c in rows.items()
        }

    async def list_cases(
        self, query: CaseQuery, page_size: int, after: Cursor | None
    ) -> tuple[list[case_pb2.Case], Cursor | None]:
        """One page of the tenant's cases, newest first, with customers and contacts (not their
        messages: GetCase has those), and the cursor of the next page if there is one."""
        c = orm.Case
        stmt = select(c).where(c.tenant == query.tenant)
        if query.status:
            stmt = stmt.where(c.status == query.status)
        if query.case_type:
            stmt = stmt.where(c.case_type == query.case_type)
        if query.priority:
            stmt = stmt.where(c.priority == query.priority)
        if query.queue:
            stmt = stmt.where(c.queue == query.queue)
        if query.assigned_agent_id:
            stmt = stmt.where(c.assigned_agent_id == query.assigned_agent_id)
        if query.customer_id:
            stmt = stmt.where(c.customer_id == query.customer_id)
        if query.contact_id:
            holding = select(orm.Contact.case_id).where(
                orm.Contact.contact_id == query.contact_id, orm.Contact.tenant == query.tenant
            )
            stmt = stmt.where(c.id.in_(holding))
        when = c.updated_at if query.order == ORDER_UPDATED_DESC else c.created_at
        if after is not None:
            if query.order == ORDER_CREATED_ASC:
                later = or_(
                    when > after.created_at, and_(when == after.created_at, c.id > after.case_id)
                )
            else:
                later = or_(
                    when < after.created_at, and_(when == after.created_at, c.id > after.case_id)
                )
            if query.order == ORDER_PRIORITY_DESC:
                later = or_(c.priority < after.priority, and_(c.priority == after.priority, later))
            stmt = stmt.where(later)
        if query.order == ORDER_CREATED_ASC:
            stmt = stmt.order_by(when.asc(), c.id)
        elif query.order == ORDER_PRIORITY_DESC:
            stmt = stmt.order_by(c.priority.desc(), when.desc(), c.id)
        else:
            stmt = stmt.order_by(when.desc(), c.id)
        # One row more than asked tells whether another page exists.
        stmt = stmt.limit(page_size + 1)
        async with self._sessions() as session:
            rows = list((await session.scalars(stmt)).all())
            page = rows[:page_size]
            cases = await self._build(session, page, with_messages=False)
        if len(rows) <= page_size:
            return cases, None
        last = page[-1]
        last_when = last.updated_at if query.order == ORDER_UPDATED_DESC else last.created_at
        return cases, Cursor(last_when, last.id, last.priority)

    async def _build(
        self, session: AsyncSession, rows: Sequence[orm.Case], with_messages: bool
    ) -> list[case_pb2.Case]:
        if not rows:
            return []
        summaries = await self._customers(session, {r.customer_id for r in rows})
        case_ids = {r.id for r in rows}
        contacts: dict[str, list[orm.Contact]] = defaultdict(list)
        for ct in await session.scalars(
            select(orm.Contact)
            .where(orm.Contact.case_id.in_({r.id for r in rows}))
            .order_by(orm.Contact.created_at, orm.Contact.contact_id)
        ):
            contacts[ct.case_id].append(ct)
        messages: dict[str, list[orm.Message]] = defaultdict(list)
        if with_messages:
            contact_ids = [ct.contact_id for cts in contacts.values() for ct in cts]
            for m in await session.scalars(
                select(orm.Message)
                .where(orm.Message.contact_id.in_(contact_ids))
                .order_by(orm.Message.sent_at, orm.Message.message_id)
            ):
                messages[m.contact_id].append(m)
        notes: dict[str, list[case_pb2.CaseNote]] = defaultdict(list)
        if with_messages:
            for n in await session.scalars(
                select(orm.CaseNote)
                .where(orm.CaseNote.case_id.in_(case_ids))
                .order_by(orm.CaseNote.created_at, orm.CaseNote.id)
            ):
                notes[n.case_id].append(
                    case_pb2.CaseNote(
                        note_id=n.id,
                        author=n.author,
                        text=n.text,
                        created_at=timestamp(n.created_at),
                    )
                )
        timers: dict[str, list[case_pb2.SlaTimer]] = defaultdict(list)
        now = self._clock()
        for t in await session.scalars(
            select(orm.SlaTimer)
            .where(orm.SlaTimer.case_id.in_(case_ids))
            .order_by(orm.SlaTimer.metric)
        ):
            elapsed = self._sla.elapsed(t, now) if self._sla else t.elapsed_s
            timers[t.case_id].append(
                case_pb2.SlaTimer(
                    metric=t.metric,
                    policy=t.policy,
                    target=_duration(t.target_s),
                    elapsed=_duration(elapsed),
                    state=t.state,
                    breached_at=timestamp(t.breached_at),
                    thresholds_reached=list(t.fired or []),
                )
            )
        result = []
        for r in rows:
            result.append(
                case_pb2.Case(
                    case_id=r.id,
                    tenant=r.tenant,
                    status=r.status,  # type: ignore[arg-type]
                    subject=r.subject,
                    customer=summaries[r.customer_id],
                    contacts=[_contact(ct, messages[ct.contact_id]) for ct in contacts[r.id]],
                    created_at=timestamp(r.created_at),
                    updated_at=timestamp(r.updated_at),
                    assigned_agent_id=r.assigned_agent_id,
                    reference=r.reference,
                    case_type=r.case_type,  # type: ignore[arg-type]
                    priority=r.priority,  # type: ignore[arg-type]
                    queue=r.queue,
                    notes=notes[r.id],
                    sla=timers[r.id],
                    first_response_at=timestamp(r.first_response_at),
                    resolved_at=timestamp(r.resolved_at),
                    closed_at=timestamp(r.closed_at),
                    template=r.template,
                    reopened_count=r.reopened_count,
                )
            )
        return result

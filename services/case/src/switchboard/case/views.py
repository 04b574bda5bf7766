"""The read side of the case store: cases as the protobuf messages CaseService returns."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
from switchboard.case.pagination import CaseQuery, Cursor
from switchboard.core.errors import NotFound
from switchboard.v1 import case_pb2, contact_pb2


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _message(row: orm.Message) -> contact_pb2.Message:
    return contact_pb2.Message(
        message_id=row.message_id,
        contact_id=row.contact_id,
        author=row.author,  # type: ignore[arg-type]
        agent_id=row.agent_id,
        parts=[contact_pb2.ContentPart(content_type=row.content_type, text=row.text)],
        sent_at=_ts(row.sent_at),
    )


def _contact(row: orm.Contact, messages: Sequence[orm.Message]) -> case_pb2.CaseContact:
    return case_pb2.CaseContact(
        contact_id=row.contact_id,
        channel=row.channel,  # type: ignore[arg-type]
        language=row.language,
        skills=list(row.skills or []),
        queue=row.queue,
        agent_id=row.agent_id,
        created_at=_ts(row.created_at),
        assigned_at=_ts(row.assigned_at),
        ended_at=_ts(row.ended_at),
        subject=row.subject,
        messages=[_message(m) for m in messages],
        status=row.status,
    )


class CaseViews:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get_case(self, tenant: str, case_id: str) -> case_pb2.Case:
        """The whole case: customer with identities, contacts in order, each with its messages.
        A case of another tenant does not exist for the caller."""
        async with self._sessions() as session:
            row = await session.scalar(
                select(orm.Case).where(orm.Case.id == case_id, orm.Case.tenant == tenant)
            )
            if row is None:
                raise NotFound("case", case_id)
            return (await self._build(session, [row], with_messages=True))[0]

    async def list_cases(
        self, query: CaseQuery, page_size: int, after: Cursor | None
    ) -> tuple[list[case_pb2.Case], Cursor | None]:
        """One page of the tenant's cases, newest first, with customers and contacts (not their
        messages: GetCase has those), and the cursor of the next page if there is one."""
        c = orm.Case
        stmt = select(c).where(c.tenant == query.tenant)
        if query.status:
            stmt = stmt.where(c.status == query.status)
        if query.customer_id:
            stmt = stmt.where(c.customer_id == query.customer_id)
        if query.contact_id:
            holding = select(orm.Contact.case_id).where(
                orm.Contact.contact_id == query.contact_id, orm.Contact.tenant == query.tenant
            )
            stmt = stmt.where(c.id.in_(holding))
        if after is not None:
            stmt = stmt.where(
                or_(
                    c.created_at < after.created_at,
                    and_(c.created_at == after.created_at, c.id > after.case_id),
                )
            )
        # One row more than asked tells whether another page exists.
        stmt = stmt.order_by(c.created_at.desc(), c.id).limit(page_size + 1)
        async with self._sessions() as session:
            rows = list((await session.scalars(stmt)).all())
            page = rows[:page_size]
            cases = await self._build(session, page, with_messages=False)
        if len(rows) <= page_size:
            return cases, None
        return cases, Cursor(page[-1].created_at, page[-1].id)

    async def _build(
        self, session: AsyncSession, rows: Sequence[orm.Case], with_messages: bool
    ) -> list[case_pb2.Case]:
        if not rows:
            return []
        customer_ids = {r.customer_id for r in rows}
        customers = {
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
                contact_pb2.CustomerIdentity(kind=i.kind, value=i.value)  # type: ignore[arg-type]
            )
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
        result = []
        for r in rows:
            customer = customers[r.customer_id]
            result.append(
                case_pb2.Case(
                    case_id=r.id,
                    tenant=r.tenant,
                    status=r.status,  # type: ignore[arg-type]
                    subject=r.subject,
                    customer=case_pb2.Customer(
                        customer_id=customer.id,
                        display_name=customer.display_name,
                        identities=identities[customer.id],
                    ),
                    contacts=[_contact(ct, messages[ct.contact_id]) for ct in contacts[r.id]],
                    created_at=_ts(r.created_at),
                    updated_at=_ts(r.updated_at),
                    assigned_agent_id=r.assigned_agent_id,
                )
            )
        return result

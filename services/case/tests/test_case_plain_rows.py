"""A batch's routing events on plain rows (handlers.py `_RoutedRows`) against the ORM path, on
every configured database: the same events leave the same rows, audit entries, SLA timers and
outbox events either way, and the plain path is the one a batch of assignments takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit
from switchboard.case.adapters import database, orm
from switchboard.case.domain import lifecycle
from switchboard.case.entrypoints.nats_consumer import handlers_by_type
from switchboard.case.handlers import CaseHandlers
from switchboard.core.errors import DomainError, Retry
from switchboard.v1 import contact_pb2, events_pb2

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)
EMAIL, VOICE, CHAT = contact_pb2.CHANNEL_EMAIL, contact_pb2.CHANNEL_VOICE, contact_pb2.CHANNEL_CHAT


def _meta(tenant: str, name: str, minute: int) -> events_pb2.EventMeta:
    meta = events_pb2.EventMeta(event_id=f"{tenant}-{name}", tenant=tenant, source="test")
    meta.occurred_at.FromDatetime(T0 + timedelta(minutes=minute))
    return meta


def created(tenant: str, n: int, channel: int, customer: str, minute: int = 0) -> Any:
    contact = contact_pb2.Contact(
        contact_id=f"{tenant}-c{n}",
        tenant=tenant,
        channel=channel,
        identities=[
            contact_pb2.CustomerIdentity(
                kind=contact_pb2.IDENTITY_KIND_EMAIL, value=f"{customer}@example.com"
            )
        ],
        queue="support",
        content=[contact_pb2.ContentPart(content_type="text/plain", text=f"question {n}")],
    )
    contact.created_at.FromDatetime(T0 + timedelta(minutes=minute))
    return events_pb2.ContactCreated(meta=_meta(tenant, f"created-{n}", minute), contact=contact)


def assigned(tenant: str, n: int, agent: str, minute: int, name: str = "") -> Any:
    return events_pb2.ContactAssigned(
        meta=_meta(tenant, name or f"assigned-{n}-{agent}", minute),
        contact_id=f"{tenant}-c{n}",
        agent_id=agent,
        queue="tier-2",
        waited={"seconds": 42},
    )


def queued(tenant: str, n: int, minute: int) -> Any:
    return events_pb2.ContactQueued(
        meta=_meta(tenant, f"queued-{n}-{minute}", minute), contact_id=f"{tenant}-c{n}", queue="vip"
    )


def offered(tenant: str, n: int, minute: int) -> Any:
    return events_pb2.ContactOffered(
        meta=_meta(tenant, f"offered-{n}-{minute}", minute), contact_id=f"{tenant}-c{n}"
    )


def replied(
    tenant: str, n: int, minute: int, customer: bool = False, attached: bool = False
) -> Any:
    message = contact_pb2.Message(
        message_id=f"{tenant}-m{n}-{minute}",
        contact_id=f"{tenant}-c{n}",
        author=contact_pb2.AUTHOR_CUSTOMER if customer else contact_pb2.AUTHOR_AGENT,
        agent_id="" if customer else "agent-1",
        parts=[contact_pb2.ContentPart(content_type="text/plain", text=f"message {n} {minute}")],
    )
    if attached:
        message.attachments.add(bucket="files", object_name=f"{tenant}/m{n}-{minute}.pdf")
    message.sent_at.FromDatetime(T0 + timedelta(minutes=minute))
    return events_pb2.MessageAdded(
        meta=_meta(tenant, f"reply-{n}-{minute}", minute), message=message
    )


def ended(tenant: str, n: int, minute: int) -> Any:
    return events_pb2.ContactEnded(
        meta=_meta(tenant, f"ended-{n}", minute),
        contact_id=f"{tenant}-c{n}",
        agent_id="agent-1",
        wrap_up_code="done",
    )


def story(tenant: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Contacts recorded first; then a batch of routing events on them, mixed with events the
    ORM applies (a returning customer's new contact, an agent's reply); then the replies that
    extend the chains the batch left."""
    first = [
        created(tenant, 0, EMAIL, "ana"),
        created(tenant, 1, VOICE, "bo"),  # a call: answering it is the first response
        created(tenant, 2, CHAT, "cy"),
        created(tenant, 3, EMAIL, "ana", 1),  # joins c0's case
        created(tenant, 4, EMAIL, "di"),
        created(tenant, 5, EMAIL, "ed"),
        created(tenant, 6, CHAT, "fay"),
    ]
    twice = assigned(tenant, 2, "agent-2", 7)
    again = replied(tenant, 2, 17)
    again.meta.event_id += "-republished"  # the same message under a new event id
    batch = [
        queued(tenant, 0, 3),
        assigned(tenant, 0, "agent-1", 4),
        assigned(tenant, 1, "agent-1", 5),
        assigned(tenant, 2, "agent-1", 6),
        twice,
        twice,  # delivered twice in one batch: applied once
        assigned(tenant, 3, "agent-3", 8),
        assigned(tenant, 4, "agent-1", 9),
        created(tenant, 7, EMAIL, "di", 10),  # joins c4's case: that case stays with the ORM
        assigned(tenant, 5, "agent-1", 11),
        ended(tenant, 5, 12),  # c5 is the ORM's
        offered(tenant, 6, 13),  # routed but never assigned here
        assigned(tenant, 6, "agent-2", 14),
        offered(tenant, 6, 15),  # late: undoes no assignment
        replied(tenant, 0, 16, customer=True),  # the case waits on the customer: resumes
        replied(tenant, 2, 17),  # the first response
        again,
        replied(tenant, 2, 18, customer=True, attached=True),  # the next response is due
        replied(tenant, 2, 19),
        replied(tenant, 4, 19),  # c4's case is the ORM's
    ]
    after = [replied(tenant, n, 20 + n) for n in range(7)] + [assigned(tenant, 2, "agent-3", 30)]
    return first, batch, after


async def run(handlers: CaseHandlers, batch: list[Any], isolate: bool) -> None:
    by_type = handlers_by_type(handlers)
    async with handlers.batch(batch, isolate=isolate) as unit:
        for event in batch:
            async with unit.each(event):
                await by_type[type(event)](event)


async def snapshot(sessions: async_sessionmaker[AsyncSession], tenant: str) -> dict[str, Any]:
    """Every row the tenant's events left, its generated ids and the tenant's name replaced by
    stable names (cases and customers named by their first contact)."""
    async with sessions() as session:
        contacts = list(
            await session.scalars(
                select(orm.Contact)
                .where(orm.Contact.tenant == tenant)
                .order_by(orm.Contact.created_at, orm.Contact.contact_id)
            )
        )
        names: dict[str, str] = {f"{tenant}-": "T-"}
        for c in contacts:
            n = c.contact_id.removeprefix(f"{tenant}-")
            names.setdefault(c.case_id, f"case-of-{n}")
            names.setdefault(c.customer_id or "", f"customer-of-{n}")
        cases = {c.id: c for c in await session.scalars(select(orm.Case))}
        for case in cases.values():
            names.setdefault(case.reference, f"reference-of-{names.get(case.id)}")

        def same(value: Any) -> Any:
            if value == tenant:
                return "T"
            if isinstance(value, str):
                for old, new in names.items():
                    if old:
                        value = value.replace(old, new)
                return value
            if isinstance(value, dict):
                return {same(k): same(v) for k, v in value.items()}
            if isinstance(value, list):
                return [same(v) for v in value]
            return value

        def columns(obj: Any) -> dict[str, Any]:
            return {k: same(getattr(obj, k)) for k in obj.__mapper__.column_attrs.keys()}

        entries = list(
            await session.scalars(
                select(orm.AuditEntry)
                .where(orm.AuditEntry.tenant == tenant)
                .order_by(orm.AuditEntry.entity_id, orm.AuditEntry.seq)
            )
        )
        trails = sorted(
            (
                same(e.entity_id),
                e.seq,
                e.at,
                same(e.actor),
                e.action,
                same(audit.data_json(e)),
            )
            for e in entries
            if e.entity == audit.CASE
        )
        timers = sorted(
            str({k: v for k, v in columns(t).items() if k not in ("id",)})
            for t in await session.scalars(
                select(orm.SlaTimer).where(orm.SlaTimer.tenant == tenant)
            )
        )
        outbox = []
        for row in await session.scalars(select(orm.OutboxEvent)):
            kind = message_factory.GetMessageClass(
                descriptor_pool.Default().FindMessageTypeByName(row.type_name)
            )
            event = kind.FromString(row.payload)
            if event.meta.tenant == tenant:  # type: ignore[attr-defined]
                outbox.append(str(same(json_format.MessageToDict(event))))
        return {
            "contacts": [columns(c) for c in contacts],
            "cases": sorted(str(columns(cases[i])) for i in {c.case_id for c in contacts}),
            "trails": trails,
            "timers": timers,
            "outbox": sorted(outbox),
        }


async def test_routing_events_on_plain_rows_leave_what_the_orm_leaves(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The same events through the isolated (ORM) path and the plain-row path give the same
    contacts, cases, audit entries (data opened), SLA timers and outbox events, and every chain
    still verifies, extended after the batch by the ORM."""
    clock = lambda: T0 + timedelta(hours=1)  # noqa: E731
    handlers = CaseHandlers(sessions, "case", clock=clock)
    results = {}
    for tenant, isolate in (("orm", True), ("rows", False)):
        first, batch, after = story(tenant)
        await run(handlers, first, isolate=True)
        async with sessions.begin() as session:
            contact = await session.get(orm.Contact, f"{tenant}-c0")
            assert contact is not None
            case = await session.get(orm.Case, contact.case_id)
            assert case is not None
            await handlers.records.change_status(session, case, lifecycle.PENDING, "agent:a", T0)
        await run(handlers, batch, isolate=isolate)  # the plain path needs no isolated retry
        await run(handlers, after, isolate=isolate)
        results[tenant] = await snapshot(sessions, tenant)
    for part in ("contacts", "cases", "trails", "timers", "outbox"):
        assert results["rows"][part] == results["orm"][part], part
    assert any(t[4] == "assigned" for t in results["rows"]["trails"])
    async with sessions() as session:
        checked, breaks = await audit.verify(session)
    assert checked >= 12 and not breaks


async def test_a_batch_of_assignments_and_messages_reads_no_contact_or_case_objects(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A batch of ContactAssigned and MessageAdded events on recorded contacts reads their
    contacts and cases as plain rows: no Contact or Case object is loaded, and the contacts and
    cases are read with one statement."""
    handlers = CaseHandlers(sessions, "case")
    first, _, _ = story("acme")
    await run(handlers, first, isolate=True)
    loaded: list[str] = []

    def on_load(target: Any, _context: Any) -> None:
        loaded.append(type(target).__name__)

    assert isinstance(sessions, database.Sessions)
    engine = sessions.engine
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(" ".join(args[2].split()))

    batch = [assigned("acme", n, "agent-1", 5) for n in range(7)] + [
        replied("acme", n, 6, customer=n % 2 == 1) for n in range(7)
    ]
    sa_event.listen(orm.Contact, "load", on_load)
    sa_event.listen(orm.Case, "load", on_load)
    sa_event.listen(engine.sync_engine, "before_cursor_execute", counted)
    try:
        try:
            await run(handlers, batch, isolate=False)
        except (DomainError, Retry):
            raise AssertionError("the plain path failed the batch") from None
    finally:
        sa_event.remove(orm.Contact, "load", on_load)
        sa_event.remove(orm.Case, "load", on_load)
        sa_event.remove(engine.sync_engine, "before_cursor_execute", counted)
    assert loaded == []
    reads = [s for s in statements if s.startswith("SELECT") and "FROM contacts" in s]
    assert len(reads) == 1, reads
    async with sessions() as session:
        agents = set(
            await session.scalars(
                select(orm.Case.assigned_agent_id).join(
                    orm.Contact, orm.Contact.case_id == orm.Case.id
                )
            )
        )
        checked, breaks = await audit.verify(session)
    assert agents == {"agent-1"}
    assert checked > 0 and not breaks


async def test_a_plain_case_the_orm_reads_too_fails_the_batch_for_its_isolated_retry(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A new contact threaded into a case the same batch assigns reads that case through the
    ORM while the assignment holds it as a plain row: the batch fails (nothing of it is kept),
    and its isolated retry, as the bus makes it, applies both."""
    handlers = CaseHandlers(sessions, "case")
    first, _, _ = story("acme")
    await run(handlers, first, isolate=True)
    async with sessions() as session:
        contact = await session.get(orm.Contact, "acme-c2")
        assert contact is not None
        case_id = contact.case_id
    threaded = created("acme", 8, CHAT, "gus", 9)
    threaded.contact.case_id = case_id
    batch = [assigned("acme", 2, "agent-1", 8), threaded]
    try:
        await run(handlers, batch, isolate=False)
    except Retry:
        pass
    else:
        raise AssertionError("the batch should have failed")
    async with sessions() as session:
        assert await session.get(orm.Contact, "acme-c8") is None
        case = await session.get(orm.Case, case_id)
        assert case is not None and case.assigned_agent_id == ""
    await run(handlers, batch, isolate=True)
    async with sessions() as session:
        case = await session.get(orm.Case, case_id)
        joined = await session.get(orm.Contact, "acme-c8")
        assert case is not None and case.assigned_agent_id == "agent-1"
        assert joined is not None and joined.case_id == case_id
        checked, breaks = await audit.verify(session)
    assert checked > 0 and not breaks

"""The bus handlers against a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit
from switchboard.case.adapters import bulk, crypto, database, orm
from switchboard.case.entrypoints.nats_consumer import handlers_by_type
from switchboard.case.handlers import CaseHandlers
from switchboard.case.views import CaseViews
from switchboard.core import events
from switchboard.core.errors import InvalidArgument, Retry
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

EMAIL = contact_pb2.IDENTITY_KIND_EMAIL
PHONE = contact_pb2.IDENTITY_KIND_PHONE


def meta(event_id: str | None = None, tenant: str = "acme") -> events_pb2.EventMeta:
    return events.new_meta(tenant, contact_pb2.CHANNEL_EMAIL, "test", event_id)  # type: ignore[no-any-return]


def created(
    contact_id: str,
    *identities: tuple[int, str],
    text: str = "",
    subject: str = "",
    event_id: str | None = None,
    tenant: str = "acme",
) -> events_pb2.ContactCreated:
    contact = contact_pb2.Contact(
        contact_id=contact_id,
        tenant=tenant,
        channel=contact_pb2.CHANNEL_EMAIL,
        identities=[contact_pb2.CustomerIdentity(kind=k, value=v) for k, v in identities],  # type: ignore[misc]
        customer_name="Ana",
        language="ko",
        skills=["billing"],
        queue="support",
        subject=subject,
        content=[contact_pb2.ContentPart(content_type="text/plain", text=text)] if text else [],
    )
    contact.created_at.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    return events_pb2.ContactCreated(meta=meta(event_id, tenant), contact=contact)


def message_added(contact_id: str, message_id: str, text: str) -> events_pb2.MessageAdded:
    message = contact_pb2.Message(
        message_id=message_id,
        contact_id=contact_id,
        author=contact_pb2.AUTHOR_AGENT,
        agent_id="agent-1",
        parts=[
            contact_pb2.ContentPart(content_type="text/html", text=f"<p>{text}</p>"),
            contact_pb2.ContentPart(content_type="text/plain; charset=utf-8", text=text),
        ],
    )
    message.sent_at.FromDatetime(datetime(2025, 1, 2, 3, 5, 0, tzinfo=UTC))
    return events_pb2.MessageAdded(meta=meta(), message=message)


def assigned(contact_id: str, agent_id: str = "agent-1") -> events_pb2.ContactAssigned:
    return events_pb2.ContactAssigned(
        meta=meta(), contact_id=contact_id, agent_id=agent_id, queue="support"
    )


@pytest.fixture
def handlers(sessions: async_sessionmaker[AsyncSession]) -> CaseHandlers:
    return CaseHandlers(sessions, "case")


@pytest.fixture
def views(sessions: async_sessionmaker[AsyncSession]) -> CaseViews:
    return CaseViews(sessions)


async def count(sessions: async_sessionmaker[AsyncSession], model: type[orm.Base]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def case_of(sessions: async_sessionmaker[AsyncSession], contact_id: str) -> str:
    async with sessions() as session:
        contact = await session.get(orm.Contact, contact_id)
        assert contact is not None
        return contact.case_id


async def test_contact_created_records_customer_case_contact_and_message(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    long_text = "My invoice   is wrong. " * 20
    await handlers.on_contact_created(created("c-1", (EMAIL, " Ana@Example.COM "), text=long_text))

    case = await views.get_case("acme", await case_of(sessions, "c-1"))
    assert case.status == case_pb2.CASE_STATUS_NEW
    assert case.subject == " ".join(long_text.split())[:120]
    assert case.customer.display_name == "Ana"
    assert [(i.kind, i.value) for i in case.customer.identities] == [(EMAIL, "ana@example.com")]
    [contact] = case.contacts
    assert (contact.contact_id, contact.status, contact.queue) == ("c-1", "queued", "support")
    assert list(contact.skills) == ["billing"]
    [message] = contact.messages
    assert message.message_id == "c-1:initial"
    assert message.author == contact_pb2.AUTHOR_CUSTOMER
    assert message.parts[0].text == long_text
    assert message.sent_at.ToDatetime(tzinfo=UTC) == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_second_contact_of_same_customer_joins_open_case(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com"), subject="Invoice"))
    await handlers.on_contact_created(
        created("c-2", (PHONE, "+821012345678"), (EMAIL, "ANA@example.com"), text="again")
    )
    case_id = await case_of(sessions, "c-1")
    assert await case_of(sessions, "c-2") == case_id
    case = await views.get_case("acme", case_id)
    assert case.subject == "Invoice"
    assert [c.contact_id for c in case.contacts] == ["c-1", "c-2"]
    # The phone number is now known as Ana's too.
    assert {(i.kind, i.value) for i in case.customer.identities} == {
        (EMAIL, "ana@example.com"),
        (PHONE, "+821012345678"),
    }
    assert await count(sessions, orm.Customer) == 1

    # The same e-mail in another tenant is another customer.
    await handlers.on_contact_created(created("c-3", (EMAIL, "ana@example.com"), tenant="other"))
    assert await count(sessions, orm.Customer) == 2
    assert await case_of(sessions, "c-3") != case_id


async def test_a_customers_chain_starts_with_its_identities_and_records_those_added_later(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com")))
    await handlers.on_contact_created(
        created("c-2", (PHONE, "+821012345678"), (EMAIL, "ana@example.com"))
    )
    await handlers.on_contact_created(created("c-3", (EMAIL, "ana@example.com")))
    async with sessions() as session:
        customer_id = await session.scalar(select(orm.Customer.id))
        assert customer_id is not None
        trail = await audit.trail(session, audit.CUSTOMER, customer_id)
        entries = [(e.action, audit.data_json(e)) for e in trail]
        _, breaks = await audit.verify(session)
    # One entry as the customer is created, naming what it was created with; one for the
    # identity a later contact added; none for a contact that brought nothing new.
    assert entries == [
        ("created", '{"identities":[["IDENTITY_KIND_EMAIL","ana@example.com"]]}'),
        ("identities_added", '{"identities":[["IDENTITY_KIND_PHONE","+821012345678"]]}'),
    ]
    assert breaks == []


async def test_resolved_case_is_not_joined(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com")))
    first = await case_of(sessions, "c-1")
    async with sessions.begin() as session:
        await session.execute(
            update(orm.Case)
            .where(orm.Case.id == first)
            .values(status=case_pb2.CASE_STATUS_RESOLVED)
        )
    await handlers.on_contact_created(created("c-2", (EMAIL, "ana@example.com")))
    assert await case_of(sessions, "c-2") != first
    assert await count(sessions, orm.Customer) == 1


async def test_duplicate_delivery_records_once(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    event = created("c-1", (EMAIL, "ana@example.com"), text="hello")
    await handlers.on_contact_created(event)
    await handlers.on_contact_created(event)
    # A channel republishing the same contact under a new event id changes nothing either.
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com"), text="hello"))
    assert await count(sessions, orm.Contact) == 1
    assert await count(sessions, orm.Message) == 1
    assert await count(sessions, orm.Case) == 1

    added = message_added("c-1", "m-1", "reply")
    await handlers.on_message_added(added)
    await handlers.on_message_added(added)
    await handlers.on_message_added(message_added("c-1", "m-1", "reply"))
    assert await count(sessions, orm.Message) == 2


async def test_message_before_its_contact_is_retried(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    early = message_added("c-1", "m-1", "thanks")
    with pytest.raises(Retry):
        await handlers.on_message_added(early)
    assert await count(sessions, orm.ProcessedEvent) == 0  # rolled back: the redelivery applies it

    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com"), text="hi"))
    await handlers.on_message_added(early)
    case = await views.get_case("acme", await case_of(sessions, "c-1"))
    messages = case.contacts[0].messages
    assert [m.message_id for m in messages] == ["c-1:initial", "m-1"]
    assert (messages[1].parts[0].content_type, messages[1].parts[0].text) == (
        "text/plain",
        "thanks",
    )
    assert messages[1].agent_id == "agent-1"


async def test_contact_assigned_sets_agent_and_status(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(Retry):
        await handlers.on_contact_assigned(assigned("c-1"))
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com")))
    await handlers.on_contact_offered(
        events_pb2.ContactOffered(meta=meta(), contact_id="c-1", agent_id="agent-1", offer_id="o-1")
    )
    await handlers.on_contact_assigned(assigned("c-1"))
    # A queued event arriving late does not undo the assignment.
    await handlers.on_contact_queued(
        events_pb2.ContactQueued(meta=meta(), contact_id="c-1", queue="support", position=1)
    )
    case = await views.get_case("acme", await case_of(sessions, "c-1"))
    assert case.status == case_pb2.CASE_STATUS_ASSIGNED
    assert case.assigned_agent_id == "agent-1"
    [contact] = case.contacts
    assert (contact.status, contact.agent_id) == ("assigned", "agent-1")
    assert contact.HasField("assigned_at")

    await handlers.on_contact_ended(
        events_pb2.ContactEnded(meta=meta(), contact_id="c-1", agent_id="agent-1")
    )
    await handlers.on_contact_abandoned(events_pb2.ContactAbandoned(meta=meta(), contact_id="c-1"))
    contact = (await views.get_case("acme", case.case_id)).contacts[0]
    assert contact.status == "ended"
    assert contact.HasField("ended_at")


def withdrawn(contact_id: str, offer_id: str, requeued: bool) -> events_pb2.ContactOfferWithdrawn:
    return events_pb2.ContactOfferWithdrawn(
        meta=meta(),
        contact_id=contact_id,
        agent_id="agent-1",
        offer_id=offer_id,
        reason="accept timeout",
        requeued=requeued,
    )


async def test_a_contact_whose_offer_is_withdrawn_is_recorded_as_waiting_again(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """An offer that ran out (or that the agent declined, or left on a break) puts the contact
    back in its queue: the record says queued, not offered, until the next offer; one at a time
    and in a batch alike. A withdrawal that does not requeue (the contact ended) changes nothing,
    and none undoes an assignment."""
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com")))
    await handlers.on_contact_created(created("c-2", (EMAIL, "bo@example.com")))

    async def status(contact_id: str) -> str:
        case = await views.get_case("acme", await case_of(sessions, contact_id))
        return str(case.contacts[0].status)

    offered = events_pb2.ContactOffered(
        meta=meta(), contact_id="c-1", agent_id="agent-1", offer_id="o-1"
    )
    await handlers.on_contact_offered(offered)
    await handlers.on_contact_offer_withdrawn(withdrawn("c-1", "o-1", requeued=True))
    assert await status("c-1") == "queued"
    # In one batch (plain rows), in the stream's order: offered, withdrawn; offered again.
    offered_2 = events_pb2.ContactOffered(
        meta=meta(), contact_id="c-2", agent_id="agent-1", offer_id="o-2"
    )
    await run_batch(handlers, [offered_2, withdrawn("c-2", "o-2", requeued=True)])
    assert await status("c-2") == "queued"
    offered_3 = events_pb2.ContactOffered(
        meta=meta(), contact_id="c-2", agent_id="agent-2", offer_id="o-3"
    )
    await run_batch(handlers, [offered_3])
    assert await status("c-2") == "offered"
    await handlers.on_contact_offer_withdrawn(withdrawn("c-2", "o-3", requeued=False))
    assert await status("c-2") == "offered"
    await handlers.on_contact_assigned(assigned("c-1"))
    await handlers.on_contact_offer_withdrawn(withdrawn("c-1", "o-1", requeued=True))
    assert await status("c-1") == "assigned"
    with pytest.raises(InvalidArgument):
        await handlers.on_contact_offer_withdrawn(withdrawn("", "o-9", requeued=True))


def ended(contact_id: str, code: str = "") -> events_pb2.ContactEnded:
    return events_pb2.ContactEnded(
        meta=meta(), contact_id=contact_id, agent_id="agent-1", wrap_up_code=code
    )


async def test_wrap_up_resolved_resolves_the_case_once_no_contact_is_open(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    for contact_id in ("c-1", "c-2"):
        await handlers.on_contact_created(created(contact_id, (EMAIL, "ana@example.com")))
        await handlers.on_contact_assigned(assigned(contact_id))
    case_id = await case_of(sessions, "c-1")
    assert await case_of(sessions, "c-2") == case_id
    # The chat ended first (no code yet), then the wrap-up: still one of two contacts open.
    await handlers.on_contact_ended(ended("c-1"))
    await handlers.on_contact_ended(ended("c-1", "resolved"))
    assert (await views.get_case("acme", case_id)).status == case_pb2.CASE_STATUS_ASSIGNED
    await handlers.on_contact_ended(ended("c-2", "resolved"))
    case = await views.get_case("acme", case_id)
    assert case.status == case_pb2.CASE_STATUS_RESOLVED
    assert case.HasField("resolved_at")
    # Redelivered, it changes nothing more.
    await handlers.on_contact_ended(ended("c-2", "resolved"))
    assert (await views.get_case("acme", case_id)).status == case_pb2.CASE_STATUS_RESOLVED


async def test_wrap_up_other_than_resolved_leaves_the_case_open(
    handlers: CaseHandlers, views: CaseViews, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com")))
    await handlers.on_contact_assigned(assigned("c-1"))
    await handlers.on_contact_ended(ended("c-1", "follow_up"))
    case = await views.get_case("acme", await case_of(sessions, "c-1"))
    assert case.status == case_pb2.CASE_STATUS_ASSIGNED


async def test_invalid_events_name_the_field(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(InvalidArgument, match=r"contact\.contact_id"):
        await handlers.on_contact_created(created("", (EMAIL, "ana@example.com")))
    with pytest.raises(InvalidArgument, match=r"contact\.tenant"):
        event = created("c-1")
        event.contact.tenant = "other"
        await handlers.on_contact_created(event)
    with pytest.raises(InvalidArgument, match=r"message\.message_id"):
        await handlers.on_message_added(message_added("c-1", "", "x"))
    with pytest.raises(InvalidArgument, match="agent_id"):
        await handlers.on_contact_assigned(assigned("c-1", agent_id=""))
    assert await count(sessions, orm.Contact) == 0


async def test_contact_of_another_tenant_is_refused(handlers: CaseHandlers) -> None:
    await handlers.on_contact_created(created("c-1", (EMAIL, "ana@example.com")))
    event = events_pb2.ContactAbandoned(meta=meta(tenant="other"), contact_id="c-1")
    with pytest.raises(InvalidArgument, match="contact_id"):
        await handlers.on_contact_abandoned(event)


def lifecycle(n: int, tenant: str) -> list[list[Any]]:
    """Each contact's events, step by step: created, queued, offered, assigned, an agent's
    message, a customer's message, ended. Every third contact is a returning customer."""
    steps: list[list[Any]] = [[] for _ in range(7)]
    for i in range(n):
        cid = f"{tenant}-c{i}"
        email = f"customer{i - i % 3}@example.com"  # three contacts per customer
        steps[0].append(created(cid, (EMAIL, email), text=f"question {i}", tenant=tenant))
        steps[1].append(
            events_pb2.ContactQueued(meta=meta(tenant=tenant), contact_id=cid, queue="support")
        )
        steps[2].append(
            events_pb2.ContactOffered(
                meta=meta(tenant=tenant), contact_id=cid, agent_id="agent-1", offer_id=f"o{i}"
            )
        )
        a = assigned(cid, f"agent-{i % 4}")
        a.meta.CopyFrom(meta(tenant=tenant))
        steps[3].append(a)
        m = message_added(cid, f"{cid}-m", f"answer {i}")
        m.meta.CopyFrom(meta(tenant=tenant))
        steps[4].append(m)
        c = message_added(cid, f"{cid}-r", f"thanks {i}")
        c.message.author = contact_pb2.AUTHOR_CUSTOMER
        c.message.agent_id = ""
        c.meta.CopyFrom(meta(tenant=tenant))
        steps[5].append(c)
        steps[6].append(
            events_pb2.ContactEnded(
                meta=meta(tenant=tenant),
                contact_id=cid,
                agent_id=f"agent-{i % 4}",
                wrap_up_code="done",
                reason=events_pb2.END_REASON_COMPLETED,
            )
        )
    return steps


async def dump(sessions: async_sessionmaker[AsyncSession], tenant: str) -> dict[str, Any]:
    """What the store holds for `tenant`, without its generated ids and times of recording."""
    async with sessions() as session:
        contacts = {
            c.contact_id.removeprefix(f"{tenant}-"): c
            for c in await session.scalars(select(orm.Contact).where(orm.Contact.tenant == tenant))
        }
        cases = {c.id: c for c in await session.scalars(select(orm.Case))}
        trails: dict[str, list[tuple[int, str, str]]] = {}
        for e in await session.scalars(
            select(orm.AuditEntry)
            .where(orm.AuditEntry.tenant == tenant, orm.AuditEntry.entity == "case")
            .order_by(orm.AuditEntry.seq)
        ):
            trails.setdefault(e.entity_id, []).append((e.seq, e.actor, e.action))
        timers: dict[str, list[tuple[str, str]]] = {}
        for t in await session.scalars(
            select(orm.SlaTimer).where(orm.SlaTimer.tenant == tenant).order_by(orm.SlaTimer.metric)
        ):
            timers.setdefault(t.case_id, []).append((t.metric, t.state))
        messages = await session.scalar(
            select(func.count()).select_from(orm.Message).where(orm.Message.tenant == tenant)
        )
        outbox = await session.scalar(select(func.count()).select_from(orm.OutboxEvent))
        return {
            "messages": messages,
            "outbox": outbox,
            "contacts": {
                k: (
                    c.status,
                    c.agent_id,
                    c.queue,
                    c.wrap_up_code,
                    cases[c.case_id].status,
                    cases[c.case_id].assigned_agent_id,
                    sorted(k2 for k2, c2 in contacts.items() if c2.case_id == c.case_id),
                    trails[c.case_id],
                    timers.get(c.case_id, []),
                )
                for k, c in contacts.items()
            },
        }


async def test_batches_record_what_events_one_by_one_record_and_a_redelivered_batch_nothing(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """The batched unit of work (claims, preloads, one transaction) against the one-by-one
    path: the same events give the same store; a batch committed but not acknowledged, and so
    delivered again whole, changes nothing; the audit chains verify."""
    one_by_one = [e for step in lifecycle(12, "solo") for e in step]
    for event in one_by_one:
        await handler_for(handlers, event)(event)
    expected = await dump(sessions, "solo")

    batched = [e for step in lifecycle(12, "acme") for e in step]
    batches = [batched[k : k + 16] for k in range(0, len(batched), 16)]
    for batch in batches:
        async with handlers.batch(batch, isolate=False):
            for event in batch:
                await handler_for(handlers, event)(event)
    first = await dump(sessions, "acme")
    assert {k: v for k, v in first.items() if k != "outbox"} == {
        k: v for k, v in expected.items() if k != "outbox"
    }
    for batch in batches:  # delivered again after a kill between commit and ack
        async with handlers.batch(batch, isolate=False):
            for event in batch:
                await handler_for(handlers, event)(event)
    assert await dump(sessions, "acme") == first
    async with sessions() as session:
        checked, breaks = await audit.verify(session)
    assert checked > 0 and not breaks


async def test_an_event_overtaking_its_contact_in_a_batch_is_set_aside_alone(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """In an isolated batch, an event refused (its contact comes later) is undone and its
    claim withdrawn, so its redelivery applies it; the rest of the batch is recorded."""
    steps = lifecycle(3, "acme")
    batch = [steps[1][2], steps[0][0], steps[0][1], steps[0][2], steps[1][0]]  # c2 queued first
    refused = []
    async with handlers.batch(batch, isolate=True) as unit:
        for event in batch:
            try:
                async with unit.each(event):
                    await handler_for(handlers, event)(event)
            except Retry:
                refused.append(event)
    assert refused == [steps[1][2]]
    assert await count(sessions, orm.Contact) == 3
    await handler_for(handlers, refused[0])(refused[0])  # the redelivery
    async with sessions() as session:
        contact = await session.get(orm.Contact, "acme-c2")
        assert contact is not None and contact.queued_at is not None


def handler_for(handlers: CaseHandlers, event: Any) -> Any:
    return handlers_by_type(handlers)[type(event)]


async def test_a_batch_writes_with_a_bounded_number_of_statements(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A batch's statements do not grow with its events: claims and preloads are a few IN
    queries, and new and changed rows are one executemany per table and set of columns, so a
    batch of 24 contacts' events (returning customers among them) takes as many statements as
    one of 6 contacts'."""
    assert isinstance(sessions, database.Sessions)
    engine = sessions.engine
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(args[2])

    sa_event.listen(engine.sync_engine, "before_cursor_execute", counted)
    try:
        per_batch = {}
        for n, tenant in ((6, "small"), (24, "large")):
            for step in lifecycle(n, tenant):
                statements.clear()
                ridden = database.ridden_statements[0]  # SQLite's claims, beside the others
                async with handlers.batch(step, isolate=False):
                    for event in step:
                        await handler_for(handlers, event)(event)
                used = len(statements) + database.ridden_statements[0] - ridden
                per_batch[(tenant, step[0].DESCRIPTOR.name)] = used
                print(
                    tenant, step[0].DESCRIPTOR.name, [" ".join(s.split())[:70] for s in statements]
                )
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", counted)
    # A batch of events on recorded contacts: BEGIN, the data keys, the claims, its contacts
    # with their cases, chain heads, SLA timers (and message ids), then its inserts and updates.
    # SQLite reads the contacts and their cases in one query, and looks at the data keys once:
    # its write transaction shuts every other writer out from its BEGIN on.
    limit = 11 if engine.dialect.name == "sqlite" else 12
    for (tenant, name), used in per_batch.items():
        # New contacts also read their customers' identities and check fresh case references.
        assert used <= (15 if name == "ContactCreated" else limit), (tenant, name, used)
        if tenant == "large":
            assert used == per_batch[("small", name)], (name, used)
    assert await count(sessions, orm.Contact) == 30
    async with sessions() as session:
        checked, breaks = await audit.verify(session)
    assert checked > 0 and not breaks


async def test_a_batch_of_queued_and_offered_events_works_on_plain_rows(
    handlers: CaseHandlers,
    sessions: async_sessionmaker[AsyncSession],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contacts that only ContactQueued and ContactOffered events of a batch touch are read as
    plain rows with one SELECT and written back with one executemany per table: no ORM objects,
    no cases, SLA timers or chain heads read. The rules stay those of one event at a time: a late
    queued or offered sets its time once and undoes no assignment; a contact not recorded yet or
    of another tenant fails the batch, and nothing of it is kept."""
    assert isinstance(sessions, database.Sessions)
    engine = sessions.engine
    steps = lifecycle(6, "acme")
    await run_batch(handlers, steps[0])
    await run_batch(handlers, steps[3][:2])  # c0 and c1 are with an agent already
    statements: list[str] = []

    def counted(*args: Any) -> None:
        statements.append(" ".join(args[2].split()))

    hops: list[object] = []
    execute = aiosqlite.Connection._execute

    async def hop(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await execute(self, fn, *args, **kwargs)

    batch = steps[1] + steps[2][2:]
    sa_event.listen(engine.sync_engine, "before_cursor_execute", counted)
    monkeypatch.setattr(aiosqlite.Connection, "_execute", hop)
    try:
        ridden = database.ridden_statements[0]
        await run_batch(handlers, batch)
        used = len(statements) + database.ridden_statements[0] - ridden
    finally:
        monkeypatch.undo()
        sa_event.remove(engine.sync_engine, "before_cursor_execute", counted)
    if engine.dialect.name == "sqlite":
        # BEGIN with the data keys, the claims with the contacts, the updates with the commit.
        assert len(hops) <= 3, hops
    reads = [s for s in statements if s.startswith("SELECT")]
    assert not any("FROM cases" in s or "sla_timers" in s or "audit" in s for s in reads), reads
    # BEGIN, the data keys, the claims, the contacts, their updates and their cases' updates.
    assert used <= 6, statements
    async with sessions() as session:
        rows = {
            c.contact_id.removeprefix("acme-"): c
            for c in await session.scalars(select(orm.Contact).where(orm.Contact.tenant == "acme"))
        }
    assert {k: c.status for k, c in rows.items()} == {
        "c0": "assigned",
        "c1": "assigned",
        "c2": "offered",
        "c3": "offered",
        "c4": "offered",
        "c5": "offered",
    }
    assert all(c.queued_at is not None and c.queue == "support" for c in rows.values())
    assert [k for k, c in rows.items() if c.offered_at is not None] == ["c2", "c3", "c4", "c5"]
    first_queued = {k: c.queued_at for k, c in rows.items()}
    again = [
        events_pb2.ContactQueued(meta=meta(), contact_id=f"acme-c{i}", queue="") for i in range(6)
    ]
    await run_batch(handlers, again)
    async with sessions() as session:
        for k, when in first_queued.items():
            contact = await session.get(orm.Contact, f"acme-{k}")
            assert contact is not None and contact.queued_at == when
            assert contact.queue == "support"
            assert contact.status == ("assigned" if k in ("c0", "c1") else "queued")

    unknown = events_pb2.ContactQueued(meta=meta(), contact_id="acme-c9", queue="other")
    foreign = events_pb2.ContactOffered(meta=meta(tenant="beta"), contact_id="acme-c2")
    for refused, error in ((unknown, Retry), (foreign, InvalidArgument)):
        queued = events_pb2.ContactQueued(meta=meta(), contact_id="acme-c3", queue="other")
        with pytest.raises(error):
            await run_batch(handlers, [queued, refused])
        async with sessions() as session:
            contact = await session.get(orm.Contact, "acme-c3")
            assert contact is not None and contact.queue == "support"
            claimed = await session.scalar(
                select(func.count())
                .select_from(orm.ProcessedEvent)
                .where(orm.ProcessedEvent.event_id == queued.meta.event_id)
            )
            assert claimed == 0


async def test_a_batch_opens_no_sealed_value_of_the_rows_it_reads(
    handlers: CaseHandlers,
    sessions: async_sessionmaker[AsyncSession],
    views: CaseViews,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch reads and locks the contacts and cases its events name, but opens none of their
    sealed columns (an AES-GCM decryption each), which its events do not read; after the batch
    changed those rows, what the sealed columns hold reads back as before."""
    steps = lifecycle(6, "acme")
    for event in steps[0]:
        event.contact.subject = f"about {event.contact.contact_id}"
    await run_batch(handlers, steps[0])

    async def subjects() -> dict[str, tuple[str, list[str]]]:
        out = {}
        for event in steps[0]:
            cid = event.contact.contact_id
            case = await views.get_case("acme", await case_of(sessions, cid))
            out[cid] = (case.subject, [c.subject for c in case.contacts])
        return out

    before = await subjects()
    assert before["acme-c0"][0] == "about acme-c0"
    opened: list[str] = []
    open_ = crypto.open_

    def counted(value: str) -> str:
        opened.append(value)
        return open_(value)

    monkeypatch.setattr(crypto, "open_", counted)
    for step in steps[1:4]:  # queued, offered, assigned
        await run_batch(handlers, step)
    monkeypatch.undo()
    assert opened == []
    assert await subjects() == before


async def test_no_automatic_collection_runs_during_a_batch(handlers: CaseHandlers) -> None:
    """The cyclic garbage collector waits for the end of a batch (the objects a batch makes live
    until its commit, and a collection in between would walk them again and again), and runs
    again after it."""
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    step = lifecycle(3, "acme")[0]
    gc.callbacks.append(seen)
    try:
        async with handlers.batch(step, isolate=False):
            for event in step:
                await handler_for(handlers, event)(event)
            made = [[i] for i in range(50_000)]  # far beyond the youngest generation's threshold
            during = list(collections)
        assert gc.isenabled()
        more = [[i] for i in range(50_000)]
        after = list(collections)
    finally:
        gc.callbacks.remove(seen)
    assert len(made) == len(more)
    assert during == []
    assert after != []


async def run_batch(handlers: CaseHandlers, batch: list[Any]) -> None:
    async with handlers.batch(batch, isolate=False):
        for event in batch:
            await handler_for(handlers, event)(event)


async def test_a_batch_on_sqlite_goes_to_the_drivers_thread_a_few_times(
    handlers: CaseHandlers, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hop to SQLite's connection thread waits for that thread to run: a batch of events on
    recorded contacts makes four or five (the data keys with its BEGIN; its claims with its
    contacts; its SLA timers, or its message ids; its bulk writes with its commit), whatever the
    number of its events and of the tables it writes."""
    if database_url.startswith("postgresql"):
        pytest.skip("SQLite's driver thread")
    hops: list[object] = []
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await execute(self, fn, *args, **kwargs)

    steps = lifecycle(12, "acme")
    await run_batch(handlers, steps[0])
    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    per_batch = []
    for step in steps[1:]:
        hops.clear()
        await run_batch(handlers, step)
        per_batch.append(len(hops))
    assert max(per_batch) <= 5, per_batch


async def test_a_bulk_write_refused_at_the_commit_fails_the_whole_batch(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A batch's bulk rows are written with its commit: one the database refuses (a key taken)
    fails the batch there, and none of the batch's rows or claims is kept (the bus then hands
    its events over again, one at a time)."""
    steps = lifecycle(3, "acme")
    await run_batch(handlers, steps[0])
    queued = steps[1]
    at = datetime(2025, 1, 2, 4, 0, tzinfo=UTC)
    taken = {"event_id": steps[0][0].meta.event_id, "consumer": "case", "processed_at": at}
    with pytest.raises(IntegrityError):
        async with handlers.batch(queued, isolate=False) as unit:
            for event in queued:
                await handler_for(handlers, event)(event)
            # A row another writer's key would refuse, held like the batch's own.
            bulk.add_row(unit._session, orm.ProcessedEvent, taken)  # claimed by step 0
    async with sessions() as session:
        claimed = set(await session.scalars(select(orm.ProcessedEvent.event_id)))
        queued_at = list(await session.scalars(select(orm.Contact.queued_at)))
    assert not claimed & {e.meta.event_id for e in queued}
    assert queued_at == [None, None, None]
    await run_batch(handlers, queued)  # delivered again
    async with sessions() as session:
        assert None not in set(await session.scalars(select(orm.Contact.queued_at)))

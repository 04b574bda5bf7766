"""The bus handlers against a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
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

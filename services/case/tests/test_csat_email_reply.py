"""CSAT by email: a reply to the survey mail is read as a 1..5 rating of the case, on a real
database. A reply the channel marked as nothing but the rating (Contact.survey_answer) leaves the
resolved case resolved; a reply with more to say is rated when it starts with a rating, and reopens
the case like any other reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import csat
from switchboard.case.adapters import orm
from switchboard.case.csat import Csat
from switchboard.case.domain import lifecycle
from switchboard.case.handlers import CaseHandlers
from switchboard.case.reports.orm import CsatRating
from switchboard.core import events
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

EMAIL = contact_pb2.IDENTITY_KIND_EMAIL


class Published:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, event: Any) -> Any:
        self.events.append(event)

    async def publish_async(self, event: Any) -> Any:
        raise NotImplementedError


T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def created(
    contact_id: str,
    text: str,
    case_id: str = "",
    subject: str = "",
    in_reply_to: str = "",
    references: tuple[str, ...] = (),
    minute: int = 0,
    language: str = "",
    survey_answer: int = 0,
) -> events_pb2.ContactCreated:
    contact = contact_pb2.Contact(
        contact_id=contact_id,
        tenant="acme",
        channel=contact_pb2.CHANNEL_EMAIL,
        identities=[contact_pb2.CustomerIdentity(kind=EMAIL, value="ana@example.com")],
        customer_name="Ana",
        language=language,
        queue="support",
        subject=subject,
        content=[contact_pb2.ContentPart(content_type="text/plain", text=text)],
        case_id=case_id,
        in_reply_to=in_reply_to,
        references=list(references),
        survey_answer=survey_answer,
    )
    contact.created_at.FromDatetime(T0.replace(minute=minute))
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test"), contact=contact
    )


async def resolved_and_surveyed(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers, language: str = ""
) -> tuple[orm.Case, events_pb2.OutboundEmail]:
    """A case of Ana's, answered by agent-1 and resolved; the survey mail sent."""
    await handlers.on_contact_created(created("c-1", "My invoice is wrong", language=language))
    await handlers.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test"),
            contact_id="c-1",
            agent_id="agent-1",
            queue="support",
        )
    )
    async with sessions.begin() as session:
        contact = await session.get(orm.Contact, "c-1")
        assert contact is not None
        case = await session.get(orm.Case, contact.case_id)
        assert case is not None
        await handlers.records.change_status(
            session, case, lifecycle.RESOLVED, "agent:agent-1", T0.replace(minute=10)
        )
    publisher = Published()
    assert await Csat(sessions, publisher, "case").send_survey("acme", case.id) == "email"
    [survey] = publisher.events
    assert isinstance(survey, events_pb2.OutboundEmail)
    return case, survey


async def set_status(
    sessions: async_sessionmaker[AsyncSession],
    handlers: CaseHandlers,
    case_id: str,
    status: str,
    by: str,
    minute: int,
) -> None:
    async with sessions.begin() as session:
        case = await session.get(orm.Case, case_id)
        assert case is not None
        await handlers.records.change_status(session, case, status, by, T0.replace(minute=minute))


def survey_message_id(survey: events_pb2.OutboundEmail) -> str:
    """The Message-ID the email channel sends a command with (email_ingest.outbound)."""
    return f"{survey.meta.event_id}.{survey.case_reference.lower()}@help.example.com"


async def status_of(sessions: async_sessionmaker[AsyncSession], case_id: str) -> int:
    async with sessions() as session:
        case = await session.get(orm.Case, case_id)
        assert case is not None
        return case.status


async def ratings(sessions: async_sessionmaker[AsyncSession]) -> list[CsatRating]:
    async with sessions() as session:
        return list(await session.scalars(select(CsatRating)))


@pytest.fixture
def handlers(sessions: async_sessionmaker[AsyncSession]) -> CaseHandlers:
    return CaseHandlers(sessions, "case")


async def test_a_reply_to_the_survey_rates_the_case_without_reopening_it(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    assert csat.SURVEY_TOKEN in survey.subject
    reply = created(
        "c-2",
        "4점\n\n2025년 1월 2일 Help 작성:\n> 1 (very dissatisfied) to 5",
        case_id=case.reference,
        subject="RE: " + survey.subject,
        in_reply_to=survey_message_id(survey),
        minute=30,
        survey_answer=4,  # the channel read nothing but the rating
    )
    await handlers.on_contact_created(reply)
    await handlers.on_contact_created(reply)  # redelivered: rated once
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_RESOLVED
    [rating] = await ratings(sessions)
    assert (rating.case_id, rating.score, rating.channel) == (case.id, 4, "email")
    assert rating.agent_id == "agent-1"
    async with sessions() as session:
        contact = await session.get(orm.Contact, "c-2")
        assert contact is not None and contact.case_id == case.id
        assert contact.status == "ended" and contact.wrap_up_code == csat.SURVEY_REPLY
        actions = list(
            await session.scalars(
                select(orm.AuditEntry.action).where(
                    orm.AuditEntry.entity == "case", orm.AuditEntry.entity_id == case.id
                )
            )
        )
    assert "satisfaction_rated" in actions and "reopened" not in actions
    # Routed to another agent all the same, the rating does not take the case from its agent.
    await handlers.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test"),
            contact_id="c-2",
            agent_id="agent-2",
        )
    )
    async with sessions() as session:
        row = await session.get(orm.Case, case.id)
        assert row is not None and row.assigned_agent_id == "agent-1"
        assert row.status == case_pb2.CASE_STATUS_RESOLVED


async def test_the_survey_is_recognised_by_references_or_by_its_subject_token(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    await handlers.on_contact_created(
        created(
            "c-2",
            "★★★★★",
            case_id=case.reference,
            references=("agent-reply@help.example.com", survey_message_id(survey)),
            minute=20,
            survey_answer=5,
        )
    )
    assert [r.score for r in await ratings(sessions)] == [5]
    # A later answer (a changed mind, threaded by the subject's token alone) replaces it.
    await handlers.on_contact_created(
        created(
            "c-3",
            "３",
            case_id=case.reference,
            subject="Aw: " + survey.subject,
            minute=40,
            survey_answer=3,
        )
    )
    assert [r.score for r in await ratings(sessions)] == [3]
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_RESOLVED


async def test_a_reply_to_the_survey_without_a_rating_reopens_the_case(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    await handlers.on_contact_created(
        created(
            "c-2",
            "The invoice is still wrong.\n> Reply with 1 to 5",
            case_id=case.reference,
            in_reply_to=survey_message_id(survey),
            minute=30,
        )
    )
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_IN_PROGRESS
    assert await ratings(sessions) == []


async def test_a_number_in_a_reply_to_another_mail_is_a_customer_message(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, _ = await resolved_and_surveyed(sessions, handlers)
    await handlers.on_contact_created(
        created(
            "c-2",
            "5",
            case_id=case.reference,
            subject="Re: My invoice is wrong",
            in_reply_to="agent-reply@help.example.com",
            minute=30,
        )
    )
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_IN_PROGRESS
    assert await ratings(sessions) == []


async def test_a_rating_of_a_closed_case_opens_no_new_case(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    await set_status(sessions, handlers, case.id, lifecycle.CLOSED, "system", 20)
    await handlers.on_contact_created(
        created(
            "c-2",
            "2/5",
            case_id=case.reference,
            in_reply_to=survey_message_id(survey),
            minute=30,
            survey_answer=2,
        )
    )
    [rating] = await ratings(sessions)
    assert (rating.case_id, rating.score) == (case.id, 2)
    async with sessions() as session:
        assert len(list(await session.scalars(select(orm.Case)))) == 1
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_CLOSED


async def test_a_rating_naming_an_unknown_case_is_kept_and_ended_not_left_queued(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    """The channel read nothing but a rating, in a thread naming a case this service does not
    know (another deployment's, or one long gone): it is no work for an agent (the router does
    not queue it), so it ends as it arrives, with a code of its own; the customer's message stays
    in the record, in their open case; nothing is rated."""
    await handlers.on_contact_created(created("c-1", "My invoice is wrong"))
    reply = created(
        "c-2", "5", case_id="C-7K3M9Q", subject="RE: How did we do?", minute=30, survey_answer=5
    )
    await handlers.on_contact_created(reply)
    await handlers.on_contact_created(reply)  # redelivered: recorded once
    assert await ratings(sessions) == []
    async with sessions() as session:
        first = await session.get(orm.Contact, "c-1")
        contact = await session.get(orm.Contact, "c-2")
        assert first is not None and contact is not None
        assert contact.case_id == first.case_id
        assert (contact.status, contact.wrap_up_code) == ("ended", csat.SURVEY_REPLY_UNMATCHED)
        assert contact.ended_at is not None
        [message] = await session.scalars(
            select(orm.Message).where(orm.Message.contact_id == "c-2")
        )
        assert message.text  # sealed, kept
        assert first.status == "queued"  # the request itself still waits for an agent
        assert await status_of(sessions, first.case_id) == case_pb2.CASE_STATUS_NEW
        audit = await session.scalars(
            select(orm.AuditEntry).where(orm.AuditEntry.action == "survey_answer_unmatched")
        )
        assert [a.entity_id for a in audit] == [first.case_id]


async def test_a_rating_naming_an_unknown_case_with_no_open_case_is_kept_in_a_resolved_case(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    """With no open case to join, the rating's message is kept in a case of its own, resolved
    as it opens (nothing to do for an agent, no response due) and not surveyed in turn."""
    reply = created("c-1", "4", case_id="C-7K3M9Q", minute=30, survey_answer=4)
    await handlers.on_contact_created(reply)
    await handlers.on_contact_created(reply)  # redelivered: recorded once
    assert await ratings(sessions) == []
    async with sessions() as session:
        contact = await session.get(orm.Contact, "c-1")
        assert contact is not None
        assert (contact.status, contact.wrap_up_code) == ("ended", csat.SURVEY_REPLY_UNMATCHED)
        [case] = await session.scalars(select(orm.Case))
        assert contact.case_id == case.id
        assert [m.contact_id for m in await session.scalars(select(orm.Message))] == ["c-1"]
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_RESOLVED
    publisher = Published()
    assert await Csat(sessions, publisher, "case").send_survey("acme", case.id) == ""
    assert publisher.events == []


async def test_a_case_awaiting_the_customers_confirmation_is_rated_or_disputed_by_mail(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    await set_status(
        sessions, handlers, case.id, lifecycle.PENDING_CONFIRMATION, "agent:agent-1", 11
    )
    await handlers.on_contact_created(
        created(
            "c-2",
            "5",
            case_id=case.reference,
            in_reply_to=survey_message_id(survey),
            minute=20,
            survey_answer=5,
        )
    )
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_PENDING_CONFIRMATION
    assert [r.score for r in await ratings(sessions)] == [5]
    # The customer writes in the case's thread: the resolution is disputed.
    await handlers.on_contact_created(
        created("c-3", "Still not fixed", case_id=case.reference, minute=30)
    )
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_IN_PROGRESS


@pytest.mark.parametrize(
    ("language", "asks"),
    [("ko-KR", "만족"), ("zh", "满意"), ("ja", "満足"), ("en", "satisfied"), ("", "satisfied")],
)
async def test_the_survey_is_written_in_the_customers_language_and_still_understood(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers, language: str, asks: str
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers, language)
    assert asks in survey.subject + survey.text
    assert csat.SURVEY_TOKEN in survey.subject
    assert case.reference in survey.subject and case.reference in survey.text
    # whatever the language, a reply keeping the subject is read as the rating
    reply = created(
        "c-2",
        "5점",
        case_id=case.reference,
        subject="RE: " + survey.subject,
        minute=30,
        survey_answer=5,
    )
    await handlers.on_contact_created(reply)
    assert [r.score for r in await ratings(sessions)] == [5]


async def test_a_rating_with_more_to_say_is_rated_and_reopens_the_case(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    reply = created(
        "c-2",
        "5 stars, but the fix broke my printer\n> Reply with 1 to 5",
        case_id=case.reference,
        in_reply_to=survey_message_id(survey),
        minute=30,
    )
    await handlers.on_contact_created(reply)
    await handlers.on_contact_created(reply)  # redelivered: rated once
    [rating] = await ratings(sessions)
    assert (rating.case_id, rating.score, rating.channel) == (case.id, 5, "email")
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_IN_PROGRESS
    async with sessions() as session:
        contact = await session.get(orm.Contact, "c-2")
        assert contact is not None and contact.case_id == case.id
        assert contact.status == "queued" and contact.wrap_up_code == ""  # for an agent


async def test_a_rating_with_more_to_say_on_a_closed_case_rates_it_and_follows_it_up(
    sessions: async_sessionmaker[AsyncSession], handlers: CaseHandlers
) -> None:
    case, survey = await resolved_and_surveyed(sessions, handlers)
    await set_status(sessions, handlers, case.id, lifecycle.CLOSED, "system", 20)
    await handlers.on_contact_created(
        created(
            "c-2",
            "1\nThe problem came back.",
            case_id=case.reference,
            subject="RE: " + survey.subject,
            minute=30,
        )
    )
    [rating] = await ratings(sessions)
    assert (rating.case_id, rating.score) == (case.id, 1)
    assert await status_of(sessions, case.id) == case_pb2.CASE_STATUS_CLOSED
    async with sessions() as session:
        contact = await session.get(orm.Contact, "c-2")
        assert contact is not None and contact.case_id != case.id  # a follow-up, for an agent
        assert contact.status == "queued"

"""Customer satisfaction: a survey after a case is resolved, on the customer's channel, and the
ratings that come back (SatisfactionRated), stored once each.

- email: an OutboundEmail command of kind "survey" to the customer's address, threaded on the
  case reference; its command id is derived from the case, so a redelivered CaseStatusChanged
  publishes the same command and JetStream drops the copy. A reply that is nothing but a rating
  comes marked by the email channel (Contact.survey_answer): recorded here, queued by no router.
  A reply with more to say is routed as usual, and rated too when it starts with a rating;
- chat: the chat widget shows its own rating form when the conversation ends; nothing is sent;
- voice and fax: the channel runs its own post-contact survey; nothing is sent.

A rating is keyed by (tenant, case, contact): a redelivered event changes nothing, and a customer
who rates again replaces the earlier rating only with a later one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import crypto, keyring, orm
from switchboard.case.adapters.database import insert_ignore
from switchboard.case.adapters.orm import utc_now
from switchboard.case.quality import channel_name
from switchboard.case.reports.orm import CsatRating, CsatSurvey
from switchboard.case.unit_of_work import Conflict, UnitOfWork
from switchboard.core import events
from switchboard.core.errors import InvalidArgument, Retry
from switchboard.core.publishing import Publisher
from switchboard.core.survey_answers import SURVEY_TOKEN, parse_rating
from switchboard.v1 import case_events_pb2, case_pb2, contact_pb2, events_pb2

logger = logging.getLogger(__name__)

_SURVEY_NAMESPACE = uuid.UUID("5b0a7d1e-3c1f-4c55-9f0e-6d1c2a9e4b10")
# The survey in the customer's language (the primary subtag of their latest contact's), English
# when there is none of theirs. Each keeps the token and asks for the number on the first line.
SURVEYS: dict[str, tuple[str, str]] = {
    "en": (
        "How did we do? [#{reference}] " + SURVEY_TOKEN,
        "Your request {reference} has been resolved.\n\n"
        "How satisfied are you with the help you received? Reply to this email with a number "
        "from 1 (very dissatisfied) to 5 (very satisfied) on the first line, and anything you "
        "would like to tell us below it.\n",
    ),
    "ko": (
        "상담은 만족스러우셨나요? [#{reference}] " + SURVEY_TOKEN,
        "문의하신 {reference} 건이 해결되었습니다.\n\n"
        "받으신 도움에 얼마나 만족하셨나요? 이 메일에 회신하여 첫 줄에 1(매우 불만족)부터 "
        "5(매우 만족)까지의 숫자를 적어 주시고, 하고 싶은 말씀은 그 아래에 적어 주세요.\n",
    ),
    "zh": (
        "您对我们的服务满意吗？[#{reference}] " + SURVEY_TOKEN,
        "您的请求 {reference} 已经解决。\n\n"
        "您对得到的帮助满意吗？请回复本邮件，在第一行写一个 1（非常不满意）到 5（非常满意）"
        "的数字，其他想告诉我们的话请写在下面。\n",
    ),
    "ja": (
        "対応はいかがでしたか？[#{reference}] " + SURVEY_TOKEN,
        "お問い合わせ {reference} は解決いたしました。\n\n"
        "今回のサポートにどの程度ご満足いただけましたか。このメールに返信し、1 行目に "
        "1（非常に不満）から 5（非常に満足）までの数字をご記入ください。ご意見はその下に"
        "お書きください。\n",
    ),
}
SURVEY_SUBJECT, SURVEY_TEXT = SURVEYS["en"]


def survey_mail(language: str, reference: str) -> tuple[str, str]:
    """The survey's subject and text for a customer who wrote in `language` (a BCP 47 tag)."""
    subject, text = SURVEYS.get(language.split("-")[0].lower(), SURVEYS["en"])
    return subject.format(reference=reference), text.format(reference=reference)


# The wrap-up code of a contact that was a rating in answer to the survey (not a request).
SURVEY_REPLY = "csat_reply"
# The wrap-up code of a contact the email channel read as nothing but a rating, in a thread naming
# a case this service does not know: nothing to rate and no work for an agent (the router does not
# queue it), so it ends as it arrives; its message stays in the customer's case.
SURVEY_REPLY_UNMATCHED = "csat_reply_unmatched"
# Contacts that are ratings, not requests: no agent serves them, and reports do not count them.
SURVEY_REPLIES = frozenset({SURVEY_REPLY, SURVEY_REPLY_UNMATCHED})


def answers_survey(contact: contact_pb2.Contact, command_id: str) -> bool:
    """Whether an email contact answers the survey sent as `command_id`: its In-Reply-To or
    References name the survey's Message-ID (`<command id>.<reference>@<domain>`, as the email
    channel sends commands), or its subject keeps the survey's token."""
    if command_id:
        for mid in (contact.in_reply_to, *contact.references):
            local = mid.strip().strip("<>").partition("@")[0].lower()
            if local == command_id or local.startswith(command_id + "."):
                return True
    return SURVEY_TOKEN.lower() in contact.subject.lower()


async def survey_rating(
    session: AsyncSession, case: orm.Case, contact: contact_pb2.Contact
) -> int | None:
    """The rating an email contact threaded into a resolved or closed case gives in answer to the
    case's email survey; None when it is no such answer (a customer message like any other)."""
    if contact.channel != contact_pb2.CHANNEL_EMAIL:
        return None
    survey = await session.get(CsatSurvey, (case.tenant, case.id))
    if survey is None or survey.channel != "email" or not survey.command_id:
        return None
    if not answers_survey(contact, survey.command_id):
        return None
    text = next((p.text for p in contact.content if p.text.strip()), "")
    return parse_rating(text)


async def record_reply_rating(
    session: AsyncSession, case: orm.Case, contact_id: str, score: int, text: str, at: datetime
) -> None:
    """Store the rating an email reply to the survey gave the case as a whole (contact_id ""), for
    the agent of its latest handled contact; a later answer replaces an earlier one."""
    handled = await session.scalar(
        select(orm.Contact)
        .where(orm.Contact.case_id == case.id, orm.Contact.contact_id != contact_id)
        .order_by((orm.Contact.agent_id != "").desc(), orm.Contact.created_at.desc())
        .limit(1)
    )
    comment = keyring.of(session).seal(session, case.tenant, case.customer_id or "", text)
    values = {
        "tenant": case.tenant,
        "case_id": case.id,
        "contact_id": "",
        "event_id": f"{contact_id}:csat"[:255],
        "score": score,
        "comment": comment,
        "queue": handled.queue if handled is not None else "",
        "channel": "email",
        "agent_id": handled.agent_id if handled is not None else "",
        "rated_at": at,
    }
    if not await insert_ignore(session, CsatRating, values, ["tenant", "case_id", "contact_id"]):
        existing = await session.get(CsatRating, (case.tenant, case.id, ""))
        if existing is not None and existing.rated_at < at:
            existing.score, existing.comment, existing.channel = score, comment, "email"
            existing.rated_at, existing.event_id = at, values["event_id"]  # type: ignore[assignment]


def survey_command_id(tenant: str, case_id: str) -> str:
    return uuid.uuid5(_SURVEY_NAMESPACE, f"{tenant}/{case_id}/survey").hex


class Csat:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher | None,
        consumer: str,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessions
        self._uow = UnitOfWork(sessions, what="event")
        self._publisher = publisher
        self._consumer = consumer
        self._clock = clock

    async def _claim(self, session: AsyncSession, event_id: str) -> bool:
        return await insert_ignore(
            session,
            orm.ProcessedEvent,
            {"event_id": event_id, "consumer": self._consumer, "processed_at": self._clock()},
            ["event_id", "consumer"],
        )

    # ---- the survey ---------------------------------------------------------------------------

    async def on_case_status_changed(self, event: case_events_pb2.CaseStatusChanged) -> None:
        if event.to_status != case_pb2.CASE_STATUS_RESOLVED:
            return
        if not event.case_id:
            raise InvalidArgument("case_id")
        await self.send_survey(event.meta.tenant, event.case_id)

    async def send_survey(self, tenant: str, case_id: str) -> str:
        """Survey the customer of a resolved case on the channel of its latest contact, once per
        case; returns that channel ("" when the case has no contact)."""
        async with self._sessions() as session:
            if await session.get(CsatSurvey, (tenant, case_id)) is not None:
                return ""  # already surveyed (a redelivery, or resolved again after a reopen)
            case = await session.get(orm.Case, case_id)
            if case is None:
                raise Retry(f"case {case_id} is not recorded yet")
            if case.tenant != tenant:
                raise InvalidArgument("case_id", "belongs to another tenant")
            last = await session.scalar(
                select(orm.Contact)
                .where(orm.Contact.case_id == case_id)
                .order_by(orm.Contact.created_at.desc(), orm.Contact.contact_id.desc())
                .limit(1)
            )
            if last is None or last.wrap_up_code == SURVEY_REPLY_UNMATCHED:
                # No contact, or a case opened for a rating of a case not known here: a
                # survey would answer a rating with a survey.
                return ""
            channel = channel_name(last.channel)
            # `value` is the blind index: one address, the same one each time.
            email = await session.scalar(
                select(orm.CustomerIdentity.sealed)
                .where(
                    orm.CustomerIdentity.customer_id == case.customer_id,
                    orm.CustomerIdentity.kind == contact_pb2.IDENTITY_KIND_EMAIL,
                )
                .order_by(orm.CustomerIdentity.value)
                .limit(1)
            )
        command_id = ""
        if email == crypto.ERASED:
            email = None
        if channel == "email" and email and self._publisher is not None:
            command_id = survey_command_id(tenant, case_id)
            reference = getattr(case, "reference", "") or case_id
            subject, text = survey_mail(last.language or "", reference)
            await self._publisher.publish(
                events_pb2.OutboundEmail(
                    meta=events.new_meta(tenant, contact_pb2.CHANNEL_EMAIL, "case", command_id),
                    contact_id=last.contact_id,
                    case_id=case_id,
                    case_reference=reference,
                    to=[email],
                    subject=subject,
                    text=text,
                    kind="survey",
                )
            )

        # Recorded after JetStream has the command: a crash in between republishes the same id.
        async def record(session: AsyncSession) -> None:
            await insert_ignore(
                session,
                CsatSurvey,
                {
                    "tenant": tenant,
                    "case_id": case_id,
                    "channel": channel,
                    "command_id": command_id,
                    "sent_at": self._clock(),
                },
                ["tenant", "case_id"],
            )

        try:
            await self._uow.run(record)
        except Conflict as exc:
            raise Retry(str(exc)) from exc
        logger.info("case %s surveyed on %s", case_id, channel)
        return channel

    # ---- the ratings --------------------------------------------------------------------------

    async def on_satisfaction_rated(self, event: events_pb2.SatisfactionRated) -> None:
        """Store a rating (1..5) of a contact or a case."""
        tenant = event.meta.tenant
        if not 1 <= event.score <= 5:
            raise InvalidArgument("score", f"{event.score} is not between 1 and 5")
        if not event.contact_id and not event.case_id:
            raise InvalidArgument("contact_id", "or case_id is required")
        if len(event.comment) > 10_000:
            raise InvalidArgument("comment", "is longer than 10000 characters")
        rated = (
            event.meta.occurred_at.ToDatetime(tzinfo=UTC)
            if event.meta.HasField("occurred_at")
            else self._clock()
        )

        async def rate(session: AsyncSession) -> bool:
            if not await self._claim(session, event.meta.event_id):
                return False  # a redelivery
            contact = await self._rated_contact(session, tenant, event)
            # The customer's own words: sealed with its key (erased with it).
            comment = keyring.of(session).seal(
                session, tenant, contact.customer_id or "", event.comment
            )
            values = {
                "tenant": tenant,
                "case_id": contact.case_id,
                "contact_id": event.contact_id,  # "" when the case as a whole was rated
                "event_id": event.meta.event_id,
                "score": event.score,
                "comment": comment,
                "queue": contact.queue,
                "channel": channel_name(contact.channel),
                "agent_id": contact.agent_id,
                "rated_at": rated,
            }
            keys = ["tenant", "case_id", "contact_id"]
            if not await insert_ignore(session, CsatRating, values, keys):
                existing = await session.get(
                    CsatRating, (tenant, contact.case_id, event.contact_id)
                )
                if existing is not None and existing.rated_at < rated:
                    existing.score, existing.comment = event.score, comment
                    existing.rated_at, existing.event_id = rated, event.meta.event_id
            return True

        try:
            if not await self._uow.run(rate):
                return
        except Conflict as exc:
            raise Retry(f"concurrent rating ({exc.reason})") from exc
        logger.info("rating %d recorded for case %s", event.score, event.case_id or "-")

    async def _rated_contact(
        self, session: AsyncSession, tenant: str, event: events_pb2.SatisfactionRated
    ) -> orm.Contact:
        if event.contact_id:
            contact = await session.get(orm.Contact, event.contact_id)
            if contact is None:
                raise Retry(f"contact {event.contact_id} is not recorded yet")
            if contact.tenant != tenant:
                raise InvalidArgument("contact_id", "belongs to another tenant")
            if event.case_id and contact.case_id != event.case_id:
                raise InvalidArgument("case_id", "does not hold contact_id")
            return contact
        # A rating of the whole case goes to the agent of its latest handled contact.
        case = await session.get(orm.Case, event.case_id)
        if case is None:
            raise Retry(f"case {event.case_id} is not recorded yet")
        if case.tenant != tenant:
            raise InvalidArgument("case_id", "belongs to another tenant")
        contact = await session.scalar(
            select(orm.Contact)
            .where(orm.Contact.case_id == case.id)
            .order_by((orm.Contact.agent_id != "").desc(), orm.Contact.created_at.desc())
            .limit(1)
        )
        if contact is None:
            raise InvalidArgument("case_id", "has no contact to rate")
        return contact

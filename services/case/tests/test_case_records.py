"""Case records against the real database: threading, merges and splits, the stored contact facts
the KPIs read, recurring tasks and auto-close."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.message import Message
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import audit
from switchboard.case.adapters import keyring, orm
from switchboard.case.commands import CaseCommands
from switchboard.case.handlers import CaseHandlers
from switchboard.case.records import CaseRecords
from switchboard.case.scheduler import Scheduler
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.sla.policy import parse
from switchboard.core import events
from switchboard.core.errors import FailedPrecondition, InvalidArgument
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

EMAIL = contact_pb2.IDENTITY_KIND_EMAIL
VISITOR = contact_pb2.IDENTITY_KIND_CHAT_VISITOR
POLICY = {
    "templates": [
        {
            "name": "inspection",
            "tenant": "acme",
            "subject": "Inspection",
            "case_type": "service_request",
            "note": "Check the fire doors.",
        }
    ],
    "recurring": [
        {
            "name": "monthly-inspection",
            "tenant": "acme",
            "template": "inspection",
            "every": "monthly",
            "day": 1,
            "at": "09:00",
            "timezone": "Asia/Seoul",
        }
    ],
    "auto_close_after": {"acme": "3d"},
    "default_phone_region": "KR",
}


@pytest.fixture
def clock() -> FakeClock[datetime]:
    return FakeClock(datetime(2026, 11, 30, 23, 0, tzinfo=UTC))


@pytest.fixture
def records(clock: FakeClock[datetime]) -> CaseRecords:
    policies = parse(POLICY)
    return CaseRecords(policies, SlaEngine(policies), clock)


@pytest.fixture
def handlers(
    sessions: async_sessionmaker[AsyncSession], records: CaseRecords, clock: FakeClock[datetime]
) -> CaseHandlers:
    return CaseHandlers(sessions, "case", clock, records)


@pytest.fixture
def commands(
    sessions: async_sessionmaker[AsyncSession], records: CaseRecords, clock: FakeClock[datetime]
) -> CaseCommands:
    return CaseCommands(sessions, records, clock)


def meta(channel: int = contact_pb2.CHANNEL_EMAIL, at: datetime | None = None) -> Message:
    m = events.new_meta("acme", channel, "test")
    if at is not None:
        m.occurred_at.FromDatetime(at)
    return m  # type: ignore[no-any-return]


def created(
    contact_id: str,
    *identities: tuple[int, str],
    case_id: str = "",
    channel: int = contact_pb2.CHANNEL_EMAIL,
) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=meta(channel),
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant="acme",
            channel=channel,  # type: ignore[arg-type]
            identities=[contact_pb2.CustomerIdentity(kind=k, value=v) for k, v in identities],  # type: ignore[misc]
            subject="Re: your case",
            case_id=case_id,
        ),
    )


async def contact(sessions: async_sessionmaker[AsyncSession], contact_id: str) -> orm.Contact:
    async with sessions() as session:
        row = await session.get(orm.Contact, contact_id)
        assert row is not None
        return row


async def case_row(sessions: async_sessionmaker[AsyncSession], case_id: str) -> orm.Case:
    async with sessions() as session:
        row = await session.get(orm.Case, case_id)
        assert row is not None
        return row


async def test_a_channel_threads_a_contact_into_a_case_by_id_or_reference(
    handlers: CaseHandlers, commands: CaseCommands, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(created("m-1", (EMAIL, "ana@example.com")))
    first = await case_row(sessions, (await contact(sessions, "m-1")).case_id)
    # A colleague answers from another address, quoting "[#C-…]" in the subject.
    await handlers.on_contact_created(
        created("m-2", (EMAIL, "colleague@example.com"), case_id=first.reference.lower())
    )
    await handlers.on_contact_created(
        created("m-3", (EMAIL, "third@example.com"), case_id=first.id)
    )
    assert (await contact(sessions, "m-2")).case_id == first.id
    assert (await contact(sessions, "m-3")).case_id == first.id

    # A reply in the thread of a resolved case reopens it.
    await commands.update_status("acme", "agent-1", first.id, case_pb2.CASE_STATUS_RESOLVED, "")
    await handlers.on_contact_created(
        created("m-4", (EMAIL, "ana@example.com"), case_id=first.reference)
    )
    reopened = await case_row(sessions, first.id)
    assert reopened.status == case_pb2.CASE_STATUS_IN_PROGRESS
    assert reopened.reopened_count == 1

    # A closed case stays closed: the reply opens a follow-up case.
    await commands.update_status("acme", "agent-1", first.id, case_pb2.CASE_STATUS_RESOLVED, "")
    await commands.update_status("acme", "agent-1", first.id, case_pb2.CASE_STATUS_CLOSED, "")
    await handlers.on_contact_created(
        created("m-5", (EMAIL, "ana@example.com"), case_id=first.reference)
    )
    follow_up = await case_row(sessions, (await contact(sessions, "m-5")).case_id)
    assert follow_up.id != first.id
    async with sessions() as session:
        entries = await audit.trail(session, audit.CASE, follow_up.id)
    assert json.loads(audit.data_json(entries[0]))["follow_up_of"] == first.reference

    # Another tenant's reference is no thread: the contact goes by its customer.
    other = created("g-1", (EMAIL, "gina@example.com"), case_id=first.reference)
    other.meta.tenant = other.contact.tenant = "globex"
    await handlers.on_contact_created(other)
    assert (await contact(sessions, "g-1")).case_id != first.id


async def test_merge_and_split_customers(
    handlers: CaseHandlers, commands: CaseCommands, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(
        created("chat-1", (VISITOR, "v-1"), channel=contact_pb2.CHANNEL_CHAT)
    )
    await handlers.on_contact_created(created("mail-1", (EMAIL, "ana@example.com")))
    chat_case = await case_row(sessions, (await contact(sessions, "chat-1")).case_id)
    mail_case = await case_row(sessions, (await contact(sessions, "mail-1")).case_id)
    assert chat_case.customer_id != mail_case.customer_id

    target = await commands.merge("acme", "lead-1", mail_case.customer_id, chat_case.customer_id)
    assert target == mail_case.customer_id
    assert (await case_row(sessions, chat_case.id)).customer_id == target
    assert (await contact(sessions, "chat-1")).customer_id == target
    # The visitor now resolves to the merged customer (and joins an open case of theirs).
    await handlers.on_contact_created(
        created("chat-2", (VISITOR, "v-1"), channel=contact_pb2.CHANNEL_CHAT)
    )
    assert (await contact(sessions, "chat-2")).customer_id == target
    with pytest.raises(FailedPrecondition):
        await commands.merge("acme", "lead-1", target, chat_case.customer_id)  # already one

    original, split = await commands.split(
        "acme",
        "lead-1",
        target,
        [contact_pb2.CustomerIdentity(kind=VISITOR, value="v-1")],
        [chat_case.id],
        "Visitor",
    )
    assert original == target and split != target
    assert (await case_row(sessions, chat_case.id)).customer_id == split
    async with sessions() as session:
        owner = await session.scalar(
            select(orm.CustomerIdentity.customer_id).where(
                orm.CustomerIdentity.value == keyring.of(session).index(session, "acme", "v-1")
            )
        )
        assert owner == split
        actions = [e.action for e in await audit.trail(session, audit.CUSTOMER, target)]
        moved = [e.action for e in await audit.trail(session, audit.CASE, chat_case.id)]
        _, breaks = await audit.verify(session)
    assert "merged_from" in actions and "split_into" in actions
    assert moved.count("customer_merged") == 1 and moved.count("customer_split") == 1
    assert breaks == []


async def test_contact_facts_for_the_kpis(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    await handlers.on_contact_created(
        created(
            "call-1",
            (contact_pb2.IDENTITY_KIND_PHONE, "010-9999-0000"),
            channel=contact_pb2.CHANNEL_VOICE,
        )
    )
    voice = contact_pb2.CHANNEL_VOICE
    steps: list[Message] = [
        events_pb2.ContactQueued(meta=meta(voice, t0), contact_id="call-1", queue="sales"),
        events_pb2.ContactOffered(meta=meta(voice, t0 + timedelta(seconds=8)), contact_id="call-1"),
        events_pb2.ContactAssigned(
            meta=meta(voice, t0 + timedelta(seconds=12)), contact_id="call-1", agent_id="a-1"
        ),
        events_pb2.ContactHeld(
            meta=meta(voice, t0 + timedelta(seconds=60)), contact_id="call-1", held=True
        ),
        events_pb2.ContactHeld(
            meta=meta(voice, t0 + timedelta(seconds=90)), contact_id="call-1", held=False
        ),
        events_pb2.ContactTransferred(
            meta=meta(voice, t0 + timedelta(seconds=100)),
            contact_id="call-1",
            from_agent_id="a-1",
            to_queue="billing",
        ),
    ]
    ended = events_pb2.ContactEnded(
        meta=meta(voice, t0 + timedelta(seconds=300)),
        contact_id="call-1",
        agent_id="a-1",
        reason=events_pb2.END_REASON_COMPLETED,
        wrap_up_code="solved",
    )
    ended.wait.FromSeconds(12)
    ended.talk.FromSeconds(288)
    ended.wrap_up.FromSeconds(20)
    steps.append(ended)
    for event in steps:
        await (
            {
                events_pb2.ContactQueued: handlers.on_contact_queued,
                events_pb2.ContactOffered: handlers.on_contact_offered,
                events_pb2.ContactAssigned: handlers.on_contact_assigned,
                events_pb2.ContactHeld: handlers.on_contact_held,
                events_pb2.ContactTransferred: handlers.on_contact_transferred,
                events_pb2.ContactEnded: handlers.on_contact_ended,
            }[type(event)]  # type: ignore[index]
        )(event)
        await handlers.on_contact_held(steps[3])  # redelivered: no second hold period
    c = await contact(sessions, "call-1")
    assert (c.queued_at, c.offered_at) == (t0, t0 + timedelta(seconds=8))
    assert c.assigned_at == t0 + timedelta(seconds=12)
    assert (c.wait_ms, c.talk_ms, c.hold_ms, c.wrap_up_ms) == (12_000, 288_000, 30_000, 20_000)
    assert (c.queue, c.transfers, c.wrap_up_code) == ("billing", 1, "solved")
    assert c.end_reason == events_pb2.END_REASON_COMPLETED
    assert c.ended_at == t0 + timedelta(seconds=300) and c.abandoned_at is None
    case = await case_row(sessions, c.case_id)
    assert case.first_response_at == t0 + timedelta(seconds=12)  # answering a call is responding
    async with sessions() as session:
        holds = list(await session.scalars(select(orm.ContactHold)))
    assert [(h.started_at, h.ended_at) for h in holds] == [
        (t0 + timedelta(seconds=60), t0 + timedelta(seconds=90))
    ]

    await handlers.on_contact_created(created("mail-9", (EMAIL, "x@example.com")))
    answer = events_pb2.MessageAdded(
        meta=meta(),
        message=contact_pb2.Message(
            message_id="r-1",
            contact_id="mail-9",
            author=contact_pb2.AUTHOR_AGENT,
            agent_id="a-2",
            parts=[contact_pb2.ContentPart(text="On it")],
        ),
    )
    answer.message.sent_at.FromDatetime(t0 + timedelta(hours=2))
    await handlers.on_message_added(answer)
    assert (await contact(sessions, "mail-9")).first_agent_response_at == t0 + timedelta(hours=2)

    await handlers.on_contact_created(created("gone-1", (EMAIL, "y@example.com")))
    abandoned = events_pb2.ContactAbandoned(
        meta=meta(at=t0 + timedelta(seconds=45)), contact_id="gone-1", queue="sales"
    )
    abandoned.waited.FromSeconds(45)
    await handlers.on_contact_abandoned(abandoned)
    gone = await contact(sessions, "gone-1")
    assert (gone.abandoned_at, gone.wait_ms, gone.status) == (
        t0 + timedelta(seconds=45),
        45_000,
        "abandoned",
    )


async def test_recurring_tasks_and_auto_close(
    sessions: async_sessionmaker[AsyncSession],
    records: CaseRecords,
    clock: FakeClock[datetime],
    commands: CaseCommands,
) -> None:
    scheduler = Scheduler(sessions, records, clock)
    await scheduler.run_once()  # 08:00 in Seoul: not due yet

    async def count() -> int:
        async with sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(orm.Case)) or 0)

    assert await count() == 0
    clock.now += timedelta(hours=1, minutes=1)  # 09:01 on 1 Dec in Seoul
    await scheduler.run_once()
    await scheduler.run_once()  # the same occurrence never opens a second case
    assert await count() == 1
    async with sessions() as session:
        case = await session.scalar(select(orm.Case))
        assert case is not None
        notes = list(await session.scalars(select(orm.CaseNote)))
    assert case.subject == "Inspection (2026-12-01)"
    assert case.case_type == case_pb2.CASE_TYPE_SERVICE_REQUEST
    assert [n.text for n in notes] == ["Check the fire doors."]

    clock.now += timedelta(days=31)  # 1 Jan: the next month's inspection
    await scheduler.run_once()
    assert await count() == 2

    # A resolved case the customer never confirms is closed after the tenant's 3 days.
    await commands.update_status("acme", "agent-1", case.id, case_pb2.CASE_STATUS_RESOLVED, "")
    clock.now += timedelta(days=2)
    await scheduler.run_once()
    assert (await case_row(sessions, case.id)).status == case_pb2.CASE_STATUS_RESOLVED
    clock.now += timedelta(days=1, seconds=1)
    await scheduler.run_once()
    closed = await case_row(sessions, case.id)
    assert closed.status == case_pb2.CASE_STATUS_CLOSED
    async with sessions() as session:
        last = (await audit.trail(session, audit.CASE, case.id))[-1]
    assert (last.actor, json.loads(audit.data_json(last))["reason"]) == (
        "scheduler",
        "not confirmed within 3d of resolution",
    )


async def test_response_timers_reassign_and_a_missing_mail_server(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock[datetime]
) -> None:
    policies = parse(
        {
            "sla_policies": [
                {
                    "name": "chat",
                    "tenant": "acme",
                    "first_response": "1m",
                    "next_response": "2m",
                    "escalation": [
                        {
                            "at": 100,
                            "kind": "functional",
                            "level": "experts",
                            "actions": ["email", "reassign"],
                            "notify": ["experts@acme.example"],
                            "reassign_to": "expert-1",
                            "queue": "experts",
                            "metrics": ["next_response"],
                        }
                    ],
                }
            ]
        }
    )
    records = CaseRecords(policies, SlaEngine(policies), clock)
    handlers = CaseHandlers(sessions, "case", clock, records)
    scheduler = Scheduler(sessions, records, clock)
    start = clock.now
    first = created("chat-1", (VISITOR, "v-9"), channel=contact_pb2.CHANNEL_CHAT)
    first.contact.created_at.FromDatetime(start)
    await handlers.on_contact_created(first)

    def message(mid: str, author: int, at: datetime) -> events_pb2.MessageAdded:
        m = contact_pb2.Message(
            message_id=mid,
            contact_id="chat-1",
            author=author,  # type: ignore[arg-type]
            agent_id="a-1" if author == contact_pb2.AUTHOR_AGENT else "",
            parts=[contact_pb2.ContentPart(text="…")],
        )
        m.sent_at.FromDatetime(at)
        return events_pb2.MessageAdded(meta=meta(contact_pb2.CHANNEL_CHAT), message=m)

    async def timers() -> dict[str, orm.SlaTimer]:
        async with sessions() as session:
            rows = await session.scalars(select(orm.SlaTimer))
            return {t.metric: t for t in rows}

    await handlers.on_message_added(
        message("a1", contact_pb2.AUTHOR_AGENT, start + timedelta(seconds=40))
    )
    await handlers.on_message_added(
        message("c1", contact_pb2.AUTHOR_CUSTOMER, start + timedelta(seconds=50))
    )
    t = await timers()
    assert (t["first_response"].state, t["first_response"].elapsed_s) == ("met", 40.0)
    assert t["next_response"].state == "running"

    clock.now = start + timedelta(seconds=50 + 120)
    await scheduler.run_once()
    t = await timers()
    assert t["next_response"].breached_at == clock.now
    case = await case_row(sessions, (await contact(sessions, "chat-1")).case_id)
    assert (case.assigned_agent_id, case.queue) == ("expert-1", "experts")
    async with sessions() as session:
        trail = await audit.trail(session, audit.CASE, case.id)
    escalated = [json.loads(audit.data_json(e)) for e in trail if e.action == "escalated"]
    assert escalated == [
        {
            "metric": "next_response",
            "threshold": 100,
            "kind": "functional",
            "level": "experts",
            "actions": ["email", "reassign"],
            "repeat": 0,
            "elapsed_s": 120.0,
            "target_s": 120,
            "email": "skipped: no SMTP server configured",
        }
    ]
    assert [e.action for e in trail][-4:] == [
        "escalated",
        "queue_changed",
        "assigned",
        "status_changed",  # new → assigned
    ]


async def test_supervision_acts_are_audited_and_a_note_kept_on_the_case(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(
        created("chat-7", (VISITOR, "v-7"), channel=contact_pb2.CHANNEL_CHAT)
    )

    def supervised(action: int, text: str = "") -> events_pb2.ContactSupervised:
        return events_pb2.ContactSupervised(
            meta=meta(contact_pb2.CHANNEL_CHAT),
            contact_id="chat-7",
            supervisor_id="sup-1",
            agent_id="ko-1",
            action=action,  # type: ignore[arg-type]
            text=text,
        )

    note = supervised(events_pb2.SUPERVISION_ACTION_NOTE, "환불 규정을 먼저 안내하세요")
    for event in (
        supervised(events_pb2.SUPERVISION_ACTION_STARTED),
        note,
        note,  # redelivered: one note, one entry
        supervised(events_pb2.SUPERVISION_ACTION_STOPPED),
    ):
        await handlers.on_contact_supervised(event)

    case_id = (await contact(sessions, "chat-7")).case_id
    async with sessions() as session:
        trail = await audit.trail(session, audit.CASE, case_id)
        notes = list(await session.scalars(select(orm.CaseNote)))
    acted = [(e.actor, e.action) for e in trail if e.action != "created"][1:]
    assert acted == [
        ("supervisor:sup-1", "supervision_started"),
        ("sup-1", "note_added"),
        ("supervisor:sup-1", "supervisor_note"),
        ("supervisor:sup-1", "supervision_stopped"),
    ]
    [kept] = notes
    assert (kept.author, kept.case_id) == ("sup-1", case_id)
    noted = json.loads(audit.data_json(trail[-2]))
    assert noted == {"contact_id": "chat-7", "agent_id": "ko-1", "note_id": kept.id}
    # A supervision act never carries the note's text into the trail.
    assert all("환불" not in audit.data_json(e) for e in trail)

    with pytest.raises(InvalidArgument):
        await handlers.on_contact_supervised(supervised(events_pb2.SUPERVISION_ACTION_NOTE, " "))


async def test_a_recording_played_is_audited_once_per_playback(
    handlers: CaseHandlers, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await handlers.on_contact_created(
        created("call-7", (VISITOR, "v-8"), channel=contact_pb2.CHANNEL_VOICE)
    )

    def played(who: str, roles: list[str], via: str = "player") -> events_pb2.RecordingPlayed:
        return events_pb2.RecordingPlayed(
            meta=meta(contact_pb2.CHANNEL_VOICE), contact_id="call-7", player_id=who,
            roles=roles, via=via,
        )  # fmt: skip

    evaluator = played("eva", ["qa"])
    for event in (evaluator, evaluator, played("boss", ["team_lead", "supervisor"], "download")):
        await handlers.on_recording_played(event)  # the first redelivered: one entry

    case_id = (await contact(sessions, "call-7")).case_id
    async with sessions() as session:
        trail = await audit.trail(session, audit.CASE, case_id)
    plays = [e for e in trail if e.action == "recording_played"]
    assert [e.actor for e in plays] == ["qa:eva", "supervisor:boss"]
    assert [json.loads(audit.data_json(e)) for e in plays] == [
        {"contact_id": "call-7", "roles": ["qa"], "via": "player"},
        {"contact_id": "call-7", "roles": ["supervisor", "team_lead"], "via": "download"},
    ]

    with pytest.raises(InvalidArgument):
        await handlers.on_recording_played(played("", ["qa"]))

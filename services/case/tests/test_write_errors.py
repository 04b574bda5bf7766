"""Every writer of the case store maps the database's refusals the same way (unit_of_work.py):
a value refused as data (SQLSTATE class 22) is the caller's INVALID_ARGUMENT, never a crash, for
CaseService's commands, the scheduler (which goes on with the other cases), CSAT ratings and QA
evaluations, as it already was for the event consumer.

The refusal is injected at the commit, so SQLite and PostgreSQL are tested alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session

from switchboard.case import audit
from switchboard.case.adapters import orm
from switchboard.case.commands import CaseCommands
from switchboard.case.csat import Csat
from switchboard.case.handlers import CaseHandlers
from switchboard.case.quality import Quality, load_forms
from switchboard.case.records import CaseRecords
from switchboard.case.reports.orm import CsatRating, QaEvaluation
from switchboard.case.scheduler import Scheduler
from switchboard.case.sla.engine import SlaEngine
from switchboard.case.sla.policy import parse
from switchboard.core import events
from switchboard.core.errors import InvalidArgument
from switchboard.testing.contacts import contact_created
from switchboard.testing.fakes import FakeClock
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

START = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
POLICY = {
    "sla_policies": [
        {
            "name": "fast",
            "tenant": "acme",
            "first_response": "1m",
            "escalation": [
                {"at": 100, "kind": "functional", "level": "experts", "actions": ["event"]}
            ],
        }
    ]
}


class Refused(Exception):
    """What a driver raises for a value the database refuses (PostgreSQL: a NUL in text)."""

    sqlstate = "22021"


@contextmanager
def refused_when(condition: Callable[[object], bool]) -> Iterator[list[object]]:
    """The database refuses every transaction holding a row that meets `condition` (an ORM
    object at the commit, or the table of an INSERT statement when it runs); yields what it
    refused."""
    refused: list[object] = []

    def refuse(what: object) -> None:
        refused.append(what)
        raise DBAPIError("COMMIT", None, Refused("invalid byte sequence: 0x00"))

    def at_commit(session: Session) -> None:
        for o in [*session.new, *session.dirty, *session.identity_map.values()]:
            if condition(o):
                refuse(o)

    def at_statement(state: ORMExecuteState) -> None:
        table = getattr(state.statement, "table", None)
        if state.is_insert and table is not None and condition(table):
            refuse(table)

    event.listen(Session, "before_commit", at_commit)
    event.listen(Session, "do_orm_execute", at_statement)
    try:
        yield refused
    finally:
        event.remove(Session, "before_commit", at_commit)
        event.remove(Session, "do_orm_execute", at_statement)


@pytest.fixture
def clock() -> FakeClock[datetime]:
    return FakeClock(START)


@pytest.fixture
def records(clock: FakeClock[datetime]) -> CaseRecords:
    policies = parse(POLICY)
    return CaseRecords(policies, SlaEngine(policies), clock)


@pytest.fixture
def commits() -> list[int]:
    return []


@pytest.fixture
def commands(
    sessions: async_sessionmaker[AsyncSession],
    records: CaseRecords,
    clock: FakeClock[datetime],
    commits: list[int],
) -> CaseCommands:
    return CaseCommands(sessions, records, clock, lambda: commits.append(1))


async def open_case(commands: CaseCommands, email: str) -> str:
    request = case_pb2.CreateCaseRequest(
        subject="Refund",
        identities=[
            contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_EMAIL, value=email)
        ],
    )
    return await commands.create_case("acme", "agent:a-1", request)


def meta() -> events_pb2.EventMeta:
    m = events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test")
    m.occurred_at.FromDatetime(START)
    return m


async def handled_contact(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock[datetime]
) -> str:
    """A contact an agent handled and ended, through the event consumer."""
    handlers = CaseHandlers(sessions, "case", clock)
    await handlers.on_contact_created(
        contact_created(
            "mail-1",
            channel=contact_pb2.CHANNEL_EMAIL,
            email="ann@example.com",
            subject="Refund",
            at=START,
            meta=meta(),
        )
    )
    await handlers.on_contact_assigned(
        events_pb2.ContactAssigned(meta=meta(), contact_id="mail-1", agent_id="a-1")
    )
    await handlers.on_contact_ended(
        events_pb2.ContactEnded(meta=meta(), contact_id="mail-1", agent_id="a-1")
    )
    return "mail-1"


async def test_a_command_the_database_refuses_is_invalid_argument(
    commands: CaseCommands, sessions: async_sessionmaker[AsyncSession], commits: list[int]
) -> None:
    case_id = await open_case(commands, "ann@example.com")
    assert commits == [1]
    with refused_when(lambda o: isinstance(o, orm.CaseNote)) as refused:
        with pytest.raises(InvalidArgument) as raised:
            await commands.add_note("acme", "agent:a-1", case_id, "refused by the database")
    assert len(refused) == 1  # not tried again: it would fail the same way
    assert raised.value.field == "request"
    assert "the database refused it" in raised.value.problem
    assert commits == [1]
    async with sessions() as session:
        trail = await audit.trail(session, audit.CASE, case_id)
    assert "note_added" not in [e.action for e in trail]


async def test_the_scheduler_goes_on_past_a_case_the_database_refuses(
    commands: CaseCommands,
    sessions: async_sessionmaker[AsyncSession],
    records: CaseRecords,
    clock: FakeClock[datetime],
) -> None:
    cases = sorted(
        [await open_case(commands, "ann@example.com"), await open_case(commands, "bo@example.com")]
    )
    scheduler = Scheduler(sessions, records, clock)
    clock.now = START + timedelta(minutes=2)  # both first responses are late

    def escalating_first(o: object) -> bool:
        return isinstance(o, orm.AuditEntry) and o.action == "escalated" and o.entity_id == cases[0]

    with refused_when(escalating_first) as refused:
        await scheduler.check_sla(clock.now)
    assert len(refused) == 1

    async def actions(case_id: str) -> list[str]:
        async with sessions() as session:
            return [e.action for e in await audit.trail(session, audit.CASE, case_id)]

    assert "escalated" not in await actions(cases[0])  # rolled back alone
    assert (await actions(cases[1]))[-2:] == ["sla_breached", "escalated"]
    # The refusal is not for good here: the next round escalates the first case too.
    await scheduler.check_sla(clock.now)
    assert (await actions(cases[0]))[-2:] == ["sla_breached", "escalated"]


async def test_a_qa_evaluation_the_database_refuses_is_invalid_argument(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock[datetime]
) -> None:
    contact_id = await handled_contact(sessions, clock)
    quality = Quality(sessions, load_forms(), clock=clock)
    form = quality.forms["default"]
    answers = {i.id: True for i in form.items}
    with refused_when(lambda o: isinstance(o, QaEvaluation)):
        with pytest.raises(InvalidArgument, match="the database refused it"):
            await quality.submit("acme", "qa:lee", contact_id, "default", answers)
    # Nothing was stored: the same evaluation is accepted once the database takes it.
    evaluation = await quality.submit("acme", "qa:lee", contact_id, "default", answers)
    assert evaluation.score == 100.0


async def test_a_rating_the_database_refuses_is_an_invalid_event(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock[datetime]
) -> None:
    contact_id = await handled_contact(sessions, clock)
    csat = Csat(sessions, None, "case-csat", clock)
    rating = events_pb2.SatisfactionRated(meta=meta(), contact_id=contact_id, score=5)
    with refused_when(lambda t: getattr(t, "name", "") == CsatRating.__tablename__):
        with pytest.raises(InvalidArgument) as raised:
            await csat.on_satisfaction_rated(rating)
    assert raised.value.field == "event"
    # Its claim was rolled back with it: redelivered and accepted, it is stored.
    await csat.on_satisfaction_rated(rating)
    async with sessions() as session:
        stored = await session.get(
            CsatRating, ("acme", (await session.get(orm.Contact, contact_id)).case_id, contact_id)
        )  # type: ignore[union-attr]
    assert stored is not None and stored.score == 5


async def test_postgresql_refusing_a_nul_in_a_note_is_invalid_argument(
    commands: CaseCommands, sessions: async_sessionmaker[AsyncSession], database_url: str
) -> None:
    """The same mapping for a real refusal: PostgreSQL stores no NUL in text (SQLite does). The
    note's text is sealed before it is stored, so the NUL is in its author."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite stores a NUL in text")
    case_id = await open_case(commands, "ann@example.com")
    with pytest.raises(InvalidArgument, match=r"request: the database refused it: .*0x00"):
        await commands.add_note("acme", "agent:a\x00-1", case_id, "a note")
    async with sessions() as session:
        trail = await audit.trail(session, audit.CASE, case_id)
    assert "note_added" not in [e.action for e in trail]

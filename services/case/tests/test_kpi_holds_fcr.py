"""Holds over 60 s (each hold, as the centres' "hold ≤ 60 s" rule measures it) and first-contact
resolution, from the functions and through the real case store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from google.protobuf.duration_pb2 import Duration
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
from switchboard.case.csat import Csat
from switchboard.case.domain import lifecycle
from switchboard.case.handlers import CaseHandlers
from switchboard.case.reports import kpi
from switchboard.case.reports.kpi import ContactFacts, handling
from switchboard.case.reports.service import Reports
from switchboard.core import events
from switchboard.v1 import contact_pb2, events_pb2

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
VOICE, EMAIL = contact_pb2.CHANNEL_VOICE, contact_pb2.CHANNEL_EMAIL


def handled(n: int, holds_ms: tuple[int, ...], hold_ms: int | None = None) -> ContactFacts:
    return ContactFacts(
        contact_id=f"c{n}",
        tenant="acme",
        queue="q",
        channel="voice",
        agent_id="a1",
        customer_id=f"k{n}",
        arrived_at=T0,
        answered_at=T0,
        ended_at=T0 + timedelta(minutes=5),
        talk_ms=300_000,
        hold_ms=sum(holds_ms) if hold_ms is None else hold_ms,
        holds_ms=holds_ms,
    )


def test_each_hold_over_60_seconds_counts_not_the_total() -> None:
    m = handling(
        [
            handled(1, (30_000, 61_000)),  # one hold over the limit
            handled(2, (40_000, 40_000)),  # 80 s in all, but no single hold over 60 s
            handled(3, (60_000,)),  # exactly 60 s is within the rule
            handled(4, ()),
        ]
    )
    assert (m["holds"], m["holds_over_60s"]) == (5.0, 1.0)
    assert m["holds_over_60s_rate"] == 1 / 5


def test_a_total_hold_without_its_periods_counts_as_one_hold() -> None:
    # A channel that reports only ContactEnded.hold: the total is all that is known.
    m = handling([handled(1, (), hold_ms=90_000), handled(2, (), hold_ms=0)])
    assert (m["holds"], m["holds_over_60s"]) == (1.0, 1.0)


def test_no_holds_has_no_rate() -> None:
    m = handling([handled(1, ())])
    assert m["holds"] == 0.0 and m["holds_over_60s_rate"] is None


def meta(at: datetime, channel: int = VOICE) -> events_pb2.EventMeta:
    m = events.new_meta("acme", channel, "test")
    m.occurred_at.FromDatetime(at)
    return m


def contact(
    contact_id: str, channel: int, at: datetime, **extra: object
) -> events_pb2.ContactCreated:
    identity = (
        contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_EMAIL, value="ana@example.com")
        if channel == EMAIL
        else contact_pb2.CustomerIdentity(
            kind=contact_pb2.IDENTITY_KIND_PHONE, value="+821012345678"
        )
    )
    c = contact_pb2.Contact(
        contact_id=contact_id,
        tenant="acme",
        channel=channel,  # type: ignore[arg-type]
        identities=[identity],
        queue="support",
        **extra,  # type: ignore[arg-type]
    )
    c.created_at.FromDatetime(at)
    return events_pb2.ContactCreated(meta=meta(at, channel), contact=c)


async def report(
    sessions: async_sessionmaker[AsyncSession], kind: str, as_of: datetime
) -> dict[str, float | None]:
    spec = kpi.ReportSpec(T0 - timedelta(hours=1), T0 + timedelta(hours=23), "day", ZoneInfo("UTC"))
    table = await Reports(sessions, clock=lambda: as_of).report("acme", kind, spec)
    [row] = table.rows
    return row.metrics


async def test_holds_over_60_seconds_from_the_recorded_hold_periods(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handlers = CaseHandlers(sessions, "case")
    await handlers.on_contact_created(contact("v1", VOICE, T0))
    await handlers.on_contact_assigned(
        events_pb2.ContactAssigned(meta=meta(T0), contact_id="v1", agent_id="a1", queue="support")
    )
    for start, seconds in ((60, 70), (200, 30), (300, 45)):  # 145 s on hold, one hold over 60 s
        at = T0 + timedelta(seconds=start)
        await handlers.on_contact_held(
            events_pb2.ContactHeld(meta=meta(at), contact_id="v1", agent_id="a1", held=True)
        )
        await handlers.on_contact_held(
            events_pb2.ContactHeld(
                meta=meta(at + timedelta(seconds=seconds)), contact_id="v1", held=False
            )
        )
    ended = events_pb2.ContactEnded(
        meta=meta(T0 + timedelta(seconds=400)),
        contact_id="v1",
        agent_id="a1",
        talk=Duration(seconds=400),
        hold=Duration(seconds=145),
    )
    await handlers.on_contact_ended(ended)
    m = await report(sessions, "handling", T0 + timedelta(days=1))
    assert (m["holds"], m["holds_over_60s"]) == (3.0, 1.0)
    assert m["avg_hold_s"] == 145.0


async def test_a_rating_in_answer_to_the_survey_is_not_a_repeat_contact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    handlers = CaseHandlers(sessions, "case")
    await handlers.on_contact_created(contact("e1", EMAIL, T0, subject="Invoice"))
    reply = contact_pb2.Message(
        message_id="m1", contact_id="e1", author=contact_pb2.AUTHOR_AGENT, agent_id="a1",
        parts=[contact_pb2.ContentPart(content_type="text/plain", text="Fixed.")],
    )  # fmt: skip
    reply.sent_at.FromDatetime(T0 + timedelta(minutes=30))
    await handlers.on_message_added(events_pb2.MessageAdded(meta=meta(T0, EMAIL), message=reply))
    async with sessions.begin() as session:
        row = await session.get(orm.Contact, "e1")
        assert row is not None
        case = await session.get(orm.Case, row.case_id)
        assert case is not None
        await handlers.records.change_status(
            session, case, lifecycle.RESOLVED, "agent:a1", T0 + timedelta(minutes=31)
        )

    class Sent:
        command_id = ""

        async def publish(self, event: events_pb2.OutboundEmail) -> None:
            self.command_id = event.meta.event_id

        async def publish_async(self, event: object) -> None:
            raise NotImplementedError

    sent = Sent()
    await Csat(sessions, sent, "case").send_survey("acme", case.id)  # type: ignore[arg-type]
    await handlers.on_contact_created(
        contact(
            "e2", EMAIL, T0 + timedelta(hours=2),
            case_id=case.reference, in_reply_to=f"{sent.command_id}.x@help.example.com",
            content=[contact_pb2.ContentPart(content_type="text/plain", text="5")],
            survey_answer=5,  # the channel read nothing but the rating
        )
    )  # fmt: skip
    m = await report(sessions, "fcr", T0 + timedelta(days=4))
    assert (m["fcr_resolved"], m["fcr_repeated"]) == (1.0, 0.0)
    assert m["fcr_rate"] == 1.0
    # A real second contact within the window is a repeat.
    await handlers.on_contact_created(contact("e3", EMAIL, T0 + timedelta(hours=5)))
    m = await report(sessions, "fcr", T0 + timedelta(days=4))
    assert m["fcr_repeated"] == 1.0

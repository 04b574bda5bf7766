"""SLA clocks and escalation with a controllable clock, through the real service: business hours
over a weekend, 75 % → escalated (email over real SMTP, event on NATS) → reminded → paused while
pending customer → resumed by the customer's reply → breached and escalated again. Every step is
in the case's audit trail."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from nats.aio.msg import Msg
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from switchboard.case import audit
from switchboard.case.adapters import orm
from switchboard.case.adapters.mailer import message_id
from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.testing.contacts import contact_created
from switchboard.testing.fakes import FakeClock
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "case-sla-secret"
POLICY = """
calendars:
  berlin:
    timezone: Europe/Berlin
    hours: {mon-fri: "09:00-17:00"}
    holidays: [2026-12-25]
sla_policies:
  - name: acme-standard
    tenant: acme
    calendar: berlin
    resolution: 4h
    escalation:
      - {at: 75, kind: functional, level: second_line, actions: [email, event],
         notify: [second-line@acme.example], repeat_every: 30m}
      - {at: 100, kind: hierarchical, level: manager, actions: [email, event, reprioritise],
         notify: [manager@acme.example], priority: urgent}
"""


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((list(envelope.rcpt_tos), envelope.content.decode()))
        return "250 OK"

    async def holds(self, n: int) -> None:
        """Wait until `n` mails have arrived (the relay sends them after the commit)."""

        async def arrived() -> bool:
            return len(self.mails) >= n

        await eventually(arrived)
        assert len(self.mails) == n, [m[1] for m in self.mails]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
async def app(
    nats_url: str, database_url: str, tmp_path: Path, smtp: tuple[Inbox, int]
) -> AsyncIterator[tuple[CaseApp, FakeClock[datetime]]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    clock = FakeClock(datetime(2026, 11, 27, 14, 0, tzinfo=UTC))  # Friday 15:00 in Berlin
    settings = CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        SHUTDOWN_GRACE_SECONDS=1.0,
        CASE_POLICY_FILE=str(policy),
        CASE_SMTP_HOST="127.0.0.1",
        CASE_SMTP_PORT=smtp[1],
    )
    app = bootstrap(settings, clock=clock, run_scheduler=False)
    await app.start()
    yield app, clock
    await app.stop()


def _sla(case: case_pb2.Case) -> case_pb2.SlaTimer:
    (timer,) = [t for t in case.sla if t.metric == "resolution"]
    return timer


async def test_escalate_pause_resume_breach(
    app: tuple[CaseApp, FakeClock[datetime]], bus: Bus, smtp: tuple[Inbox, int]
) -> None:
    service, clock = app
    inbox = smtp[0]
    seen: list[Any] = []

    async def on_case_event(msg: Msg) -> None:
        spec = events.spec_by_name((msg.headers or {}).get(events.TYPE_HEADER, ""))
        assert spec is not None
        event = spec.type()
        event.ParseFromString(msg.data)
        seen.append(event)

    await bus.nc.subscribe("case.acme.>", cb=on_case_event)
    token = auth.mint(SECRET, "acme", "agent-7", ["agent"])
    async with sb_grpc.channel(f"127.0.0.1:{service.port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        await bus.publish(
            contact_created(
                "mail-1",
                channel=contact_pb2.CHANNEL_EMAIL,
                email="ana@example.com",
                subject="Invoice wrong",
                text="Please fix it",
                at=clock.now,
            )
        )

        async def the_case() -> case_pb2.Case | None:
            r = await stub.ListCases(case_pb2.ListCasesRequest(contact_id="mail-1"))
            return r.cases[0] if r.cases else None

        case = await eventually(the_case)
        assert service.scheduler is not None
        tick = service.scheduler.run_once

        async def get() -> case_pb2.Case:
            return await stub.GetCase(case_pb2.GetCaseRequest(case_id=case.case_id))

        # Saturday noon: only Friday 15:00-17:00 counted (2 h of 4 h); nothing happens.
        clock.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
        await tick()
        timer = _sla(await get())
        assert timer.elapsed.ToSeconds() == 2 * 3600
        assert list(timer.thresholds_reached) == []

        # Monday 10:00 Berlin: 3 h of 4 h = 75 % → escalated to the second line.
        clock.now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        await tick()
        assert list(_sla(await get()).thresholds_reached) == [75]
        await inbox.holds(1)
        assert inbox.mails[0][0] == ["second-line@acme.example"]
        assert f"[#{case.reference}]" in inbox.mails[0][1]

        # Nobody acts for 30 minutes: the escalation is repeated.
        clock.now = datetime(2026, 11, 30, 9, 40, tzinfo=UTC)
        await tick()
        await inbox.holds(2)

        # The agent asks the customer: the clock stops at 3 h 45 min, reminders stop.
        clock.now = datetime(2026, 11, 30, 9, 45, tzinfo=UTC)
        await stub.UpdateCaseStatus(
            case_pb2.UpdateCaseStatusRequest(
                case_id=case.reference, status=case_pb2.CASE_STATUS_PENDING_CUSTOMER
            )
        )
        clock.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # Tuesday 10:00 Berlin
        await tick()
        paused = await get()
        assert _sla(paused).state == "paused"
        assert _sla(paused).elapsed.ToSeconds() == 3 * 3600 + 45 * 60
        assert not _sla(paused).HasField("breached_at")
        assert len(inbox.mails) == 2

        # The customer replies: the case is in progress again and the clock runs.
        reply = contact_pb2.Message(
            message_id="mail-2",
            contact_id="mail-1",
            author=contact_pb2.AUTHOR_CUSTOMER,
            parts=[contact_pb2.ContentPart(content_type="text/plain", text="Here it is")],
        )
        reply.sent_at.FromDatetime(clock.now)
        await bus.publish(
            events_pb2.MessageAdded(
                meta=events.new_meta("acme", contact_pb2.CHANNEL_EMAIL, "test"), message=reply
            )
        )

        async def resumed() -> bool:
            return _sla(await get()).state == "running"

        await eventually(resumed)
        assert (await get()).status == case_pb2.CASE_STATUS_IN_PROGRESS

        # 15 more business minutes: 4 h → breached, escalated to the manager, made urgent.
        clock.now = datetime(2026, 12, 1, 9, 15, tzinfo=UTC)
        await tick()
        breached = await get()
        assert _sla(breached).breached_at.ToDatetime(tzinfo=UTC) == clock.now
        assert list(_sla(breached).thresholds_reached) == [75, 100]
        assert breached.priority == case_pb2.CASE_PRIORITY_URGENT
        await inbox.holds(3)
        assert inbox.mails[-1][0] == ["manager@acme.example"]

        # Audit trails are for supervisors, QA and admins, not the agent.
        supervisor = auth.mint(SECRET, "acme", "sup-1", ["supervisor"])
        async with sb_grpc.channel(f"127.0.0.1:{service.port}", supervisor) as sup_ch:
            trail = await case_pb2_grpc.CaseServiceStub(sup_ch).GetAuditTrail(
                case_pb2.GetAuditTrailRequest(case_id=case.case_id)
            )
        assert trail.intact
        steps = [
            (e.action, json.loads(e.data_json))
            for e in trail.entries
            if e.action.startswith(("sla_", "escalat", "status_changed", "priority"))
        ]
        assert [a for a, _ in steps] == [
            "sla_started",
            "escalated",
            "escalated",
            "escalation_acknowledged",
            "status_changed",
            "sla_paused",
            "status_changed",
            "sla_resumed",
            "sla_breached",
            "escalated",
            "priority_changed",
        ]
        assert [
            (d["threshold"], d["repeat"], d["email"]) for a, d in steps if a == "escalated"
        ] == [
            (75, 0, "queued"),
            (75, 1, "queued"),
            (100, 0, "queued"),
        ]
        assert steps[4][1] == {"from": "new", "to": "pending_customer"}
        assert steps[6][1] == {
            "from": "pending_customer",
            "to": "in_progress",
            "reason": "the customer replied",
        }

    def escalations() -> list[tuple[int, int]]:
        return [
            (e.threshold, e.repeat) for e in seen if isinstance(e, case_events_pb2.CaseEscalated)
        ]

    async def all_events() -> bool:
        breaches = [e for e in seen if isinstance(e, case_events_pb2.SlaBreached)]
        return escalations() == [(75, 0), (75, 1), (100, 0)] and len(breaches) == 1

    await eventually(all_events)
    # The case was opened by the mail: CaseCreated names it (the email channel acknowledges it).
    [opened] = [e for e in seen if isinstance(e, case_events_pb2.CaseCreated)]
    assert opened.contact_id == "mail-1" and opened.reference.startswith("C-")
    await asyncio.sleep(0)


async def test_an_escalation_mail_is_sent_once_after_the_commit_when_its_transaction_is_retried(
    app: tuple[CaseApp, FakeClock[datetime]], bus: Bus, smtp: tuple[Inbox, int]
) -> None:
    service, clock = app
    inbox = smtp[0]
    assert service.sessions is not None and service.scheduler is not None
    sessions = service.sessions
    await bus.publish(
        contact_created(
            "mail-9",
            channel=contact_pb2.CHANNEL_EMAIL,
            email="bo@example.com",
            subject="Refund",
            at=clock.now,
        )
    )

    async def the_case() -> orm.Case | None:
        async with sessions() as session:
            return await session.scalar(select(orm.Case))

    case = await eventually(the_case)

    # The first commit of the transaction that escalates fails, as it does when another writer
    # took the same audit sequence number; the scheduler's next round does the work again.
    failed: list[str] = []

    def conflict_once(session: Session) -> None:
        escalating = any(
            isinstance(o, orm.AuditEntry) and o.action == "escalated"
            for o in [*session.new, *session.identity_map.values()]
        )
        if escalating and not failed:
            failed.append(case.id)
            raise IntegrityError("COMMIT", None, Exception("audit entry taken concurrently"))

    event.listen(Session, "before_commit", conflict_once)
    try:
        # Monday 10:00 Berlin: 75 % of the 4 h target, the second line is to be mailed.
        clock.now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        await service.scheduler.run_once()
        assert failed == [case.id]
        assert service.relay is not None
        await service.relay.drain()
        assert inbox.mails == []  # nothing committed, nothing sent

        await service.scheduler.run_once()  # the retry commits
        await inbox.holds(1)
        clock.now = datetime(2026, 11, 30, 9, 5, tzinfo=UTC)
        await service.scheduler.run_once()
        await service.relay.drain()
    finally:
        event.remove(Session, "before_commit", conflict_once)
    assert len(inbox.mails) == 1
    [(to, raw)] = inbox.mails
    assert to == ["second-line@acme.example"]
    async with sessions() as session:
        [mail] = list(await session.scalars(select(orm.OutboxMail)))
        trail = [
            json.loads(audit.data_json(e))
            for e in await session.scalars(
                select(orm.AuditEntry).where(orm.AuditEntry.action == "escalated")
            )
        ]
    assert mail.sent_at is not None and mail.attempts == 1 and mail.case_id == case.id
    assert f"Message-ID: {message_id(mail.key, service.settings.smtp_from)}" in raw
    assert [(d["threshold"], d["repeat"], d["email"]) for d in trail] == [(75, 0, "queued")]

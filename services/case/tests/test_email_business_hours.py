"""The email service level in the tenant's business hours, as the running case service computes
it: the service started whole (its handlers record the mails from the bus into SQLite), a policy
file naming the tenant's business hours, and a clock the test moves.

A mail that arrives on Friday at 17:55 in Seoul, with hours 09:00–18:00 Monday to Friday and a
24-hour target, has 5 minutes on Friday, 9 hours on Monday and Tuesday, and is due on Wednesday at
14:55."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.case.sla import policy
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "business-hours-secret"
SEOUL = ZoneInfo("Asia/Seoul")
EMAIL = contact_pb2.CHANNEL_EMAIL
ARRIVED = datetime(2025, 3, 7, 17, 55, tzinfo=SEOUL)  # a Friday
DUE = datetime(2025, 3, 12, 14, 55, tzinfo=SEOUL)  # the Wednesday after
POLICY = """
calendars:
  seoul-office:
    timezone: Asia/Seoul
    hours: {mon-fri: "09:00-18:00"}
business_hours:
  acme: seoul-office
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now.astimezone(UTC)


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value.astimezone(UTC))
    return t


@pytest.fixture
def clock() -> Clock:
    return Clock(ARRIVED)


@pytest.fixture
async def app(
    nats_url: str, database_url: str, tmp_path: Path, clock: Clock
) -> AsyncIterator[CaseApp]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    settings = CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        SWITCHBOARD_TENANTS="acme,globex",
        CASE_POLICY_FILE=str(policy),
        SHUTDOWN_GRACE_SECONDS=0.5,
    )
    made = bootstrap(settings, clock=clock, run_scheduler=False)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


def mail(contact_id: str, sender: str) -> events_pb2.ContactCreated:
    meta = events.new_meta("acme", EMAIL, "test")
    meta.occurred_at.CopyFrom(ts(ARRIVED))
    return events_pb2.ContactCreated(
        meta=meta,
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant="acme",
            channel=EMAIL,
            identities=[
                contact_pb2.CustomerIdentity(kind=contact_pb2.IDENTITY_KIND_EMAIL, value=sender)
            ],
            content=[contact_pb2.ContentPart(content_type="text/plain", text="청구서 문의")],
            created_at=ts(ARRIVED),
        ),
    )


def reply(contact_id: str, at: datetime) -> events_pb2.MessageAdded:
    return events_pb2.MessageAdded(
        meta=events.new_meta("acme", EMAIL, "test"),
        message=contact_pb2.Message(
            message_id=f"{contact_id}-reply",
            contact_id=contact_id,
            author=contact_pb2.AUTHOR_AGENT,
            agent_id="ko-1",
            parts=[contact_pb2.ContentPart(content_type="text/plain", text="답변드립니다")],
            sent_at=ts(at),
        ),
    )


async def email_report(stub: Any, business_hours: bool) -> dict[str, case_pb2.ReportValue]:
    request = case_pb2.GetReportRequest(
        kind=case_pb2.REPORT_KIND_EMAIL,
        interval="day",
        time_zone="Asia/Seoul",
        to=ts(datetime(2025, 3, 8, tzinfo=SEOUL)),
        email_threshold_hours=24,
        email_business_hours=business_hours,
    )
    getattr(request, "from").CopyFrom(ts(datetime(2025, 3, 7, tzinfo=SEOUL)))
    report = await stub.GetReport(request, timeout=10)
    [row] = report.rows
    return {v.name: v for v in row.values}


async def test_email_sla_counts_the_tenants_business_hours(
    app: CaseApp, bus: Bus, clock: Clock
) -> None:
    # Three mails arrive on Friday at 17:55; one is answered just before it is due, one just
    # after, one not at all.
    for n in (1, 2, 3):
        await bus.publish(mail(f"e{n}", f"customer{n}@example.com"))
    await bus.publish(reply("e1", DUE - timedelta(minutes=5)))
    await bus.publish(reply("e2", DUE + timedelta(minutes=5)))

    token = auth.mint(SECRET, "acme", "sup-1", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)

        async def recorded() -> dict[str, case_pb2.ReportValue] | None:
            values = await email_report(stub, True)
            return values if values["email_answered"].value == 2 else None

        clock.now = DUE - timedelta(minutes=1)
        values = await eventually(recorded)
        assert values["email_received"].value == 3
        assert values["email_answered_within_target"].value == 1  # e1; e2 is 5 minutes late
        assert values["email_pending"].value == 1  # e3: a minute before it is due
        assert values["email_service_level"].value == pytest.approx(1 / 2)

        clock.now = DUE + timedelta(minutes=1)  # e3 is now overdue
        values = await email_report(stub, True)
        assert values["email_pending"].value == 0
        assert values["email_service_level"].value == pytest.approx(1 / 3)

        # Every hour counted: all three were due on Saturday at 17:55, none answered by then.
        values = await email_report(stub, False)
        assert values["email_answered_within_target"].value == 0
        assert values["email_service_level"].value == 0

    other = auth.mint(SECRET, "globex", "sup-2", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", other) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await email_report(case_pb2_grpc.CaseServiceStub(ch), True)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "business hours" in (err.value.details() or "")


def test_business_hours_must_name_a_calendar(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("acme: seoul-office", "acme: head-office"), encoding="utf-8")
    with pytest.raises(policy.PolicyError) as err:
        policy.load(path)
    assert "business_hours.acme" in str(err.value) and "head-office" in str(err.value)
    path.write_text(POLICY, encoding="utf-8")
    loaded = policy.load(path)
    assert loaded.business_calendar("acme") is not None
    assert loaded.business_calendar("globex") is None
    assert policy.load(None).business_calendar("demo") is not None  # the embedded demo's

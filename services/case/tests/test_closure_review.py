"""Closure review: the real case service over gRPC on SQLite, with a policy file that makes
complaints wait for a reviewer's sign-off and every other case for the customer's confirmation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "closure-test-secret"
S = case_pb2
POLICY = """
closure:
  - tenant: acme
    case_types: [complaint]
    require: review
  - tenant: "*"
    require: confirmation
    confirm_within: 5d
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(nats_url: str, tmp_path: Path, clock: Clock) -> AsyncIterator[CaseApp]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'case.db'}",
        CASE_GRPC_PORT=0,
        CASE_POLICY_FILE=str(policy),
        SWITCHBOARD_AUTH_SECRET=SECRET,
        SHUTDOWN_GRACE_SECONDS=1.0,
    )
    app = bootstrap(settings, clock=clock, run_scheduler=False)
    await app.start()
    yield app
    await app.stop()


class Caller:
    def __init__(self, app: CaseApp, subject: str, role: str) -> None:
        self._channel = sb_grpc.channel(
            f"127.0.0.1:{app.port}", auth.mint(SECRET, "acme", subject, [role])
        )
        self.stub: Any = case_pb2_grpc.CaseServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()


@pytest.fixture
async def people(app: CaseApp) -> AsyncIterator[dict[str, Caller]]:
    callers = {
        "agent": Caller(app, "agent-1", "agent"),
        "lead": Caller(app, "lead-1", "team_lead"),
        "lead2": Caller(app, "lead-2", "team_lead"),
        "qa": Caller(app, "qa-1", "qa"),
        "sup": Caller(app, "sup-1", "supervisor"),
    }
    yield callers
    for c in callers.values():
        await c.close()


async def resolved_case(agent: Any, case_type: int, by: Any | None = None) -> case_pb2.Case:
    case = await agent.CreateCase(
        S.CreateCaseRequest(
            subject="Billed twice",
            case_type=case_type,
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL, value="ana@example.com"
                )
            ],
        )
    )
    await agent.AssignCase(S.AssignCaseRequest(case_id=case.case_id, agent_id="agent-1"))
    return await (by or agent).UpdateCaseStatus(
        S.UpdateCaseStatusRequest(case_id=case.case_id, status=S.CASE_STATUS_RESOLVED)
    )


async def trail(sup: Any, case_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    t = await sup.GetAuditTrail(S.GetAuditTrailRequest(case_id=case_id))
    assert t.intact
    return [(e.actor, e.action, json.loads(e.data_json)) for e in t.entries]


async def fails(code: grpc.StatusCode, call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return err.value.details() or ""


async def test_a_resolved_complaint_waits_for_a_reviewer_who_approves(
    people: dict[str, Caller],
) -> None:
    agent, lead, sup = people["agent"].stub, people["lead"].stub, people["sup"].stub
    case = await resolved_case(agent, S.CASE_TYPE_COMPLAINT)
    assert case.status == S.CASE_STATUS_PENDING_REVIEW
    assert case.resolved_at.seconds  # resolved, for the SLA and the survey
    # The agent cannot sign off its own work, nor close around the review.
    await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        agent.ReviewClosure(S.ReviewClosureRequest(case_id=case.case_id, approve=True)),
    )
    await fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        agent.UpdateCaseStatus(
            S.UpdateCaseStatusRequest(case_id=case.case_id, status=S.CASE_STATUS_CLOSED)
        ),
    )
    # QA scores work; it does not sign off closures.
    await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        people["qa"].stub.ReviewClosure(S.ReviewClosureRequest(case_id=case.case_id, approve=True)),
    )
    closed = await lead.ReviewClosure(
        S.ReviewClosureRequest(case_id=case.reference, approve=True, note="checked the refund")
    )
    assert closed.status == S.CASE_STATUS_CLOSED and closed.closed_at.seconds
    await fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        lead.ReviewClosure(S.ReviewClosureRequest(case_id=case.case_id, approve=True)),
    )
    steps = [
        (actor, action, data.get("to")) for actor, action, data in await trail(sup, case.case_id)
    ]
    assert steps[-4:] == [
        ("agent-1", "status_changed", "resolved"),
        ("agent-1", "status_changed", "pending_review"),
        ("lead-1", "note_added", None),
        ("lead-1", "closure_approved", "closed"),
    ]


async def test_a_case_awaiting_closure_is_resolved_for_the_backlog(
    people: dict[str, Caller], clock: Clock
) -> None:
    case = await resolved_case(people["agent"].stub, S.CASE_TYPE_COMPLAINT)
    assert case.status == S.CASE_STATUS_PENDING_REVIEW
    clock.now += timedelta(hours=1)
    request = S.GetReportRequest(kind=S.REPORT_KIND_BACKLOG, interval="day")
    getattr(request, "from").FromDatetime(clock.now - timedelta(days=1))
    request.to.FromDatetime(clock.now + timedelta(days=1))
    report = await people["lead"].stub.GetReport(request)
    backlog = [v.value for r in report.rows for v in r.values if v.name == "backlog" and v.defined]
    assert backlog and set(backlog) == {0.0}  # resolved: out of the backlog while it waits


async def test_a_rejected_closure_goes_back_to_the_agent_with_the_note(
    people: dict[str, Caller],
) -> None:
    agent, lead, sup = people["agent"].stub, people["lead"].stub, people["sup"].stub
    case = await resolved_case(agent, S.CASE_TYPE_COMPLAINT)
    details = await fails(
        grpc.StatusCode.INVALID_ARGUMENT,
        lead.ReviewClosure(S.ReviewClosureRequest(case_id=case.case_id, approve=False)),
    )
    assert "note" in details
    reopened = await lead.ReviewClosure(
        S.ReviewClosureRequest(case_id=case.case_id, approve=False, note="Refund not issued yet")
    )
    assert reopened.status == S.CASE_STATUS_IN_PROGRESS
    assert reopened.assigned_agent_id == "agent-1" and reopened.reopened_count == 1
    assert not reopened.resolved_at.seconds
    full = await agent.GetCase(S.GetCaseRequest(case_id=case.case_id))
    assert [n.text for n in full.notes][-1] == "Refund not issued yet"
    assert full.notes[-1].author == "lead-1"
    _, action, data = (await trail(sup, case.case_id))[-1]
    assert action == "closure_rejected" and data["note"] == "Refund not issued yet"
    # Resolved again, it waits for review again.
    again = await agent.UpdateCaseStatus(
        S.UpdateCaseStatusRequest(case_id=case.case_id, status=S.CASE_STATUS_RESOLVED)
    )
    assert again.status == S.CASE_STATUS_PENDING_REVIEW


async def test_a_reviewer_does_not_sign_off_a_closure_of_their_own(
    people: dict[str, Caller],
) -> None:
    lead = people["lead"].stub
    case = await resolved_case(people["agent"].stub, S.CASE_TYPE_COMPLAINT, by=lead)
    assert case.status == S.CASE_STATUS_PENDING_REVIEW
    details = await fails(
        grpc.StatusCode.PERMISSION_DENIED,
        lead.ReviewClosure(S.ReviewClosureRequest(case_id=case.case_id, approve=True)),
    )
    assert "resolved" in details
    closed = await people["lead2"].stub.ReviewClosure(
        S.ReviewClosureRequest(case_id=case.case_id, approve=True)
    )
    assert closed.status == S.CASE_STATUS_CLOSED


async def test_the_customer_confirms_or_disputes_and_silence_closes(
    app: CaseApp, people: dict[str, Caller], clock: Clock
) -> None:
    agent, sup = people["agent"].stub, people["sup"].stub
    confirmed = await resolved_case(agent, S.CASE_TYPE_INQUIRY)
    assert confirmed.status == S.CASE_STATUS_PENDING_CONFIRMATION
    await fails(
        grpc.StatusCode.FAILED_PRECONDITION,
        people["lead"].stub.ReviewClosure(
            S.ReviewClosureRequest(case_id=confirmed.case_id, approve=True)
        ),
    )
    closed = await agent.ConfirmClosure(
        S.ConfirmClosureRequest(case_id=confirmed.case_id, confirmed=True)
    )
    assert closed.status == S.CASE_STATUS_CLOSED
    actor, action, data = (await trail(sup, confirmed.case_id))[-1]
    assert (actor, action, data["to"]) == ("agent-1", "closure_confirmed", "closed")

    disputed = await resolved_case(agent, S.CASE_TYPE_INCIDENT)
    await fails(
        grpc.StatusCode.INVALID_ARGUMENT,
        agent.ConfirmClosure(S.ConfirmClosureRequest(case_id=disputed.case_id, confirmed=False)),
    )
    back = await agent.ConfirmClosure(
        S.ConfirmClosureRequest(
            case_id=disputed.case_id, confirmed=False, comment="Still charged twice"
        )
    )
    assert back.status == S.CASE_STATUS_IN_PROGRESS and back.reopened_count == 1
    _, action, data = (await trail(sup, disputed.case_id))[-1]
    assert action == "closure_disputed"
    # The customer's words are a note (sealed with the customer's key), not in the audit chain.
    full = await agent.GetCase(S.GetCaseRequest(case_id=disputed.case_id))
    [note] = [n for n in full.notes if n.note_id == data["note_id"]]
    assert (note.author, note.text) == ("customer", "Still charged twice")

    silent = await resolved_case(agent, S.CASE_TYPE_INQUIRY)
    assert app.scheduler is not None
    clock.now += timedelta(days=5) - timedelta(minutes=1)
    await app.scheduler.run_once()
    case = await agent.GetCase(S.GetCaseRequest(case_id=silent.case_id))
    assert case.status == S.CASE_STATUS_PENDING_CONFIRMATION
    clock.now += timedelta(minutes=2)
    await app.scheduler.run_once()
    case = await agent.GetCase(S.GetCaseRequest(case_id=silent.case_id))
    assert case.status == S.CASE_STATUS_CLOSED
    actor, action, data = (await trail(sup, silent.case_id))[-1]
    assert (actor, action, data["to"]) == ("scheduler", "status_changed", "closed")
    assert "5d" in data["reason"]


async def test_an_agents_wrap_up_as_resolved_also_waits_for_the_closure(
    app: CaseApp, people: dict[str, Caller]
) -> None:
    assert app.handlers is not None
    contact = contact_pb2.Contact(
        contact_id="w-1",
        tenant="acme",
        channel=contact_pb2.CHANNEL_CHAT,
        identities=[
            contact_pb2.CustomerIdentity(
                kind=contact_pb2.IDENTITY_KIND_EMAIL, value="bo@example.com"
            )
        ],
        content=[contact_pb2.ContentPart(content_type="text/plain", text="Password reset?")],
    )
    meta = lambda: events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test")  # noqa: E731
    await app.handlers.on_contact_created(events_pb2.ContactCreated(meta=meta(), contact=contact))
    await app.handlers.on_contact_assigned(
        events_pb2.ContactAssigned(meta=meta(), contact_id="w-1", agent_id="agent-1")
    )
    await app.handlers.on_contact_ended(
        events_pb2.ContactEnded(
            meta=meta(), contact_id="w-1", agent_id="agent-1", wrap_up_code="resolved"
        )
    )
    listed = await people["agent"].stub.ListCases(S.ListCasesRequest(contact_id="w-1"))
    [case] = listed.cases
    assert case.status == S.CASE_STATUS_PENDING_CONFIRMATION and case.resolved_at.seconds


def test_a_closure_rule_names_a_known_requirement(tmp_path: Path) -> None:
    from switchboard.case.sla import policy

    bad = tmp_path / "bad.yaml"
    bad.write_text("closure:\n  - tenant: acme\n    require: sign-off\n")
    with pytest.raises(policy.PolicyError) as err:
        policy.load(bad)
    assert "closure[0].require" in str(err.value) and ":3" in str(err.value)

"""Part of issue 4 that must show, end to end: a real nats-server, real gRPC, the real database
(SQLite, and PostgreSQL when SWITCHBOARD_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.fakes import FakeClock
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "case-lifecycle-secret"
KIND = contact_pb2.IdentityKind


@pytest.fixture
def clock() -> FakeClock[datetime]:
    return FakeClock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))  # Monday 09:00 in Berlin


@pytest.fixture
async def app(
    nats_url: str, database_url: str, clock: FakeClock[datetime]
) -> AsyncIterator[CaseApp]:
    settings = CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        SWITCHBOARD_TENANTS="acme,demo",
        SHUTDOWN_GRACE_SECONDS=1.0,
    )
    app = bootstrap(settings, clock=clock, run_scheduler=False)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def stub(app: CaseApp) -> AsyncIterator[case_pb2_grpc.CaseServiceStub]:
    token = auth.mint(SECRET, "acme", "agent-7", ["agent"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", token) as ch:
        yield case_pb2_grpc.CaseServiceStub(ch)


@pytest.fixture
async def auditor(app: CaseApp) -> AsyncIterator[case_pb2_grpc.CaseServiceStub]:
    """A QA evaluator's stub: audit trails are not an agent's to read."""
    token = auth.mint(SECRET, "acme", "qa-1", ["qa"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", token) as ch:
        yield case_pb2_grpc.CaseServiceStub(ch)


def contact_created(
    contact_id: str,
    channel: int,
    identities: list[tuple[int, str]],
    text: str,
    tenant: str = "acme",
    case_id: str = "",
) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta(tenant, channel, "test"),
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant=tenant,
            channel=channel,  # type: ignore[arg-type]
            identities=[contact_pb2.CustomerIdentity(kind=k, value=v) for k, v in identities],  # type: ignore[arg-type]
            customer_name="Kim Ana",
            content=[contact_pb2.ContentPart(content_type="text/plain", text=text)] if text else [],
            case_id=case_id,
        ),
    )


async def test_one_customer_across_chat_email_and_voice(
    app: CaseApp,
    bus: Bus,
    stub: case_pb2_grpc.CaseServiceStub,
    auditor: case_pb2_grpc.CaseServiceStub,
) -> None:
    """Chat (visitor id + email), then email from the same address (its signature gives a phone
    number), then a call from that number dialled nationally: one customer, one case, three
    contacts. Publishing any of it again changes nothing."""
    chat = contact_created(
        "chat-1",
        contact_pb2.CHANNEL_CHAT,
        [
            (KIND.IDENTITY_KIND_CHAT_VISITOR, "visitor-42"),
            (KIND.IDENTITY_KIND_EMAIL, "Ana@Example.com"),
        ],
        "My router keeps rebooting",
    )
    email = contact_created(
        "email-1",
        contact_pb2.CHANNEL_EMAIL,
        [
            (KIND.IDENTITY_KIND_EMAIL, "ana@example.com"),
            (KIND.IDENTITY_KIND_PHONE, "+82 10-1234-5678"),
        ],
        "Following up on the chat",
    )
    call = contact_created(
        "call-1", contact_pb2.CHANNEL_VOICE, [(KIND.IDENTITY_KIND_PHONE, "010-1234-5678")], ""
    )
    for event in (chat, email, call):
        await bus.publish(event)
        # Each contact is recorded before the next arrives, as in life.
        contact_id = event.contact.contact_id

        async def recorded(cid: str = contact_id) -> bool:
            r = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=cid))
            return bool(r.cases)

        await eventually(recorded)

    # The same events again: under their own ids (JetStream de-duplicates), under new ids (the
    # contact id is the key), and with the same id past JetStream (the consumer's record is).
    await bus.publish(chat)
    again = events_pb2.ContactCreated()
    again.CopyFrom(email)
    again.meta.event_id = events.new_id()
    await bus.publish(again)
    await bus.js.publish(
        "contact.acme.voice.created",
        call.SerializeToString(),
        headers={events.TYPE_HEADER: "switchboard.v1.ContactCreated", "Nats-Msg-Id": "other"},
    )
    marker = contact_created(
        "marker", contact_pb2.CHANNEL_CHAT, [(KIND.IDENTITY_KIND_EMAIL, "else@example.com")], "x"
    )
    await bus.publish(marker)  # handled after the duplicates on the same ordered stream

    async def marker_seen() -> bool:
        r = await stub.ListCases(case_pb2.ListCasesRequest(contact_id="marker"))
        return bool(r.cases)

    await eventually(marker_seen)
    assert app.bus is not None
    assert app.bus.stats()["case"]["processed"] >= 6  # the duplicates were delivered, and applied

    listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id="call-1"))
    assert len(listed.cases) == 1
    case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].reference))
    assert [c.contact_id for c in case.contacts] == ["chat-1", "email-1", "call-1"]
    assert [c.channel for c in case.contacts] == [
        contact_pb2.CHANNEL_CHAT,
        contact_pb2.CHANNEL_EMAIL,
        contact_pb2.CHANNEL_VOICE,
    ]
    assert sum(len(c.messages) for c in case.contacts) == 2  # chat and email text, once each
    assert case.reference.startswith("C-") and len(case.reference) == 8
    assert {(i.kind, i.value) for i in case.customer.identities} == {
        (KIND.IDENTITY_KIND_CHAT_VISITOR, "visitor-42"),
        (KIND.IDENTITY_KIND_EMAIL, "ana@example.com"),
        (KIND.IDENTITY_KIND_PHONE, "+821012345678"),
    }
    history = await stub.GetCustomerHistory(
        case_pb2.GetCustomerHistoryRequest(customer_id=case.customer.customer_id)
    )
    assert [c.case_id for c in history.cases] == [case.case_id]
    everything = await stub.ListCases(case_pb2.ListCasesRequest())
    assert len(everything.cases) == 2  # Ana's, and the marker's
    trail = await auditor.GetAuditTrail(case_pb2.GetAuditTrailRequest(case_id=case.case_id))
    assert trail.intact
    added = [e for e in trail.entries if e.action == "contact_added"]
    assert len(added) == 3


async def test_invalid_transition_names_it(
    stub: case_pb2_grpc.CaseServiceStub, auditor: case_pb2_grpc.CaseServiceStub
) -> None:
    case = await stub.CreateCase(
        case_pb2.CreateCaseRequest(
            template="password-reset",
            identities=[
                contact_pb2.CustomerIdentity(kind=KIND.IDENTITY_KIND_EMAIL, value="a@b.example")
            ],
        )
    )
    assert case.case_type == case_pb2.CASE_TYPE_SERVICE_REQUEST
    assert case.subject == "Password reset"
    for status in (case_pb2.CASE_STATUS_RESOLVED, case_pb2.CASE_STATUS_CLOSED):
        case = await stub.UpdateCaseStatus(
            case_pb2.UpdateCaseStatusRequest(case_id=case.reference, status=status)
        )
    assert case.status == case_pb2.CASE_STATUS_CLOSED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.UpdateCaseStatus(
            case_pb2.UpdateCaseStatusRequest(
                case_id=case.case_id, status=case_pb2.CASE_STATUS_IN_PROGRESS
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == "cannot go from closed to in_progress"
    trail = await auditor.GetAuditTrail(case_pb2.GetAuditTrailRequest(case_id=case.case_id))
    changes = [e.data_json for e in trail.entries if e.action == "status_changed"]
    assert changes == [
        '{"from":"new","to":"resolved"}',
        '{"from":"resolved","to":"closed"}',
    ]
    assert {e.actor for e in trail.entries if e.action == "status_changed"} == {"agent-7"}


async def test_bad_callers_and_bad_tokens(
    app: CaseApp, stub: case_pb2_grpc.CaseServiceStub, clock: FakeClock[datetime]
) -> None:
    for i in range(3):
        clock.now += timedelta(minutes=1)
        await stub.CreateCase(
            case_pb2.CreateCaseRequest(
                subject=f"case {i}",
                customer_name="x",
                identities=[
                    contact_pb2.CustomerIdentity(kind=KIND.IDENTITY_KIND_PARTNER_ID, value=f"p-{i}")
                ],
            )
        )
    page = await stub.ListCases(
        case_pb2.ListCasesRequest(page_size=2, order=case_pb2.CASE_ORDER_CREATED_ASC)
    )
    assert [c.subject for c in page.cases] == ["case 0", "case 1"]
    rest = await stub.ListCases(
        case_pb2.ListCasesRequest(
            page_size=2, order=case_pb2.CASE_ORDER_CREATED_ASC, page_token=page.next_page_token
        )
    )
    assert [c.subject for c in rest.cases] == ["case 2"]
    body, _, sig = page.next_page_token.partition(".")
    tampered = body[:-1] + ("A" if body[-1] != "A" else "B") + "." + sig
    for token in (tampered, page.next_page_token + "x"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListCases(
                case_pb2.ListCasesRequest(
                    page_size=2, order=case_pb2.CASE_ORDER_CREATED_ASC, page_token=token
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (err.value.details() or "")

    stranger = auth.mint(SECRET, "globex", "partner-9", ["partner"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", stranger) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await case_pb2_grpc.CaseServiceStub(ch).ListCases(case_pb2.ListCasesRequest())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "globex" in (err.value.details() or "")

    # Another served tenant sees none of acme's cases, by id or by reference.
    other = auth.mint(SECRET, "demo", "partner-2", ["partner"], scopes=["cases:read"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", other) as ch:
        theirs = case_pb2_grpc.CaseServiceStub(ch)
        assert not (await theirs.ListCases(case_pb2.ListCasesRequest())).cases
        for key in (page.cases[0].case_id, page.cases[0].reference):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await theirs.GetCase(case_pb2.GetCaseRequest(case_id=key))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_sorts_filters_and_pages_by_priority(
    stub: case_pb2_grpc.CaseServiceStub, clock: FakeClock[datetime]
) -> None:
    priorities = [
        case_pb2.CASE_PRIORITY_LOW,
        case_pb2.CASE_PRIORITY_URGENT,
        case_pb2.CASE_PRIORITY_NORMAL,
        case_pb2.CASE_PRIORITY_URGENT,
        case_pb2.CASE_PRIORITY_HIGH,
    ]
    for i, priority in enumerate(priorities):
        clock.now += timedelta(minutes=1)
        await stub.CreateCase(
            case_pb2.CreateCaseRequest(
                subject=f"p{i}",
                priority=priority,
                queue="it" if i % 2 else "hr",
                case_type=case_pb2.CASE_TYPE_INCIDENT,
                customer_id="",
                identities=[
                    contact_pb2.CustomerIdentity(
                        kind=KIND.IDENTITY_KIND_PARTNER_ID, value=f"crm-{i}"
                    )
                ],
            )
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListCases(
            case_pb2.ListCasesRequest(
                page_size=2, order=case_pb2.CASE_ORDER_PRIORITY_DESC, page_token=token
            )
        )
        seen += [c.subject for c in page.cases]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["p3", "p1", "p4", "p2", "p0"]  # most urgent first, then newest
    it = await stub.ListCases(case_pb2.ListCasesRequest(queue="it"))
    assert sorted(c.subject for c in it.cases) == ["p1", "p3"]
    urgent = await stub.ListCases(
        case_pb2.ListCasesRequest(priority=case_pb2.CASE_PRIORITY_URGENT, queue="hr")
    )
    assert not urgent.cases
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListCases(case_pb2.ListCasesRequest(order=99))  # type: ignore[arg-type]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateCase(case_pb2.CreateCaseRequest(subject="no customer"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "customer_id" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateCase(
            case_pb2.CreateCaseRequest(
                subject="bad phone",
                identities=[
                    contact_pb2.CustomerIdentity(kind=KIND.IDENTITY_KIND_PHONE, value="call me")
                ],
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "identities[0].value" in (err.value.details() or "")

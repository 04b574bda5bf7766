"""The case service end to end: a real nats-server, the real database, CaseService over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "case-test-secret"
CHAT = contact_pb2.CHANNEL_CHAT
EMAIL = contact_pb2.IDENTITY_KIND_EMAIL


def case_settings(nats_url: str, database_url: str, **extra: Any) -> CaseSettings:
    return CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        **extra,
    )


@pytest.fixture
async def app(nats_url: str, database_url: str) -> AsyncIterator[CaseApp]:
    app = bootstrap(case_settings(nats_url, database_url, SHUTDOWN_GRACE_SECONDS=1.0))
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def stub(app: CaseApp) -> AsyncIterator[case_pb2_grpc.CaseServiceStub]:
    token = auth.mint(SECRET, "acme", "partner-1", ["partner"], scopes=["cases:read"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", token) as ch:
        yield case_pb2_grpc.CaseServiceStub(ch)


def created(contact_id: str, email: str, text: str = "hello") -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=contact_id,
            tenant="acme",
            channel=CHAT,
            identities=[contact_pb2.CustomerIdentity(kind=EMAIL, value=email)],
            customer_name="Ana",
            content=[contact_pb2.ContentPart(content_type="text/plain", text=text)],
        ),
    )


def message_added(contact_id: str, message_id: str) -> events_pb2.MessageAdded:
    return events_pb2.MessageAdded(
        meta=events.new_meta("acme", CHAT, "test"),
        message=contact_pb2.Message(
            message_id=message_id,
            contact_id=contact_id,
            author=contact_pb2.AUTHOR_CUSTOMER,
            parts=[contact_pb2.ContentPart(content_type="text/plain", text="more")],
        ),
    )


async def listed(stub: case_pb2_grpc.CaseServiceStub, n: int) -> list[case_pb2.Case] | None:
    response = await stub.ListCases(case_pb2.ListCasesRequest(page_size=200))
    return list(response.cases) if len(response.cases) == n else None


async def test_events_become_a_case(
    app: CaseApp, bus: Bus, stub: case_pb2_grpc.CaseServiceStub
) -> None:
    # The message overtakes its contact: the bus redelivers it until the contact is recorded.
    await bus.publish(message_added("c-1", "m-1"))
    await bus.publish(created("c-1", "ana@example.com", "My invoice is wrong"))
    await bus.publish(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", CHAT, "test"), contact_id="c-1", agent_id="agent-7"
        )
    )

    async def assigned_with_messages() -> case_pb2.Case | None:
        cases = await listed(stub, 1)
        if not cases:
            return None
        case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=cases[0].case_id))
        ready = case.contacts and case.contacts[0].status == "assigned"
        return case if ready and len(case.contacts[0].messages) == 2 else None

    case = await eventually(assigned_with_messages)
    assert case.tenant == "acme"
    assert case.status == case_pb2.CASE_STATUS_ASSIGNED
    assert case.assigned_agent_id == "agent-7"
    assert case.subject == "My invoice is wrong"
    assert [(i.kind, i.value) for i in case.customer.identities] == [(EMAIL, "ana@example.com")]
    assert {m.message_id for m in case.contacts[0].messages} == {"c-1:initial", "m-1"}

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetCase(case_pb2.GetCaseRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "case_id" in (err.value.details() or "")

    other = auth.mint(SECRET, "globex", "partner-2", ["partner"], scopes=["cases:read"])
    async with sb_grpc.channel(f"127.0.0.1:{app.port}", other) as ch:
        theirs = case_pb2_grpc.CaseServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await theirs.GetCase(case_pb2.GetCaseRequest(case_id=case.case_id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert not (await theirs.ListCases(case_pb2.ListCasesRequest())).cases

    async with sb_grpc.channel(f"127.0.0.1:{app.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await case_pb2_grpc.CaseServiceStub(ch).ListCases(case_pb2.ListCasesRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_list_cases_pages_and_filters(
    app: CaseApp, bus: Bus, stub: case_pb2_grpc.CaseServiceStub
) -> None:
    await bus.publish_many(created(f"c-{i}", f"customer{i}@example.com") for i in range(5))
    everything = await eventually(lambda: listed(stub, 5))
    times = [c.created_at.ToNanoseconds() for c in everything]
    assert times == sorted(times, reverse=True)

    seen: list[str] = []
    token, pages = "", 0
    while True:
        page = await stub.ListCases(case_pb2.ListCasesRequest(page_size=2, page_token=token))
        pages += 1
        seen += [c.case_id for c in page.cases]
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [c.case_id for c in everything]
    assert len(set(seen)) == 5

    first = await stub.ListCases(case_pb2.ListCasesRequest(page_size=2))
    token = first.next_page_token
    bad_requests = [
        case_pb2.ListCasesRequest(
            page_size=2, page_token=("B" if token[0] != "B" else "C") + token[1:]
        ),
        case_pb2.ListCasesRequest(page_size=2, page_token="not-a-token"),
        # A token replayed with other filters.
        case_pb2.ListCasesRequest(page_size=2, page_token=token, status=case_pb2.CASE_STATUS_NEW),
        case_pb2.ListCasesRequest(page_size=201),
        case_pb2.ListCasesRequest(page_size=-1),
    ]
    for request in bad_requests:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListCases(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    target = everything[3]
    by_customer = await stub.ListCases(
        case_pb2.ListCasesRequest(customer_id=target.customer.customer_id)
    )
    assert [c.case_id for c in by_customer.cases] == [target.case_id]
    by_contact = await stub.ListCases(
        case_pb2.ListCasesRequest(contact_id=target.contacts[0].contact_id)
    )
    assert [c.case_id for c in by_contact.cases] == [target.case_id]
    resolved = await stub.ListCases(case_pb2.ListCasesRequest(status=case_pb2.CASE_STATUS_RESOLVED))
    assert not resolved.cases


async def test_malformed_events_are_terminated(
    app: CaseApp, bus: Bus, stub: case_pb2_grpc.CaseServiceStub
) -> None:
    await bus.js.publish(
        "contact.acme.chat.created",
        b"\xff\xfe not a protobuf",
        headers={events.TYPE_HEADER: "switchboard.v1.ContactCreated", "Nats-Msg-Id": "bad-1"},
    )
    # Well-formed, but unusable: no contact id.
    await bus.publish(created("", "nobody@example.com"))
    await bus.publish(created("c-good", "ana@example.com"))

    cases = await eventually(lambda: listed(stub, 1))
    assert cases[0].contacts[0].contact_id == "c-good"

    async def terminated() -> int | None:
        assert app.bus is not None
        return app.bus.stats()["case"]["terminated"] >= 2 or None

    assert await eventually(terminated)


async def test_a_backlog_is_recorded_in_batched_transactions(
    nats_url: str, database_url: str, bus: Bus
) -> None:
    """Events waiting on the stream (after downtime, or in a burst) are committed a batch per
    transaction, and every one of them is recorded exactly once, redeliveries included."""
    backlog: list[events_pb2.ContactCreated | events_pb2.MessageAdded] = []
    for i in range(30):
        backlog.append(created(f"c{i}", f"customer{i}@example.com"))
        backlog.append(message_added(f"c{i}", f"m{i}"))
    backlog.append(message_added("c3", "m3"))  # a redelivery that got past de-duplication
    backlog[-1].meta.event_id = events.new_id()
    await bus.publish_many(backlog)
    app = bootstrap(case_settings(nats_url, database_url))
    await app.start()
    try:
        token = auth.mint(SECRET, "acme", "partner-1", ["partner"], scopes=["cases:read"])
        async with sb_grpc.channel(f"127.0.0.1:{app.port}", token) as ch:
            stub = case_pb2_grpc.CaseServiceStub(ch)
            cases = await eventually(lambda: listed(stub, 30))
            full = [await stub.GetCase(case_pb2.GetCaseRequest(case_id=c.case_id)) for c in cases]
        assert sorted(len(c.contacts[0].messages) for c in full) == [2] * 30
        assert app.bus is not None
        stats = app.bus.stats()["case"]
        assert stats["processed"] == len(backlog)
        assert stats["batched"] == len(backlog)  # no batch had to fall back
    finally:
        await app.stop()


def assigned(contact_id: str, agent_id: str) -> events_pb2.ContactAssigned:
    return events_pb2.ContactAssigned(
        meta=events.new_meta("acme", CHAT, "test"),
        contact_id=contact_id,
        agent_id=agent_id,
        offer_id=f"of-{contact_id}",
    )


async def test_a_bad_event_in_a_batch_is_settled_alone_and_the_rest_commits(
    nats_url: str, database_url: str, bus: Bus
) -> None:
    """In one fetched batch, an invalid event is parked and an event that is not ready yet (its
    contact is not recorded) is undone and redelivered on its own, while every other event of
    the batch commits in the batch's transaction; once its contact arrives, it is applied."""
    backlog: list[events_pb2.ContactCreated | events_pb2.ContactAssigned] = []
    for i in range(10):
        backlog.append(created(f"c{i}", f"customer{i}@example.com"))
        if i == 4:
            backlog.append(assigned("c4", ""))  # invalid: no agent
            backlog.append(assigned("ghost", "agent-7"))  # not ready: no such contact yet
        backlog.append(assigned(f"c{i}", "agent-1"))
    await bus.publish_many(backlog)
    app = bootstrap(case_settings(nats_url, database_url, CASE_CONSUMER_ACK_WAIT_SECONDS=2))
    await app.start()
    try:
        assert app.bus is not None
        bus_stats = app.bus.stats

        async def batched() -> bool | None:
            # The batch's good events are acknowledged first, then the set-aside ones settled.
            stats = bus_stats()["case"]
            return (stats["batched"] >= 20 and stats["terminated"] >= 1) or None

        await eventually(batched)
        stats = bus_stats()["case"]
        assert stats["batched"] == 20  # every good event, in batches
        assert stats["terminated"] == 1  # the invalid one, parked
        token = auth.mint(SECRET, "acme", "partner-1", ["partner"], scopes=["cases:read"])
        async with sb_grpc.channel(f"127.0.0.1:{app.port}", token) as ch:
            stub = case_pb2_grpc.CaseServiceStub(ch)
            cases = await eventually(lambda: listed(stub, 10))
            assert {c.assigned_agent_id for c in cases} == {"agent-1"}
            # The contact the early assignment waited for arrives: the redelivery applies it.
            await bus.publish(created("ghost", "ghost@example.com"))

            async def ghost_assigned() -> bool | None:
                found = await stub.ListCases(case_pb2.ListCasesRequest(contact_id="ghost"))
                return bool(found.cases and found.cases[0].assigned_agent_id == "agent-7") or None

            await eventually(ghost_assigned)
    finally:
        await app.stop()


# ---- roles: what an agent may not do (switchboard.core.roles) --------------------------------


def stub_as(app: CaseApp, subject: str, role: str) -> tuple[grpc.aio.Channel, Any]:
    channel = sb_grpc.channel(f"127.0.0.1:{app.port}", auth.mint(SECRET, "acme", subject, [role]))
    return channel, case_pb2_grpc.CaseServiceStub(channel)


async def two_customers_cases(bus: Bus, stub: case_pb2_grpc.CaseServiceStub) -> list[case_pb2.Case]:
    await bus.publish(created("r-1", "ana@example.com"))
    await bus.publish(created("r-2", "bo@example.com"))
    return await eventually(lambda: listed(stub, 2))


async def test_an_agent_cannot_merge_customers(
    app: CaseApp, bus: Bus, stub: case_pb2_grpc.CaseServiceStub
) -> None:
    first, second = await two_customers_cases(bus, stub)
    merge = case_pb2.MergeCustomersRequest(
        target_customer_id=first.customer.customer_id,
        source_customer_id=second.customer.customer_id,
    )
    channel, agent = stub_as(app, "agent-7", "agent")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent.MergeCustomers(merge)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert {c.customer.customer_id for c in await listed(stub, 2) or []} == {
        first.customer.customer_id,
        second.customer.customer_id,
    }
    channel, supervisor = stub_as(app, "sup-1", "supervisor")
    async with channel:
        merged = await supervisor.MergeCustomers(merge)
    assert merged.customer_id == first.customer.customer_id


async def test_an_agent_assigns_a_case_only_to_itself(
    app: CaseApp, bus: Bus, stub: case_pb2_grpc.CaseServiceStub
) -> None:
    case, _ = await two_customers_cases(bus, stub)
    channel, agent = stub_as(app, "agent-7", "agent")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent.AssignCase(
                case_pb2.AssignCaseRequest(case_id=case.case_id, agent_id="agent-8")
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        taken = await agent.AssignCase(
            case_pb2.AssignCaseRequest(case_id=case.case_id, agent_id="agent-7")
        )
        assert taken.assigned_agent_id == "agent-7"
    channel, lead = stub_as(app, "lead-1", "team_lead")
    async with channel:
        given = await lead.AssignCase(
            case_pb2.AssignCaseRequest(case_id=case.case_id, agent_id="agent-8")
        )
    assert given.assigned_agent_id == "agent-8"


async def test_an_agent_cannot_read_audit_trails(
    app: CaseApp, bus: Bus, stub: case_pb2_grpc.CaseServiceStub
) -> None:
    case, _ = await two_customers_cases(bus, stub)
    request = case_pb2.GetAuditTrailRequest(case_id=case.case_id)
    channel, agent = stub_as(app, "agent-7", "agent")
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent.GetAuditTrail(request)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    channel, qa = stub_as(app, "qa-1", "qa")
    async with channel:
        assert (await qa.GetAuditTrail(request)).intact

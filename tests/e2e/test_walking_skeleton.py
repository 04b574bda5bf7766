"""A Korean chat customer reaches the Korean-speaking agent, the reply comes back, and the case
holds both messages and the assignment; one contact is one trace; a duplicate is one case."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
import socketio
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.agents import AgentClient
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

from .conftest import Customer

Platform = Any  # tests/e2e/conftest.py: the platform fixture
SECRET = "e2e-secret"  # the platform fixture's token secret

T = TypeVar("T")

QUESTION = "안녕하세요, 이번 달 요금 청구서에 대해 문의드립니다."
ANSWER = "안녕하세요 고객님, 상담원 김지은입니다. 확인해 드리겠습니다."


async def case_for(p: Platform, tenant: str, contact_id: str) -> case_pb2.Case | None:
    token = auth.mint(SECRET, tenant, "inbox", ["partner"], scopes=["cases:read"])
    async with sb_grpc.channel(p.case_target, token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
        if not listed.cases:
            return None
        return await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))


async def korean_conversation(
    p: Platform,
) -> tuple[str, AgentClient, AgentClient, Customer, socketio.AsyncClient]:
    ko = AgentClient(p.router_target, SECRET, "acme", "ko-agent")
    await ko.sign_in({"ko": 5, "en": 3}, {"billing": 4}, name="김지은")
    zh = AgentClient(p.router_target, SECRET, "acme", "zh-agent")
    await zh.sign_in({"zh": 5, "en": 4}, {"billing": 5}, name="王芳")

    customer = Customer()
    await customer.connect(
        p.chat_url,
        tenant="acme",
        name="김민수",
        email="Minsu.Kim@example.kr",
        language="ko",
        topic="billing",
    )
    ack = await customer.say(QUESTION)
    assert ack["ok"], ack
    contact_id = ack["contact_id"]

    offer = await ko.next_offer()
    assert offer.contact.contact_id == contact_id
    assert offer.contact.language == "ko"
    assert list(offer.contact.skills) == ["billing"]
    assignment = await ko.accept(offer)
    assert assignment.contact.customer_name == "김민수"
    assert (await customer.wait_status("assigned"))["agent_name"] == "김지은"

    desk = socketio.AsyncClient()
    agent_token = auth.mint(SECRET, "acme", "ko-agent", ["agent"])
    await desk.connect(
        p.chat_url,
        namespaces=["/agent"],
        auth={"token": agent_token},
        transports=["websocket"],
        wait_timeout=10,
    )
    joined = await desk.call("join", {"contact_id": contact_id}, namespace="/agent", timeout=15)
    assert joined["ok"], joined
    assert [m["text"] for m in joined["messages"] if m["author"] == "customer"] == [QUESTION]
    reply = await desk.call(
        "message", {"contact_id": contact_id, "text": ANSWER}, namespace="/agent", timeout=15
    )
    assert reply["ok"], reply
    got = await customer.next_from("agent")
    assert got["text"] == ANSWER
    return contact_id, ko, zh, customer, desk


# "authorised": chat, router and case each connect as their own NATS user, with the permissions
# `switchboard run` gives them, to a server that refuses anyone else and encrypts its store.
@pytest.mark.parametrize("nats_access", ["anonymous", "authorised"], indirect=True)
async def test_korean_customer_reaches_the_korean_agent_and_the_case_records_it(
    platform: Platform, nats_access: str, request: pytest.FixtureRequest
) -> None:
    contact_id, ko, zh, customer, desk = await korean_conversation(platform)
    try:
        assert zh.offers.empty()  # the Chinese speaker, idle longer, never saw it

        async def complete() -> case_pb2.Case | None:
            case = await case_for(platform, "acme", contact_id)
            if (
                case
                and case.contacts
                and len(case.contacts[0].messages) >= 2
                and case.assigned_agent_id
            ):
                return case
            return None

        case = await eventually(complete, "the case holding both messages and the assignment")
        assert case.assigned_agent_id == "ko-agent"
        assert case.status == case_pb2.CASE_STATUS_ASSIGNED
        assert case.customer.display_name == "김민수"
        assert (
            contact_pb2.CustomerIdentity(
                kind=contact_pb2.IDENTITY_KIND_EMAIL, value="minsu.kim@example.kr"
            )
            in case.customer.identities
        )
        [contact] = case.contacts
        assert (contact.contact_id, contact.channel, contact.language) == (
            contact_id,
            contact_pb2.CHANNEL_CHAT,
            "ko",
        )
        assert contact.agent_id == "ko-agent"
        texts = [(m.author, m.parts[0].text) for m in contact.messages]
        assert texts == [
            (contact_pb2.AUTHOR_CUSTOMER, QUESTION),
            (contact_pb2.AUTHOR_AGENT, ANSWER),
        ]
        # another tenant's token sees nothing of it
        assert await case_for(platform, "globex", contact_id) is None
        if nats_access == "authorised":  # and no service needed more than its permissions
            secured: SecuredNats = request.getfixturevalue("secured_nats")
            assert secured.violations() == []
    finally:
        await desk.disconnect()
        await customer.sio.disconnect()
        await ko.close()
        await zh.close()


async def test_one_contact_is_one_trace_across_chat_router_and_case(
    platform: Platform, span_exporter: InMemorySpanExporter
) -> None:
    _, ko, zh, customer, desk = await korean_conversation(platform)
    try:

        def consumer_spans(group: str, name: str) -> list[Any]:
            return [
                s
                for s in span_exporter.get_finished_spans()
                if s.name == name
                and (s.attributes or {}).get("messaging.consumer.group.name") == group
            ]

        async def case_saw_assignment() -> list[Any] | None:
            return consumer_spans("case", "process ContactAssigned") or None

        await eventually(case_saw_assignment, "the case service processing the assignment")
        spans = span_exporter.get_finished_spans()
        chat = [s for s in spans if s.name == "chat.customer_message"]
        router_created = consumer_spans("router", "process ContactCreated")
        case_created = consumer_spans("case", "process ContactCreated")
        accept = [s for s in spans if s.name == "switchboard.v1.RouterService/AcceptOffer"]
        case_assigned = consumer_spans("case", "process ContactAssigned")
        for group in (chat, router_created, case_created, accept, case_assigned):
            assert group, "a service left no span"
        trace_id = chat[0].context.trace_id
        for span in (router_created[0], case_created[0], accept[0], case_assigned[0]):
            assert span.context.trace_id == trace_id, span.name
        # and the spans are linked parent to child, not merely sharing an id
        assert router_created[0].parent is not None
    finally:
        await desk.disconnect()
        await customer.sio.disconnect()
        await ko.close()
        await zh.close()


async def test_the_same_event_delivered_twice_gives_one_case(platform: Platform) -> None:
    bus = await Bus.connect(platform.nats_url, source="test")
    try:
        event = events_pb2.ContactCreated(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
            contact=contact_pb2.Contact(
                contact_id="dup-1",
                tenant="acme",
                channel=contact_pb2.CHANNEL_CHAT,
                language="en",
                identities=[
                    contact_pb2.CustomerIdentity(
                        kind=contact_pb2.IDENTITY_KIND_CHAT_VISITOR, value="v-dup"
                    )
                ],
                content=[contact_pb2.ContentPart(content_type="text/plain", text="hello twice")],
            ),
        )
        first = await bus.publish(event)
        again = await bus.publish(event)  # same event id: JetStream's de-duplication drops it
        assert again.duplicate and again.seq == first.seq
        # a redelivery that got past de-duplication (another message id) must not duplicate either
        subject = events.subject_of(event)
        await bus.js.publish(
            subject,
            event.SerializeToString(),
            headers={
                events.TYPE_HEADER: "switchboard.v1.ContactCreated",
                "Nats-Msg-Id": "redelivery",
            },
        )
        marker = events_pb2.ContactCreated()
        marker.CopyFrom(event)
        marker.meta.event_id = events.new_id()
        marker.contact.contact_id = "after-dup"
        await bus.publish(marker)

        async def after() -> case_pb2.Case | None:
            return await case_for(platform, "acme", "after-dup")

        await eventually(after, "the event after the duplicates to be recorded")
        case = await case_for(platform, "acme", "dup-1")
        assert case is not None
        assert sorted(c.contact_id for c in case.contacts) == ["after-dup", "dup-1"]
        [dup] = [c for c in case.contacts if c.contact_id == "dup-1"]
        assert [m.parts[0].text for m in dup.messages] == ["hello twice"]
        token = auth.mint(SECRET, "acme", "inbox", ["partner"], scopes=["cases:read"])
        async with sb_grpc.channel(platform.case_target, token) as ch:
            listed = await case_pb2_grpc.CaseServiceStub(ch).ListCases(case_pb2.ListCasesRequest())
        assert len(listed.cases) == 1
    finally:
        await bus.drain()

"""The /customer namespace over real Socket.IO, with a real nats-server and the real ChatApp."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind

from switchboard.chat.bootstrap import ChatApp
from switchboard.v1 import contact_pb2, events_pb2

TENANT = "demo"


async def test_first_message_publishes_contact_created(
    chat: ChatApp, connect: Any, router: Any, span_exporter: Any
) -> None:
    customer = await connect.customer()
    session = await customer.next("session")
    assert session["contact_id"] is None and session["messages"] == []
    visitor_id = session["visitor_id"]
    assert visitor_id

    ack = await customer.call("message", {"text": "요금이 두 번 청구되었어요"})

    contact_id = ack["contact_id"]
    assert ack == {"ok": True, "message_id": f"{contact_id}:initial", "contact_id": contact_id}
    [(event, headers)] = await router.read(
        f"contact.{TENANT}.chat.created", events_pb2.ContactCreated, 1
    )
    assert event.meta.tenant == TENANT
    assert event.meta.channel == contact_pb2.CHANNEL_CHAT
    assert event.meta.source == "chat"
    c = event.contact
    assert c.contact_id == contact_id and len(contact_id) == 32
    assert c.tenant == TENANT and c.channel == contact_pb2.CHANNEL_CHAT
    assert [(i.kind, i.value) for i in c.identities] == [
        (contact_pb2.IDENTITY_KIND_CHAT_VISITOR, visitor_id),
        (contact_pb2.IDENTITY_KIND_EMAIL, "minji.kim@example.com"),
    ]
    assert c.customer_name == "김민지"
    assert c.language == "ko"
    assert list(c.skills) == ["billing"]
    assert c.queue == "general"
    assert c.conversation_id == visitor_id
    assert [(p.content_type, p.text) for p in c.content] == [
        ("text/plain", "요금이 두 번 청구되었어요")
    ]
    assert c.HasField("created_at")

    # The event continues the trace of the socket event that caused it.
    spans = [s for s in span_exporter.get_finished_spans() if s.name == "chat.customer_message"]
    assert spans and spans[-1].kind == SpanKind.SERVER
    trace_id = format(spans[-1].context.trace_id, "032x")
    assert headers["traceparent"].split("-")[1] == trace_id

    # The first message comes back through the bus consumer, as the case service will store it.
    echoed = await customer.next("message")
    assert echoed["message_id"] == f"{contact_id}:initial"
    assert echoed["contact_id"] == contact_id
    assert echoed["author"] == "customer" and echoed["agent_name"] is None
    assert echoed["text"] == "요금이 두 번 청구되었어요"
    assert echoed["sent_at"].startswith(c.created_at.ToDatetime().date().isoformat())


async def test_later_messages_publish_message_added(connect: Any, router: Any) -> None:
    customer, _, first = await connect.conversation()
    contact_id = first["contact_id"]

    ack = await customer.call("message", {"text": "카드 번호 끝자리는 1234입니다"})

    assert ack["ok"] and ack["contact_id"] == contact_id and ack["message_id"]
    [(event, _)] = await router.read(
        f"contact.{TENANT}.chat.message_added", events_pb2.MessageAdded, 1
    )
    m = event.message
    assert event.meta.channel == contact_pb2.CHANNEL_CHAT
    assert m.message_id == ack["message_id"] and m.contact_id == contact_id
    assert m.author == contact_pb2.AUTHOR_CUSTOMER and m.agent_id == ""
    assert [p.text for p in m.parts] == ["카드 번호 끝자리는 1234입니다"]
    assert m.HasField("sent_at")
    echoed = await customer.next("message", lambda d: d["message_id"] == ack["message_id"])
    assert echoed["author"] == "customer"


async def test_queued_then_assigned_status_reach_the_customer(connect: Any, router: Any) -> None:
    customer, _, ack = await connect.conversation()

    await router.queued(ack["contact_id"], position=3)
    assert await customer.next("status") == {"state": "queued", "position": 3}

    await router.assigned(ack["contact_id"], "agent-1", "이수진")
    assert await customer.next("status") == {"state": "assigned", "agent_name": "이수진"}


async def test_events_for_unknown_contacts_are_ignored(connect: Any, router: Any) -> None:
    customer, _, ack = await connect.conversation()
    await router.queued("not-a-chat-contact", position=1)
    await router.queued(ack["contact_id"], position=2, tenant="other")  # same id, other tenant
    await router.queued(ack["contact_id"], position=4)
    # Events are consumed in order: had the first two been delivered, they would come first.
    assert await customer.next("status") == {"state": "queued", "position": 4}


async def test_oversized_message_is_refused_and_not_published(
    chat: ChatApp, connect: Any, router: Any
) -> None:
    customer = await connect.customer()
    await customer.next("session")
    before = await router.stored()
    text = "가" * 1400  # 4200 bytes in UTF-8, 1400 characters

    ack = await customer.call("message", {"text": text})

    assert ack == {"ok": False, "error": "message too large: 4200 bytes, limit 4000"}
    assert await customer.next("error") == {
        "code": "message_too_large",
        "message": "message too large: 4200 bytes, limit 4000",
    }
    assert await router.stored() == before  # the ack comes after any publish would have


async def test_bad_events_get_error_acks_and_the_server_carries_on(connect: Any) -> None:
    customer = await connect.customer()
    await customer.next("session")

    for bad in ({"text": ""}, {"text": "   "}, {}, {"text": 42}, "hello", None, ["x"]):
        ack = await customer.call("message", bad)
        assert ack["ok"] is False and "text" in ack["error"], (bad, ack)

    assert (await customer.call("message", {"text": "still here"}))["ok"] is True


async def test_reconnect_with_visitor_id_resumes_history(connect: Any, router: Any) -> None:
    customer, session, first = await connect.conversation()
    contact_id = first["contact_id"]
    second = await customer.call("message", {"text": "여보세요?"})
    await customer.next("message", lambda d: d["message_id"] == second["message_id"])
    await router.queued(contact_id, position=2)
    await customer.next("status")
    await customer.close()

    again = await connect.customer(token=customer.token)

    resumed = await again.next("session")
    assert resumed["visitor_id"] == session["visitor_id"]
    assert resumed["contact_id"] == contact_id
    assert [(m["message_id"], m["text"]) for m in resumed["messages"]] == [
        (f"{contact_id}:initial", "요금이 두 번 청구되었어요"),
        (second["message_id"], "여보세요?"),
    ]
    assert await again.next("status") == {"state": "queued", "position": 2}
    # Still the same contact: the next message is added to it, not a new contact.
    ack = await again.call("message", {"text": "다시 연결했어요"})
    assert ack["contact_id"] == contact_id
    assert ack["message_id"] != f"{contact_id}:initial"
    await again.next("message", lambda d: d["message_id"] == ack["message_id"])


async def test_a_visitor_token_does_not_cross_tenants(connect: Any) -> None:
    customer, _, _ = await connect.conversation()
    other = await connect.visitor_token("other")
    assert other["visitor_id"] != (await customer.next("session", lambda _: True) if False else "")

    stranger = await connect.customer(token=other["token"])

    resumed = await stranger.next("session")
    assert resumed["contact_id"] is None and resumed["messages"] == []
    # Renewing another tenant's token does not carry its visitor over.
    renewed = await connect.visitor_token("other", token=customer.token)
    assert renewed["visitor_id"] != customer.token


async def test_connect_is_refused_naming_the_missing_or_bad_field(connect: Any) -> None:
    token = (await connect.visitor_token())["token"]
    assert (await connect.refused("/customer", {"name": "x", "language": "ko"})).startswith("token")
    assert (await connect.refused("/customer", None)).startswith("token")
    assert (await connect.refused("/customer", {"token": token})).startswith("language")
    bad_language = {"token": token, "language": "korean please"}
    assert (await connect.refused("/customer", bad_language)).startswith("language")

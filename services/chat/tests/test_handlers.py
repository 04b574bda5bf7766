"""The chat's application layer and domain rules with small fakes (no network)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.chat.adapters.conversations import InMemoryConversations
from switchboard.chat.domain.commands import CustomerMessage
from switchboard.chat.domain.model import (
    CustomerProfile,
    MessageTooLarge,
    check_text,
    parse_customer_auth,
)
from switchboard.chat.handlers import Chat
from switchboard.chat.notifier import ChatNotifier
from switchboard.core import events
from switchboard.core.auth import Principal
from switchboard.core.errors import InvalidArgument, PermissionDenied
from switchboard.testing.fakes import FakePublisher
from switchboard.v1 import case_events_pb2, contact_pb2, events_pb2

TENANT = "demo"
AGENT = Principal(TENANT, "agent-1", frozenset({"agent"}))


class FakeDelivery:
    """Records (room, event, data): rooms "visitor:<id>" for customers, "contact:<id>" for agents."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, str, dict[str, Any]]] = []

    async def to_customer(
        self, tenant: str, visitor_id: str, event: str, data: dict[str, Any]
    ) -> None:
        self.emitted.append((f"visitor:{visitor_id}", event, data))

    async def to_agents(self, contact_id: str, event: str, data: dict[str, Any]) -> None:
        self.emitted.append((f"contact:{contact_id}", event, data))


@pytest.fixture
def bus() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def delivery() -> FakeDelivery:
    return FakeDelivery()


@pytest.fixture
def chat(bus: FakePublisher, delivery: FakeDelivery) -> Chat:
    return Chat(InMemoryConversations(), ChatNotifier(bus), delivery, 4000, assignment_wait=5.0)


PROFILE = CustomerProfile(TENANT, "Wang Fang", "zh", "fang@example.com", "technical", "v1")


def assigned(contact_id: str, agent_id: str = "agent-1") -> events_pb2.ContactAssigned:
    return events_pb2.ContactAssigned(
        meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "router"),
        contact_id=contact_id,
        agent_id=agent_id,
        agent_name="Chen",
    )


async def test_join_waits_for_the_assignment_event(chat: Chat, bus: FakePublisher) -> None:
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("我的账户登录不了"))
    join = asyncio.create_task(chat.agent_join(AGENT, sent.contact_id))
    # One turn of the loop: the join looks, finds nothing and waits (the fakes never block).
    await asyncio.sleep(0)
    assert not join.done() and chat._assignment_waiters

    await chat.on_contact_assigned(assigned(sent.contact_id))

    conversation = await asyncio.wait_for(join, 1.0)
    assert conversation.contact_id == sent.contact_id
    assert chat._assignment_waiters == {}


async def test_a_reply_right_after_the_accept_waits_for_the_assignment(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery
) -> None:
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("我的账户登录不了"))
    # The router accepted the agent's offer; its ContactAssigned is not consumed here yet.
    reply = asyncio.create_task(
        chat.send_agent_message(TENANT, sent.contact_id, AGENT.subject, "您好")
    )
    await asyncio.sleep(0)
    assert not reply.done() and chat._assignment_waiters

    await chat.on_contact_assigned(assigned(sent.contact_id))

    replied = await asyncio.wait_for(reply, 1.0)
    assert replied.contact_id == sent.contact_id
    assert any(e == "message" and d.get("text") == "您好" for _, e, d in delivery.emitted)


async def test_join_refuses_once_the_wait_is_over(
    bus: FakePublisher, delivery: FakeDelivery
) -> None:
    chat = Chat(InMemoryConversations(), ChatNotifier(bus), delivery, 4000, assignment_wait=0.0)
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_assigned(assigned(sent.contact_id, "agent-2"))
    with pytest.raises(PermissionDenied, match=f"contact {sent.contact_id} is not assigned to you"):
        await chat.agent_join(AGENT, sent.contact_id)


async def test_concurrent_first_messages_create_one_contact(chat: Chat, bus: FakePublisher) -> None:
    a, b = await asyncio.gather(
        chat.customer_message(PROFILE, "v1", CustomerMessage("one")),
        chat.customer_message(PROFILE, "v1", CustomerMessage("two")),
    )
    assert a.contact_id == b.contact_id
    assert [type(e).__name__ for e in bus.events] == ["ContactCreated", "MessageAdded"]


async def test_a_failed_create_is_forgotten_and_retried_as_a_new_contact(
    chat: Chat, bus: FakePublisher
) -> None:
    bus.fail = TimeoutError("no JetStream ack")
    with pytest.raises(TimeoutError):
        await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    bus.fail = None
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    assert sent.message_id == f"{sent.contact_id}:initial"
    assert isinstance(bus.events[0], events_pb2.ContactCreated)


async def test_redelivered_messages_are_emitted_once(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery
) -> None:
    await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    created = bus.events[0]
    await chat.on_contact_created(created)  # type: ignore[arg-type]
    await chat.on_contact_created(created)  # type: ignore[arg-type]
    # once to the customer, once to the agents' room
    assert [e[:2] for e in delivery.emitted] == [
        ("visitor:v1", "message"),
        (f"contact:{created.contact.contact_id}", "message"),
    ]


async def test_ended_contact_closes_and_next_message_starts_a_new_one(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery
) -> None:
    first = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_ended(
        events_pb2.ContactEnded(
            meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=first.contact_id,
        )
    )
    ended = {"state": "ended", "contact_id": first.contact_id}
    assert ("visitor:v1", "status", ended) in delivery.emitted
    second = await chat.customer_message(PROFILE, "v1", CustomerMessage("again"))
    assert second.contact_id != first.contact_id


def test_parse_customer_auth() -> None:
    auth = {"name": " 佐藤 ", "email": "A@B.JP", "language": "ja", "topic": "Account"}
    profile = parse_customer_auth(auth, "demo", "v9")
    assert profile == CustomerProfile("demo", "佐藤", "ja", "a@b.jp", "account", "v9")
    for bad, field in [
        ({}, "language"),
        ({"language": "x"}, "language"),
        ({"language": "ko", "email": "no-at"}, "email"),
        ({"language": "ko", "topic": "a b"}, "topic"),
        ({"language": "ko", "name": "n" * 201}, "name"),
        ("not a dict", "token"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            parse_customer_auth(bad, "demo", "v9")
        assert info.value.field == field, bad


def test_check_text_counts_utf8_bytes() -> None:
    assert check_text({"text": "가" * 1333}, 4000) == "가" * 1333  # 3999 bytes
    with pytest.raises(MessageTooLarge, match="message too large: 4002 bytes, limit 4000"):
        check_text({"text": "가" * 1334}, 4000)
    with pytest.raises(InvalidArgument, match="text"):
        check_text({"text": ""}, 4000)
    with pytest.raises(InvalidArgument, match="text: is not valid Unicode"):
        check_text({"text": "\ud800"}, 4000)


async def test_a_message_is_shown_to_the_other_side_while_jetstream_stores_it(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery
) -> None:
    """Not after the bus has carried it back: the agent sees the customer's message, and the
    customer the agent's, before the publish is acknowledged; the bus's own delivery of the
    same event later shows nothing twice."""
    first = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_assigned(assigned(first.contact_id))
    room = f"contact:{first.contact_id}"

    def shown(where: str, text: str) -> int:
        return sum(
            1 for r, e, d in delivery.emitted if r == where and e == "message" and d["text"] == text
        )

    bus.hold = asyncio.Event()
    sending = asyncio.create_task(
        chat.customer_message(PROFILE, "v1", CustomerMessage("my printer"))
    )
    for _ in range(100):
        if shown(room, "my printer"):
            break
        await asyncio.sleep(0)
    assert shown(room, "my printer") == 1
    assert not sending.done()  # JetStream has not stored it yet
    bus.hold.set()
    await sending
    replying = asyncio.create_task(
        chat.send_agent_message(TENANT, first.contact_id, "agent-1", "which model?")
    )
    await sending
    await replying
    assert shown("visitor:v1", "which model?") == 1
    # The bus brings every published message back: each is shown once, not again.
    for event in list(bus.events):
        if isinstance(event, events_pb2.MessageAdded):
            await chat.on_message_added(event)
    assert shown(room, "my printer") == 1
    assert shown("visitor:v1", "which model?") == 1


async def test_a_first_message_is_shown_to_its_sender_while_jetstream_stores_the_contact(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery
) -> None:
    """The message that opens a contact shows at once too, not once the ContactCreated has
    travelled through the bus and back; that delivery later shows nothing twice."""

    def shown() -> list[str]:
        return [d["text"] for r, e, d in delivery.emitted if r == "visitor:v1" and e == "message"]

    bus.hold = asyncio.Event()
    sending = asyncio.create_task(chat.customer_message(PROFILE, "v1", CustomerMessage("hello")))
    for _ in range(100):
        if shown():
            break
        await asyncio.sleep(0)
    assert shown() == ["hello"]
    assert not sending.done()  # JetStream has not stored the ContactCreated yet
    bus.hold.set()
    sent = await sending
    [created] = [e for e in bus.events if isinstance(e, events_pb2.ContactCreated)]
    await chat.on_contact_created(created)
    assert shown() == ["hello"]
    [message] = [d for r, e, d in delivery.emitted if r == "visitor:v1" and e == "message"]
    assert message["message_id"] == sent.message_id


async def test_a_message_jetstream_did_not_store_is_refused_to_its_sender(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery
) -> None:
    """The sender gets the error (the agent may have seen the message meanwhile); sent again
    with the same client id it is the same message: recorded once, shown once."""
    first = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_assigned(assigned(first.contact_id))
    bus.fail = TimeoutError("no JetStream ack")
    with pytest.raises(TimeoutError):
        await chat.customer_message(PROFILE, "v1", CustomerMessage("lost?", "key-0001"))
    bus.fail = None
    again = await chat.customer_message(PROFILE, "v1", CustomerMessage("lost?", "key-0001"))
    sent = [e for e in bus.events if isinstance(e, events_pb2.MessageAdded)]
    assert [e.message.message_id for e in sent] == [again.message_id]
    room = f"contact:{first.contact_id}"
    texts = [d["text"] for r, e, d in delivery.emitted if r == room and e == "message"]
    assert texts == ["hello", "lost?"]


async def test_a_contact_whose_creation_had_an_unknown_outcome_is_announced_before_its_next_message(
    chat: Chat, bus: FakePublisher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS went away mid-way: the conversation's record was written, its ContactCreated got no
    ack and the record could not be taken back. The visitor's next message must not go to a
    contact the rest of the platform never heard of (seen in make chaos: the case store parked
    the messages of two such contacts, the router had no record of them)."""

    async def unreachable(tenant: str, contact_id: str) -> None:
        raise TimeoutError("nats: timeout")

    monkeypatch.setattr(chat.store, "discard", unreachable)
    bus.fail = TimeoutError("no JetStream ack")
    with pytest.raises(TimeoutError):
        await chat.customer_message(PROFILE, "v1", CustomerMessage("hello?"))
    bus.fail = None
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("anyone there?"))
    published = [(type(e).__name__, e) for e in bus.events]
    assert [name for name, _ in published] == ["ContactCreated", "MessageAdded"]
    created = published[0][1]
    assert created.contact.contact_id == sent.contact_id
    assert created.meta.event_id == f"{sent.contact_id}:created"  # a duplicate JetStream drops
    assert [p.text for p in created.contact.content] == ["hello?"]
    conversation = await chat.store.get(TENANT, sent.contact_id)
    assert conversation is not None and conversation.opening is None
    # Announced once: the next message goes out alone.
    await chat.customer_message(PROFILE, "v1", CustomerMessage("hello again"))
    assert [type(e).__name__ for e in bus.events][2:] == ["MessageAdded"]


async def test_customer_erased_forgets_the_conversations_in_memory_too(chat: Chat) -> None:
    erased = await chat.customer_message(PROFILE, "v1", CustomerMessage("我的账户登录不了"))
    other = CustomerProfile(TENANT, "Li Wei", "zh", "wei@example.com", "technical", "v2")
    kept = await chat.customer_message(other, "v2", CustomerMessage("发票"))
    event = case_events_pb2.CustomerErased(
        meta=events.new_meta(TENANT, 0, "case"), contact_ids=[erased.contact_id, "mail-1"]
    )
    await chat.on_customer_erased(event)
    await chat.on_customer_erased(event)  # delivered again: harmless
    assert await chat.store.get(TENANT, erased.contact_id) is None
    assert await chat.store.open_for_visitor(TENANT, "v1") is None
    assert await chat.store.history(TENANT, erased.contact_id) == []
    assert await chat.store.get(TENANT, kept.contact_id) is not None


async def test_the_bus_bringing_back_a_message_shown_here_costs_no_store_work(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message this replica stored and showed needs nothing more when its event comes back
    over the bus; one whose history append failed here is stored (and shown) then."""
    first = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_assigned(assigned(first.contact_id))
    await chat.customer_message(PROFILE, "v1", CustomerMessage("two"))
    await chat.send_agent_message(TENANT, first.contact_id, "agent-1", "three")
    calls: list[str] = []
    get, append = chat.store.get, chat.store.append

    async def counted_get(*args: Any, **kwargs: Any) -> Any:
        calls.append("get")
        return await get(*args, **kwargs)

    async def counted_append(*args: Any, **kwargs: Any) -> Any:
        calls.append("append")
        return await append(*args, **kwargs)

    monkeypatch.setattr(chat.store, "get", counted_get)
    monkeypatch.setattr(chat.store, "append", counted_append)
    for event in list(bus.events):
        if isinstance(event, events_pb2.ContactCreated):
            await chat.on_contact_created(event)
        if isinstance(event, events_pb2.MessageAdded):
            await chat.on_message_added(event)
    assert calls == []

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("no history ack")

    monkeypatch.setattr(chat.store, "append", failing)
    late = await chat.customer_message(PROFILE, "v1", CustomerMessage("stored later"))
    monkeypatch.setattr(chat.store, "append", counted_append)
    [event] = [
        e
        for e in bus.events
        if isinstance(e, events_pb2.MessageAdded) and e.message.message_id == late.message_id
    ]
    await chat.on_message_added(event)
    history = await chat.store.history(TENANT, first.contact_id)
    assert [m.text for m in history] == ["hello", "two", "three", "stored later"]
    room = f"contact:{first.contact_id}"
    texts = [d["text"] for r, e, d in delivery.emitted if r == room and e == "message"]
    assert texts == ["hello", "two", "three", "stored later"]


async def test_a_message_reaches_the_other_side_before_it_is_stored_anywhere(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the JetStream ack nor the history's append is waited for before the other side
    sees a message; the sender is answered only once both are done, and sees its own message
    once stored, with the seq it resumes from. Each side is shown each message once."""
    first = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_assigned(assigned(first.contact_id))
    room = f"contact:{first.contact_id}"
    appending = asyncio.Event()
    append = chat.store.append

    async def held_append(*args: Any, **kwargs: Any) -> Any:
        await appending.wait()
        return await append(*args, **kwargs)

    monkeypatch.setattr(chat.store, "append", held_append)
    bus.hold = asyncio.Event()

    def shown(where: str, text: str) -> list[dict[str, Any]]:
        return [
            d for r, e, d in delivery.emitted if r == where and e == "message" and d["text"] == text
        ]

    async def until(condition: Any) -> None:
        for _ in range(100):
            if condition():
                return
            await asyncio.sleep(0)

    sending = asyncio.create_task(
        chat.customer_message(PROFILE, "v1", CustomerMessage("my printer"))
    )
    await until(lambda: shown(room, "my printer"))
    assert [d["seq"] for d in shown(room, "my printer")] == [0]  # not stored yet
    assert shown("visitor:v1", "my printer") == []  # the sender's side: once stored
    assert not sending.done()
    replying = asyncio.create_task(
        chat.send_agent_message(TENANT, first.contact_id, "agent-1", "which model?")
    )
    await until(lambda: shown("visitor:v1", "which model?"))
    assert len(shown("visitor:v1", "which model?")) == 1
    assert not replying.done()
    bus.hold.set()  # JetStream stored both: the history has not yet
    for _ in range(20):
        await asyncio.sleep(0)
    assert not sending.done() and not replying.done()
    appending.set()
    sent, reply = await sending, await replying
    [own] = shown("visitor:v1", "my printer")
    assert own["message_id"] == sent.message_id and own["seq"] > 0
    assert [d["seq"] > 0 for d in shown(room, "which model?")] == [True]
    for event in list(bus.events):
        if isinstance(event, events_pb2.MessageAdded):
            await chat.on_message_added(event)
    assert len(shown(room, "my printer")) == 1
    assert len(shown("visitor:v1", "my printer")) == 1
    assert len(shown("visitor:v1", "which model?")) == 1
    assert len(shown(room, "which model?")) == 1
    assert reply.message_id != sent.message_id


async def test_a_message_shown_before_a_failed_publish_is_published_again_with_its_id(
    chat: Chat, bus: FakePublisher, delivery: FakeDelivery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side saw it: a publish JetStream did not acknowledge is tried again, with the
    same event id (stored once), and the sender is told it was accepted."""
    monkeypatch.setattr("switchboard.chat.handlers.PUBLISH_RETRY_DELAY", 0.0, raising=False)
    first = await chat.customer_message(PROFILE, "v1", CustomerMessage("hello"))
    await chat.on_contact_assigned(assigned(first.contact_id))
    publish = bus.publish_async
    attempts: list[str] = []

    async def flaky(event: Any, traceparent: str = "") -> asyncio.Future[bool]:
        attempts.append(event.meta.event_id)
        if len(attempts) == 1:
            raise TimeoutError("no JetStream ack")
        return await publish(event, traceparent)

    monkeypatch.setattr(bus, "publish_async", flaky)
    sent = await chat.customer_message(PROFILE, "v1", CustomerMessage("still there?"))
    assert attempts == [sent.message_id, sent.message_id]
    stored = [e for e in bus.events if isinstance(e, events_pb2.MessageAdded)]
    assert [e.message.message_id for e in stored] == [sent.message_id]
    room = f"contact:{first.contact_id}"
    texts = [d["text"] for r, e, d in delivery.emitted if r == room and e == "message"]
    assert texts == ["hello", "still there?"]

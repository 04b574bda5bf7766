"""A visitor's messages through the chat's handlers on the store fakes (no nats-server): what a
payload becomes, what is published for it and what each side is shown; a message sent again is
the same message; a malformed payload or a command on a chat that is not the visitor's is refused
with an error naming what is wrong. Conversation records and files live in FakeKeyValue and
FakeObjectStore, as JetStreamConversations and FileStore keep them in JetStream."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from nats.js.errors import BadRequestError

from switchboard.chat.adapters.conversations import InMemoryConversations, JetStreamConversations
from switchboard.chat.adapters.files import BUCKET, FileStore, StoredFile
from switchboard.chat.domain.commands import Rating
from switchboard.chat.domain.model import Conversation, CustomerProfile, MessageTooLarge
from switchboard.chat.entrypoints import payloads
from switchboard.chat.handlers import Chat
from switchboard.chat.notifier import ChatNotifier
from switchboard.core import events
from switchboard.core.errors import FailedPrecondition, InvalidArgument
from switchboard.testing.fakes import FakeKeyValue, FakeObjectStore, FakePublisher
from switchboard.v1 import contact_pb2, events_pb2

LIMIT = 4000
VISITOR = CustomerProfile("acme", "Kim Minji", "ko", "Minji@Example.com", "billing", "v-7")


class Screens:
    """The chat's Delivery, keeping what was shown in each room by event: a visitor's
    ("visitor:<id>") and a contact's agents' ("contact:<id>")."""

    def __init__(self) -> None:
        self.rooms: defaultdict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)

    async def to_customer(
        self, tenant: str, visitor: str, event: str, data: dict[str, Any]
    ) -> None:
        self.rooms[f"visitor:{visitor}"].append((event, data))

    async def to_agents(self, contact_id: str, event: str, data: dict[str, Any]) -> None:
        self.rooms[f"contact:{contact_id}"].append((event, data))

    def texts(self, room: str) -> list[str]:
        return [data["text"] for event, data in self.rooms[room] if event == "message"]


@pytest.fixture
def bus() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def screens() -> Screens:
    return Screens()


@pytest.fixture
def chat(bus: FakePublisher, screens: Screens) -> Chat:
    return Chat(InMemoryConversations(), ChatNotifier(bus), screens, LIMIT)


async def send(chat: Chat, payload: Any) -> Any:
    """What the socket server does with a visitor's `message` event."""
    return await chat.customer_message(
        VISITOR, VISITOR.visitor_id, payloads.customer_message(payload, chat.max_message_bytes)
    )


async def test_a_first_message_creates_the_contact_and_the_next_is_added_to_it(
    chat: Chat, bus: FakePublisher, screens: Screens
) -> None:
    first = await send(chat, {"text": "청구서가 두 번 왔어요"})
    second = await send(chat, {"text": "카드 결제입니다", "client_id": "widget-0001"})

    created, added = bus.events
    assert isinstance(created, events_pb2.ContactCreated)
    assert events.subject_of(created) == "contact.acme.chat.created"
    assert created.meta.event_id == f"{first.contact_id}:created"
    contact = created.contact
    assert contact.contact_id == first.contact_id and contact.channel == contact_pb2.CHANNEL_CHAT
    assert [(i.kind, i.value) for i in contact.identities] == [
        (contact_pb2.IDENTITY_KIND_CHAT_VISITOR, "v-7"),
        (contact_pb2.IDENTITY_KIND_EMAIL, "minji@example.com"),
    ]
    assert (contact.customer_name, contact.language, list(contact.skills)) == (
        "Kim Minji",
        "ko",
        ["billing"],
    )
    assert [p.text for p in contact.content] == ["청구서가 두 번 왔어요"]
    assert first.message_id == f"{first.contact_id}:initial"

    assert isinstance(added, events_pb2.MessageAdded)
    assert events.subject_of(added) == "contact.acme.chat.message_added"
    assert added.meta.event_id == added.message.message_id == second.message_id
    assert added.message.contact_id == second.contact_id == first.contact_id
    assert added.message.author == contact_pb2.AUTHOR_CUSTOMER
    assert [p.text for p in added.message.parts] == ["카드 결제입니다"]
    room = f"contact:{first.contact_id}"
    assert screens.texts(room) == ["청구서가 두 번 왔어요", "카드 결제입니다"]


async def test_a_message_sent_again_with_its_client_id_is_the_same_message(
    chat: Chat, bus: FakePublisher, screens: Screens
) -> None:
    first = await send(chat, {"text": "hello"})
    sent = await send(chat, {"text": "is anyone there?", "client_id": "widget-0002"})
    again = await send(chat, {"text": "is anyone there?", "client_id": "widget-0002"})
    other = await send(chat, {"text": "is anyone there?", "client_id": "widget-0003"})

    assert again == sent and other.message_id != sent.message_id
    added = bus.of(events_pb2.MessageAdded)
    assert [e.message.message_id for e in added] == [sent.message_id, other.message_id]
    room = f"contact:{first.contact_id}"
    assert screens.texts(room) == ["hello", "is anyone there?", "is anyone there?"]
    # The bus bringing the message back shows it to nobody again.
    await chat.on_message_added(added[0])
    assert screens.texts(room) == ["hello", "is anyone there?", "is anyone there?"]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ("hello", "text: is required (the event must be an object)"),
        ({}, "text: is required"),
        ({"text": "   "}, "text: is required"),
        ({"text": 42}, "text: must be a string"),
        ({"text": "hi", "client_id": "short"}, "client_id: must be 8-64 ASCII characters"),
        (
            {"text": "hi", "client_id": "클라이언트-아이디-1"},
            "client_id: must be 8-64 ASCII characters",
        ),
        ({"text": "가" * 1334}, f"message too large: 4002 bytes, limit {LIMIT}"),
    ],
)
async def test_a_malformed_message_is_refused_naming_what_is_wrong(
    chat: Chat, bus: FakePublisher, payload: Any, error: str
) -> None:
    with pytest.raises((InvalidArgument, MessageTooLarge)) as refused:
        await send(chat, payload)
    assert str(refused.value) == error
    assert bus.events == []
    assert await chat.store.open_for_visitor("acme", VISITOR.visitor_id) is None


async def test_a_rating_of_a_chat_that_is_not_the_visitors_is_refused(
    chat: Chat, bus: FakePublisher
) -> None:
    sent = await send(chat, {"text": "hello"})
    with pytest.raises(InvalidArgument, match="contact_id: is not one of your chats"):
        await chat.rate(VISITOR, Rating("someone-elses", 5))
    await chat.rate(VISITOR, Rating(sent.contact_id, 4, "quick"))
    with pytest.raises(FailedPrecondition, match="this chat has already been rated"):
        await chat.rate(VISITOR, Rating(sent.contact_id, 1))
    [rated] = bus.of(events_pb2.SatisfactionRated)
    assert (rated.contact_id, rated.score, rated.comment) == (sent.contact_id, 4, "quick")


# ---- files, in FakeObjectStore -----------------------------------------------------------------


async def test_a_file_is_stored_and_published_as_a_message_of_the_open_chat(
    chat: Chat, bus: FakePublisher, screens: Screens
) -> None:
    obs = FakeObjectStore(BUCKET)
    files = FileStore(obs)
    ref = await files.put("acme", "receipt.pdf", "application/pdf", b"%PDF-1.7")
    with pytest.raises(FailedPrecondition, match="start the chat with a message before"):
        await chat.customer_attachment(VISITOR, ref)
    assert bus.events == []

    opened = await send(chat, {"text": "here is my receipt"})
    sent = await chat.customer_attachment(VISITOR, ref, "receipt")
    [added] = bus.of(events_pb2.MessageAdded)
    assert added.message.message_id == sent.message_id
    assert added.message.contact_id == opened.contact_id
    assert list(added.message.attachments) == [ref]
    assert (ref.bucket, ref.size_bytes) == (BUCKET, 8) and ref.object_name.startswith("acme/")
    [(_, shown)] = [
        m for m in screens.rooms[f"contact:{opened.contact_id}"] if m[1].get("attachment")
    ]
    assert shown["attachment"]["filename"] == "receipt.pdf"
    file_id = ref.object_name.removeprefix("acme/")
    assert await files.get("acme", file_id) == StoredFile(
        b"%PDF-1.7", "receipt.pdf", "application/pdf"
    )
    assert await files.get("other", file_id) is None  # another tenant's name for it is unknown


# ---- conversation records, in FakeKeyValue -----------------------------------------------------


def records(kv: FakeKeyValue) -> JetStreamConversations:
    """JetStreamConversations' records (not its history, which is a stream) on a fake bucket."""
    return JetStreamConversations(None, kv)  # type: ignore[arg-type]


def conversation(contact_id: str) -> Conversation:
    return Conversation("acme", contact_id, VISITOR.visitor_id, VISITOR.name, VISITOR.language)


async def test_concurrent_updates_of_a_record_are_all_kept() -> None:
    """Each update is a compare-and-set on the record's revision: one that lost the race to
    another reads the record again and applies its change to that."""
    store = records(FakeKeyValue("chat_conversations"))
    await store.add(conversation("c1"))

    def receipt(n: int) -> Callable[[Conversation], None]:
        def mark(c: Conversation) -> None:
            c.receipts[f"agent-{n}"] = {"read": f"m{n}"}

        return mark

    await asyncio.gather(*(store.update("acme", "c1", receipt(n)) for n in range(5)))
    found = await store.get("acme", "c1")
    assert found is not None and sorted(found.receipts) == [f"agent-{n}" for n in range(5)]
    assert await store.update("acme", "unknown", receipt(9)) is None


async def test_an_ended_chat_no_longer_takes_the_visitors_messages() -> None:
    store = records(FakeKeyValue("chat_conversations"))
    await store.add(conversation("c1"))
    assert (await store.open_for_visitor("acme", "v-7")) == await store.get("acme", "c1")
    ended = await store.end("acme", "c1")
    assert ended is not None and ended.ended
    assert await store.end("acme", "c1") is None  # once
    assert await store.open_for_visitor("acme", "v-7") is None


class RacingBucket(FakeKeyValue):
    """A bucket where another replica opens a new chat for the visitor just before each delete."""

    async def delete(self, key: str, last: int | None = None) -> bool:
        if key.startswith("v.") and last:
            await self.put(key, b'{"contact_id": "c2"}')
        return await super().delete(key, last)


async def test_ending_a_chat_leaves_the_visitors_newer_chat_open() -> None:
    kv = RacingBucket("chat_conversations")
    store = records(kv)
    await store.add(conversation("c1"))
    try:
        ended = await store.end("acme", "c1")
    except BadRequestError as exc:
        pytest.fail(f"ending c1 failed on the newer chat's visitor key: {exc}")
    assert ended is not None and ended.contact_id == "c1"
    assert kv.values()["v.acme.v-7"] == b'{"contact_id": "c2"}'


# ---- two replicas: the one a message was sent on, and the one whose consumer the bus gives it --


class Consumed(FakePublisher):
    """The sending replica's bus, where the other replica's consumer takes each MessageAdded as
    soon as JetStream has it: before the sender's own history append is done."""

    def __init__(self) -> None:
        super().__init__()
        self.consumer: Chat | None = None
        self.consumed = asyncio.Event()

    async def _stored(self, event: Any) -> bool:
        stored = await super()._stored(event)
        if stored and self.consumer is not None and isinstance(event, events_pb2.MessageAdded):
            await self.consumer.on_message_added(event)
            self.consumed.set()
        return stored


class LateAppends(InMemoryConversations):
    """The sending replica's view of the shared store: its history appends wait until the other
    replica's consumer has appended the message first."""

    def __init__(self, shared: InMemoryConversations, first: asyncio.Event) -> None:
        self.shared, self.first = shared, first

    def __getattribute__(self, name: str) -> Any:
        if name in ("append", "shared", "first"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "shared"), name)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        await self.first.wait()
        return await self.shared.append(*args, **kwargs)


@pytest.mark.parametrize("author", ["agent", "customer"])
async def test_a_message_another_replica_stores_first_is_shown_to_each_side_once(
    screens: Screens, author: str
) -> None:
    """A message is shown to the other side at once, then stored in the history and published in
    parallel; another replica's consumer may store it from the bus first. Each side still sees
    it once: the other side at once, the sender's side with its seq (seen in a two-replica run
    as the customer shown an agent's reply twice)."""
    shared = InMemoryConversations()
    bus = Consumed()
    consumer = Chat(shared, ChatNotifier(FakePublisher()), screens, LIMIT)
    sender = Chat(LateAppends(shared, bus.consumed), ChatNotifier(bus), screens, LIMIT)
    bus.consumer = consumer
    first = await send(consumer, {"text": "청구서가 두 번 왔어요"})
    contact_id = first.contact_id
    await consumer.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=contact_id,
            agent_id="ko-agent",
            agent_name="김지은",
        )
    )

    if author == "agent":
        sent = await sender.send_agent_message(
            "acme", contact_id, "ko-agent", "확인해 드리겠습니다"
        )
    else:
        sent = await send(sender, {"text": "3월분이에요"})

    texts = {"agent": "확인해 드리겠습니다", "customer": "3월분이에요"}
    customer_room = [d for e, d in screens.rooms[f"visitor:{VISITOR.visitor_id}"] if e == "message"]
    agents_room = [d for e, d in screens.rooms[f"contact:{contact_id}"] if e == "message"]
    for room in (customer_room, agents_room):
        assert [d["text"] for d in room if d["message_id"] == sent.message_id] == [texts[author]]
    senders_side = agents_room if author == "agent" else customer_room
    [shown] = [d for d in senders_side if d["message_id"] == sent.message_id]
    assert shown["seq"] > 0  # the sender's side learns where it is in the history


class FailsOnce(Screens):
    """Sockets whose first emit to a visitor fails (the replicas' fan-out away a moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def to_customer(
        self, tenant: str, visitor: str, event: str, data: dict[str, Any]
    ) -> None:
        if event == "message" and not self.failed:
            self.failed = True
            raise ConnectionError("fan-out unavailable")
        await super().to_customer(tenant, visitor, event, data)


@pytest.mark.parametrize("stored_by", ["the sending replica", "another replica"])
async def test_a_message_not_shown_at_once_is_shown_to_the_other_side_when_stored(
    stored_by: str,
) -> None:
    screens = FailsOnce()
    shared = InMemoryConversations()
    bus = Consumed()
    consumer = Chat(shared, ChatNotifier(FakePublisher()), screens, LIMIT)
    store: InMemoryConversations = shared
    if stored_by == "another replica":
        store, bus.consumer = LateAppends(shared, bus.consumed), consumer
    sender = Chat(store, ChatNotifier(bus), screens, LIMIT)
    contact_id = (await send(consumer, {"text": "안녕하세요"})).contact_id
    screens.failed = False
    await consumer.on_contact_assigned(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "router"),
            contact_id=contact_id,
            agent_id="ko-agent",
        )
    )
    sent = await sender.send_agent_message("acme", contact_id, "ko-agent", "확인해 드리겠습니다")

    assert screens.failed
    [added] = bus.of(events_pb2.MessageAdded)
    assert not added.shown_to_other_side
    customer_room = screens.rooms[f"visitor:{VISITOR.visitor_id}"]
    shown = [d for e, d in customer_room if e == "message" and d["message_id"] == sent.message_id]
    assert [(d["text"], d["seq"] > 0) for d in shown] == [("확인해 드리겠습니다", True)]

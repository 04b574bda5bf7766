"""What a chat message costs the conversation store, against a real JetStream: a customer's
message in an open conversation reads one key (the conversation's record), not the visitor's
pointer and the record and the record again; and the store stays right when another replica
ends the conversation or the visitor starts a new one there."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchboard.chat.adapters.conversations import JetStreamConversations
from switchboard.chat.domain.model import ChatMessage, Conversation
from switchboard.core import events
from switchboard.core.bus import Bus


class CountingKv:
    """The bucket, counting the reads that reach it."""

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        self.gets = 0

    async def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        return await self.kv.get(key, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)


def _message(contact_id: str, text: str) -> ChatMessage:
    return ChatMessage(events.new_id(), contact_id, "customer", text, datetime.now(UTC))


async def test_a_message_in_an_open_conversation_reads_one_key(bus: Bus) -> None:
    opened = await JetStreamConversations.open(bus.js)
    counting = CountingKv(opened.kv)
    store = JetStreamConversations(bus.js, counting)  # type: ignore[arg-type]
    await store.add(Conversation("acme", "c-1", "v-1", "Kim Minsu", "ko"))
    assert await store.open_for_visitor("acme", "v-1") is not None  # the first look

    counting.gets = 0
    conversation = await store.open_for_visitor("acme", "v-1")
    assert conversation is not None and conversation.contact_id == "c-1"
    stored = await store.append("acme", "c-1", _message("c-1", "안녕하세요"), conversation)
    assert stored is not None and stored.seq > 0
    assert counting.gets == 1
    assert [m.text for m in await store.history("acme", "c-1")] == ["안녕하세요"]


async def test_another_replica_ending_or_replacing_the_conversation_is_seen(bus: Bus) -> None:
    here = await JetStreamConversations.open(bus.js)
    there = await JetStreamConversations.open(bus.js)
    await here.add(Conversation("acme", "c-1", "v-1", "Kim Minsu", "ko"))
    assert (await here.open_for_visitor("acme", "v-1")).contact_id == "c-1"  # type: ignore[union-attr]

    assert await there.end("acme", "c-1") is not None
    assert await here.open_for_visitor("acme", "v-1") is None

    await there.add(Conversation("acme", "c-2", "v-1", "Kim Minsu", "ko"))
    found = await here.open_for_visitor("acme", "v-1")
    assert found is not None and found.contact_id == "c-2"

    assert await there.forget("acme", ["c-2"]) == 1
    assert await here.open_for_visitor("acme", "v-1") is None
    await there.add(Conversation("acme", "c-3", "v-1", "Kim Minsu", "ko"))
    found = await here.open_for_visitor("acme", "v-1")
    assert found is not None and found.contact_id == "c-3"


async def test_append_to_an_unknown_contact_stores_nothing(bus: Bus) -> None:
    store = await JetStreamConversations.open(bus.js)
    assert await store.append("acme", "nobody", _message("nobody", "hello")) is None
    assert await store.history("acme", "nobody") == []

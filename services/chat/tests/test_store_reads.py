"""What a chat message costs the conversation store, against a real JetStream: a customer's
message in an open conversation reads one key (the conversation's record), not the visitor's
pointer and the record and the record again, and none once the record is kept under the
bucket's watch; the store sees its own changes at once, and another replica's (ending the
conversation, the visitor starting a new one, an erasure) as soon as the change reaches it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from switchboard.chat.adapters.conversations import JetStreamConversations
from switchboard.chat.domain.model import ChatMessage, Conversation
from switchboard.core import events
from switchboard.core.bus import Bus
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.waiting import eventually


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


async def test_a_kept_record_costs_no_read_and_its_own_changes_show_at_once(bus: Bus) -> None:
    opened = await JetStreamConversations.open(bus.js)
    await opened.close()
    counting = CountingKv(opened.kv)
    store = JetStreamConversations(bus.js, counting)  # type: ignore[arg-type]
    await store.watch()
    try:
        assert await store.open_for_visitor("acme", "v-1") is None  # the widget connecting
        reads = counting.gets
        assert await store.open_for_visitor("acme", "v-1") is None  # its first message
        assert counting.gets == reads
        await store.add(Conversation("acme", "c-1", "v-1", "Kim Minsu", "ko"))
        assert await store.open_for_visitor("acme", "v-1") is not None  # the first look

        counting.gets = 0
        for text in ("안녕하세요", "요금 문의입니다"):
            conversation = await store.open_for_visitor("acme", "v-1")
            assert conversation is not None and conversation.contact_id == "c-1"
            conversation.agent_name = "changed by the caller"  # a snapshot: not the kept one
            assert await store.append("acme", "c-1", _message("c-1", text), conversation)
        assert counting.gets == 0

        def assign(c: Conversation) -> None:
            c.agent_id, c.agent_name = "a-1", "Lee"

        reads = counting.gets
        await store.update("acme", "c-1", assign)  # compare-and-set on the kept revision
        found = await store.get("acme", "c-1")
        assert found is not None and (found.agent_id, found.agent_name) == ("a-1", "Lee")
        assert counting.gets == reads  # kept as written, its own change coming back or not
        assert await store.end("acme", "c-1") is not None
        assert await store.open_for_visitor("acme", "v-1") is None
    finally:
        await store.close()


async def test_another_replica_ending_or_replacing_the_conversation_is_seen(bus: Bus) -> None:
    here = await JetStreamConversations.open(bus.js)
    there = await JetStreamConversations.open(bus.js)
    try:
        assert await here.open_for_visitor("acme", "v-0") is None  # kept: no contact
        await there.add(Conversation("acme", "c-0", "v-0", "Kim Minsu", "ko"))

        async def opened_there() -> bool:
            found = await here.open_for_visitor("acme", "v-0")
            return found is not None and found.contact_id == "c-0"

        await eventually(opened_there, "the contact the visitor opened there")

        await here.add(Conversation("acme", "c-1", "v-1", "Kim Minsu", "ko"))
        assert (await here.open_for_visitor("acme", "v-1")).contact_id == "c-1"  # type: ignore[union-attr]

        async def open_contact() -> str | None:
            found = await here.open_for_visitor("acme", "v-1")
            return found.contact_id if found is not None else None

        async def is_open(contact_id: str | None) -> bool:
            return await open_contact() == contact_id

        assert await there.end("acme", "c-1") is not None
        await eventually(lambda: is_open(None), "the end there")

        await there.add(Conversation("acme", "c-2", "v-1", "Kim Minsu", "ko"))
        await eventually(lambda: is_open("c-2"), "the new contact there")

        def assign(c: Conversation) -> None:
            c.agent_id = "a-2"

        await there.update("acme", "c-2", assign)

        async def assigned() -> bool:
            found = await here.get("acme", "c-2")
            return found is not None and found.agent_id == "a-2"

        await eventually(assigned, "the assignment made there")

        assert await there.forget("acme", ["c-2"]) == 1
        await eventually(lambda: is_open(None), "the erasure there")
        await there.add(Conversation("acme", "c-3", "v-1", "Kim Minsu", "ko"))
        await eventually(lambda: is_open("c-3"), "the next contact there")

        # Two replicas changing one record at once: whether the change there has reached here
        # yet or not (then the compare-and-set refuses the kept revision), both are in it.
        def assign_there(c: Conversation) -> None:
            c.agent_id = "a-3"

        def receipt_here(c: Conversation) -> None:
            c.receipts["agent"] = {"read": "m-1"}

        await there.update("acme", "c-3", assign_there)
        await here.update("acme", "c-3", receipt_here)
        fresh = JetStreamConversations(bus.js, here.kv)  # unwatched: reads every time
        found = await fresh.get("acme", "c-3")
        assert found is not None
        assert (found.agent_id, found.receipts) == ("a-3", {"agent": {"read": "m-1"}})
    finally:
        await here.close()
        await there.close()


async def test_append_to_an_unknown_contact_stores_nothing(bus: Bus) -> None:
    store = await JetStreamConversations.open(bus.js)
    assert await store.append("acme", "nobody", _message("nobody", "hello")) is None
    assert await store.history("acme", "nobody") == []


async def test_the_watch_works_with_the_chats_nats_permissions(secured_nats: SecuredNats) -> None:
    buses = [
        await Bus.connect(secured_nats.url, source="chat", **secured_nats.options("chat"))
        for _ in range(2)
    ]
    here, there = [await JetStreamConversations.open(bus.js) for bus in buses]
    try:
        await here.add(Conversation("acme", "c-1", "v-1", "Kim Minsu", "ko"))
        assert await here.open_for_visitor("acme", "v-1") is not None  # kept here
        assert await there.end("acme", "c-1") is not None

        async def ended_here() -> bool:
            return await here.open_for_visitor("acme", "v-1") is None

        await eventually(ended_here, "the end made over the other connection")
    finally:
        await here.close()
        await there.close()
        for bus in buses:
            await bus.drain()
    assert secured_nats.violations() == []


async def test_history_appends_are_pipelined_not_one_request_each(bus: Bus) -> None:
    """Each append is sent and its ack awaited on the connection's one reply subscription (no
    request, with its own reply inbox and timeout, per message); the history still stores each
    message once, in order, and a message sent again is a duplicate."""
    import asyncio

    store = await JetStreamConversations.open(bus.js)
    conversation = Conversation("acme", "c-9", "v-9", "Kim Minsu", "ko")
    await store.add(conversation)
    requests = 0
    request = bus.nc.request

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal requests
        requests += 1
        return await request(*args, **kwargs)

    bus.nc.request = counting  # type: ignore[method-assign]
    try:
        messages = [_message("c-9", f"메시지 {n}") for n in range(5)]
        stored = await asyncio.gather(
            *(store.append("acme", "c-9", m, conversation) for m in messages)
        )
        again = await store.append("acme", "c-9", messages[0], conversation)
    finally:
        bus.nc.request = request  # type: ignore[method-assign]
    assert requests == 0
    assert all(s is not None for s in stored)
    assert len({s.seq for s in stored if s is not None}) == 5
    assert again is None  # the same message id: stored once
    history = await store.history("acme", "c-9")
    assert sorted(m.text for m in history) == sorted(m.text for m in messages)
    await store.close()


class UncountedJs:
    """JetStream whose new consumers count nothing pending at first, as a consumer created while
    the server is busy can."""

    def __init__(self, js: Any) -> None:
        self.js = js

    async def pull_subscribe(self, *args: Any, **kwargs: Any) -> Any:
        sub = await self.js.pull_subscribe(*args, **kwargs)
        real = sub.consumer_info

        async def consumer_info() -> Any:
            info = await real()
            info.num_pending = 0
            return info

        sub.consumer_info = consumer_info
        return sub

    def __getattr__(self, name: str) -> Any:
        return getattr(self.js, name)


async def test_a_history_is_read_whole_when_a_new_consumer_counts_nothing_pending(
    bus: Bus,
) -> None:
    opened = await JetStreamConversations.open(bus.js)
    await opened.close()
    store = JetStreamConversations(UncountedJs(bus.js), opened.kv)  # type: ignore[arg-type]
    conversation = Conversation("acme", "c-9", "v-9", "Kim Minsu", "ko")
    await store.add(conversation)
    texts = ["청구서가 두 번 왔어요", "확인해 드리겠습니다", "3월분이에요"]
    seqs = [
        (await store.append("acme", "c-9", _message("c-9", t), conversation)).seq  # type: ignore[union-attr]
        for t in texts
    ]
    assert [m.text for m in await store.history("acme", "c-9")] == texts
    assert [m.text for m in await store.history("acme", "c-9", seqs[0])] == texts[1:]
    assert await store.history("acme", "c-9", seqs[-1]) == []
    assert await store.history("acme", "c-other") == []

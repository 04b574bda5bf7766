"""Erasing a chat contact against the chat's real JetStream stores: its history is gone
(switchboard.core.stream_erasure, run by the case service), from the store's files too, and the
chat, on CustomerErased, purges its conversation record and its visitor's pointer from the
key-value bucket; other contacts and tenants keep theirs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.js.errors import KeyNotFoundError, NotFoundError

from switchboard.chat.adapters.conversations import KV_BUCKET, JetStreamConversations
from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.domain.model import ChatMessage, Conversation
from switchboard.core import events, stores, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2

ERASED_TEXT = "c-one asks about invoice 7731"
KEPT_TEXT = "c-two keeps this 9902"
OTHER_TENANT_TEXT = "globex c-one keeps this 5513"


def _conversation(
    tenant: str, contact_id: str, visitor: str, name: str, email: str = ""
) -> Conversation:
    return Conversation(tenant, contact_id, visitor, name, "ko", email=email)


def _message(contact_id: str, text: str) -> ChatMessage:
    return ChatMessage(events.new_id(), contact_id, "customer", text, datetime.now(UTC))


def _store_holds(store: Path, text: str) -> bool:
    needle = text.encode()
    return any(needle in p.read_bytes() for p in store.rglob("*") if p.is_file())


async def test_erasing_a_chat_contact_removes_its_history_and_records(
    bus: Bus, nats_server: NatsServer
) -> None:
    store = await JetStreamConversations.open(bus.js)
    await store.add(_conversation("acme", "c-1", "v-1", "Kim Minsu", "minsu@example.kr"))
    await store.add(_conversation("acme", "c-2", "v-2", "Kept Customer"))
    await store.add(_conversation("globex", "c-1", "v-1", "Other Tenant"))
    for n in range(3):
        await store.append("acme", "c-1", _message("c-1", f"{ERASED_TEXT} #{n}"))
        await store.append("acme", "c-2", _message("c-2", KEPT_TEXT))
        await store.append("globex", "c-1", _message("c-1", OTHER_TENANT_TEXT))
    assert (await store.open_for_visitor("acme", "v-1")) is not None

    assert await stream_erasure.erase_contacts(bus.js, "acme", ["c-1"]) == 3

    assert await store.history("acme", "c-1") == []
    kept = await store.get("acme", "c-2")
    assert kept is not None and kept.customer_name == "Kept Customer"
    assert [m.text for m in await store.history("acme", "c-2")] == [KEPT_TEXT] * 3
    assert await store.open_for_visitor("acme", "v-2") is not None
    other = await store.open_for_visitor("globex", "v-1")
    assert other is not None and other.contact_id == "c-1"
    assert [m.text for m in await store.history("globex", "c-1")] == [OTHER_TENANT_TEXT] * 3
    assert await stream_erasure.erase_contacts(bus.js, "acme", ["c-1"]) == 0

    await bus.drain()
    nats_server.stop()  # everything on disk
    assert not _store_holds(nats_server.store_dir, ERASED_TEXT)
    for text in (KEPT_TEXT, OTHER_TENANT_TEXT):
        assert _store_holds(nats_server.store_dir, text), text


def _customer_erased(tenant: str, *contact_ids: str) -> case_events_pb2.CustomerErased:
    return case_events_pb2.CustomerErased(
        meta=events.new_meta(tenant, 0, "case"), customer_id="cust-1", contact_ids=contact_ids
    )


async def test_customer_erased_purges_the_conversation_records(chat: ChatApp, bus: Bus) -> None:
    store = await JetStreamConversations.open(bus.js)
    await store.add(_conversation("demo", "c-1", "v-1", "Kim Minsu", "minsu@example.kr"))
    await store.add(_conversation("demo", "c-2", "v-2", "Kept Customer"))
    await store.add(_conversation("acme", "c-1", "v-1", "Other Tenant"))
    erased_keys = ["c.demo.c-1", "v.demo.v-1"]
    revisions = [e.revision for k in erased_keys for e in await stores.history(store.kv, k)]
    assert len(revisions) == 2  # the record and the pointer (the bucket keeps one revision)

    # The case service's event, naming the customer's contacts of every channel.
    await bus.publish(_customer_erased("demo", "c-1", "mail-9@x", "fax-3"))

    async def forgotten() -> bool:
        return await store.get("demo", "c-1") is None

    await eventually(forgotten)
    assert await store.open_for_visitor("demo", "v-1") is None
    for key in erased_keys:
        with pytest.raises(KeyNotFoundError):
            await store.kv.get(key)
        # Purged: only the marker is left, no earlier revision.
        assert [e.operation for e in await stores.history(store.kv, key)] == ["PURGE"]
    for revision in revisions:
        with pytest.raises(NotFoundError):
            await bus.js.get_msg(f"KV_{KV_BUCKET}", revision)
    # A late update of the contact finds nothing: nothing writes the record back.
    assert await store.update("demo", "c-1", lambda c: setattr(c, "ended", True)) is None
    assert await store.get("demo", "c-1") is None

    kept = await store.open_for_visitor("demo", "v-2")
    assert kept is not None and kept.customer_name == "Kept Customer"
    other = await store.open_for_visitor("acme", "v-1")
    assert other is not None and other.customer_name == "Other Tenant"

    # Delivered again: harmless.
    assert chat.chat is not None
    await chat.chat.on_customer_erased(_customer_erased("demo", "c-1"))
    assert await store.forget("demo", ["c-1"]) == 0
    assert (await store.get("demo", "c-2")) is not None

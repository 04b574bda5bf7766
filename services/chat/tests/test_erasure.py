"""Erasing a chat contact (switchboard.core.stream_erasure, run by the case service) against the
chat's real JetStream stores: its history is gone, from the store's files too; other contacts and
tenants keep theirs. (Its conversation record, in a key-value bucket, is not erased there: see
the module's documentation.)"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from switchboard.chat.adapters.conversations import JetStreamConversations
from switchboard.chat.domain.model import ChatMessage, Conversation
from switchboard.core import events, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer

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

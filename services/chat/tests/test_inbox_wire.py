"""The inbox's view of contacts: the first-response SLA by the channel a contact is answered on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from switchboard.chat.inbox import wire
from switchboard.chat.inbox.desk import Desk, DeskContact
from switchboard.chat.inbox.directory import AgentProfile
from switchboard.chat.inbox.service import Inbox
from switchboard.chat.notifier import OFFLINE_SUBJECT
from switchboard.v1 import case_pb2, contact_pb2, events_pb2

AT = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
AT_MS = int(AT.timestamp() * 1000)


def chat(conversation_id: str) -> contact_pb2.Contact:
    c = contact_pb2.Contact(
        contact_id="c-1", channel=contact_pb2.CHANNEL_CHAT, conversation_id=conversation_id
    )
    c.created_at.FromDatetime(AT)
    return c


def test_a_live_chat_has_the_chat_minute() -> None:
    data = wire.contact(chat("visitor-1"))
    assert data["reply_channel"] == "chat"
    assert data["sla_due"] == AT_MS + 60_000


def test_an_offline_chat_message_is_answered_by_email_with_the_email_day() -> None:
    data = wire.contact(chat("offline:visitor-1"))
    assert data["reply_channel"] == "email"
    assert data["sla_due"] == AT_MS + 24 * 3600 * 1000


def test_a_restored_offline_chat_message_keeps_the_email_day() -> None:
    case = case_pb2.Case(case_id="case-1")
    k = case_pb2.CaseContact(
        contact_id="c-1", channel=contact_pb2.CHANNEL_CHAT, subject=OFFLINE_SUBJECT
    )
    k.created_at.FromDatetime(AT)
    data = wire.restored_contact(case, k)
    assert data["reply_channel"] == "email"
    assert data["sla_due"] == AT_MS + 24 * 3600 * 1000
    live = case_pb2.CaseContact(contact_id="c-2", channel=contact_pb2.CHANNEL_CHAT)
    live.created_at.FromDatetime(AT)
    assert wire.restored_contact(case, live)["sla_due"] == AT_MS + 60_000


async def test_delivery_status_reaches_the_reply_and_never_goes_back() -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []

    async def emit(event: str, data: dict[str, Any]) -> None:
        emitted.append((event, data))

    async def surge_of(tenant: str) -> dict[str, Any]:
        return {"level": 0, "queue": ""}

    inbox = Inbox(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        "secret",
        None,
        "",
        "",
        surge_of=surge_of,
    )
    desk = Desk(
        AgentProfile("demo", "ko-1", "이수진", "agent", "ko"), cast(Any, None), emit, surge_of
    )
    reply = {"id": "cmd-1", "text": "확인해 보겠습니다.", "delivery": "queued"}
    desk.contacts["c-1"] = DeskContact({"contact_id": "c-1", "channel": "email"}, 0, [reply])
    inbox.desks[("demo", "ko-1")] = desk

    def status(state: int, tenant: str = "demo") -> events_pb2.DeliveryStatus:
        return events_pb2.DeliveryStatus(
            meta=events_pb2.EventMeta(tenant=tenant),
            command_id="cmd-1",
            contact_id="c-1",
            state=state,  # type: ignore[arg-type]
            detail="250 ok",
        )

    await inbox.on_delivery_status(status(events_pb2.DELIVERY_STATE_FAILED, tenant="other"))
    assert reply["delivery"] == "queued" and emitted == []
    await inbox.on_delivery_status(status(events_pb2.DELIVERY_STATE_DELIVERED))
    assert reply["delivery"] == "delivered"
    [(event, data)] = emitted
    assert event == "contact" and data["replies"][0]["delivery"] == "delivered"
    await inbox.on_delivery_status(status(events_pb2.DELIVERY_STATE_SENT))  # late
    assert reply["delivery"] == "delivered" and len(emitted) == 1

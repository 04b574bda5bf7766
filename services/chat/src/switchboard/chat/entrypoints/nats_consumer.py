"""The chat's subscriptions on the bus: every message reaches sockets through these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg

from switchboard.chat.handlers import Chat
from switchboard.chat.inbox.service import Inbox
from switchboard.core import events
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.v1 import case_events_pb2, events_pb2

MESSAGE_ADDED = events.spec_for(events_pb2.MessageAdded).type_name


def _handled_here(chat: Chat) -> Callable[[Msg], bool]:
    """A chat message this replica published, stored and showed, on its way back from the bus
    (subject contact.<tenant>.chat.message_added, event id = message id): acknowledged without
    being decoded. Every other event, and a message stored elsewhere or not yet, is handled."""

    def handled(msg: Msg) -> bool:
        headers = msg.headers
        if not headers or headers.get(events.TYPE_HEADER) != MESSAGE_ADDED:
            return False
        parts = msg.subject.split(".")
        return (
            len(parts) == 4
            and parts[2] == "chat"
            and chat.message_done(parts[1], headers.get("Nats-Msg-Id", ""))
        )

    return handled


def _contact_ended(
    chat: Chat, inbox: Inbox | None
) -> Callable[[events_pb2.ContactEnded], Awaitable[None]]:
    """The chat's conversation ends; the agent's desk in this process shows it ended."""

    async def handle(event: events_pb2.ContactEnded) -> None:
        await chat.on_contact_ended(event)
        if inbox is not None:
            await inbox.on_contact_ended(event)
            await inbox.calls.on_contact_ended(event)

    return handle


def _contact_assigned(
    chat: Chat, inbox: Inbox | None
) -> Callable[[events_pb2.ContactAssigned], Awaitable[None]]:
    """A chat's agent joins; a call's assignment is shared with the wallboards' live calls."""

    async def handle(event: events_pb2.ContactAssigned) -> None:
        await chat.on_contact_assigned(event)
        if inbox is not None:
            await inbox.calls.on_contact_assigned(event)

    return handle


def subscribe(bus: Bus, chat: Chat, durable: str, inbox: Inbox | None = None) -> None:
    options = ConsumerOptions(handled=_handled_here(chat))
    bus.subscribe(durable, events_pb2.ContactCreated, chat.on_contact_created, options)
    bus.subscribe(durable, events_pb2.MessageAdded, chat.on_message_added)
    bus.subscribe(durable, events_pb2.ContactQueued, chat.on_contact_queued)
    bus.subscribe(durable, events_pb2.ContactAssigned, _contact_assigned(chat, inbox))
    bus.subscribe(durable, events_pb2.ContactEnded, _contact_ended(chat, inbox))
    bus.subscribe(durable, events_pb2.ContactAbandoned, chat.on_contact_abandoned)
    # An erased customer's conversation records (docs/security.md, "Erasure on the bus").
    bus.subscribe(durable, case_events_pb2.CustomerErased, chat.on_customer_erased)
    if inbox is not None:
        # What became of the agents' email and fax replies, shown on them in the inbox.
        bus.subscribe(durable, events_pb2.DeliveryStatus, inbox.on_delivery_status)

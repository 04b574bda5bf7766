"""The chat's subscriptions on the bus: every message reaches sockets through these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from switchboard.chat.handlers import Chat
from switchboard.chat.inbox.service import Inbox
from switchboard.core.bus import Bus
from switchboard.v1 import case_events_pb2, events_pb2


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
    bus.subscribe(durable, events_pb2.ContactCreated, chat.on_contact_created)
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

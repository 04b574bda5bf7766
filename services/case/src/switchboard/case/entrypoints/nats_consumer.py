"""The case service's subscriptions on the bus."""

from __future__ import annotations

from switchboard.case.handlers import CaseHandlers
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.v1 import events_pb2


def subscribe(bus: Bus, handlers: CaseHandlers, durable: str, ack_wait: float = 30.0) -> None:
    # Each fetched batch is one transaction (see CaseHandlers.batch).
    options = ConsumerOptions(ack_wait=ack_wait, batch_scope=handlers.batch)
    bus.subscribe(durable, events_pb2.ContactCreated, handlers.on_contact_created, options)
    bus.subscribe(durable, events_pb2.MessageAdded, handlers.on_message_added)
    bus.subscribe(durable, events_pb2.ContactQueued, handlers.on_contact_queued)
    bus.subscribe(durable, events_pb2.ContactOffered, handlers.on_contact_offered)
    bus.subscribe(durable, events_pb2.ContactAssigned, handlers.on_contact_assigned)
    bus.subscribe(durable, events_pb2.ContactEnded, handlers.on_contact_ended)
    bus.subscribe(durable, events_pb2.ContactAbandoned, handlers.on_contact_abandoned)
    bus.subscribe(durable, events_pb2.ContactHeld, handlers.on_contact_held)
    bus.subscribe(durable, events_pb2.ContactTransferred, handlers.on_contact_transferred)

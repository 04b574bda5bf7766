"""The case service's subscriptions on the bus."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from switchboard.case.handlers import CaseHandlers
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.v1 import email_pb2, events_pb2, fax_pb2


def handlers_by_type(handlers: CaseHandlers) -> dict[type, Callable[[Any], Awaitable[None]]]:
    """The handler of each event type the case service records."""
    return {
        events_pb2.ContactCreated: handlers.on_contact_created,
        events_pb2.MessageAdded: handlers.on_message_added,
        events_pb2.ContactQueued: handlers.on_contact_queued,
        events_pb2.ContactOffered: handlers.on_contact_offered,
        events_pb2.ContactOfferWithdrawn: handlers.on_contact_offer_withdrawn,
        events_pb2.ContactAssigned: handlers.on_contact_assigned,
        events_pb2.ContactEnded: handlers.on_contact_ended,
        events_pb2.ContactAbandoned: handlers.on_contact_abandoned,
        events_pb2.ContactHeld: handlers.on_contact_held,
        events_pb2.ContactTransferred: handlers.on_contact_transferred,
        events_pb2.ContactSupervised: handlers.on_contact_supervised,
        events_pb2.RecordingPlayed: handlers.on_recording_played,
        events_pb2.AgentStateChanged: handlers.on_agent_state_changed,
        # Only the objects they name, for erasure (object_erasure).
        email_pb2.EmailReceived: handlers.on_email_received,
        fax_pb2.FaxProcessed: handlers.on_fax_processed,
    }


def subscribe(
    bus: Bus, handlers: CaseHandlers, durable: str, ack_wait: float = 30.0, batch: int = 256
) -> None:
    # Each fetched batch, up to `batch` events, is one transaction (see CaseHandlers.batch).
    # Unacknowledged: the batch being recorded and the next one, fetched meanwhile.
    options = ConsumerOptions(
        batch=batch,
        ack_wait=ack_wait,
        batch_scope=handlers.batch,
        fetch_ahead=True,
        max_ack_pending=max(ConsumerOptions.max_ack_pending, 2 * batch),
    )
    for event_type, handler in handlers_by_type(handlers).items():
        bus.subscribe(durable, event_type, handler, options)

"""The router's subscriptions on the bus (the leader's only)."""

from __future__ import annotations

from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.router.handlers import Router
from switchboard.v1 import events_pb2


def subscribe(
    bus: Bus, router: Router, durable: str, options: ConsumerOptions | None = None
) -> None:
    bus.subscribe(durable, events_pb2.ContactCreated, router.on_contact_created, options)
    bus.subscribe(durable, events_pb2.ContactAbandoned, router.on_contact_abandoned, options)
    bus.subscribe(durable, events_pb2.ContactEnded, router.on_contact_ended, options)
    bus.subscribe(durable, events_pb2.ContactTransferred, router.on_contact_transferred, options)
    bus.subscribe(durable, events_pb2.ContactHeld, router.on_contact_held, options)

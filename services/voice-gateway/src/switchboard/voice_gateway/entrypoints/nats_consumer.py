"""The gateway's subscriptions: the router's offers for the calls this replica holds."""

from __future__ import annotations

from switchboard.core.bus import Bus
from switchboard.v1 import events_pb2
from switchboard.voice_gateway.gateway import Gateway


def subscribe(bus: Bus, gateway: Gateway, durable: str) -> None:
    bus.subscribe(durable, events_pb2.ContactOffered, gateway.on_offered)

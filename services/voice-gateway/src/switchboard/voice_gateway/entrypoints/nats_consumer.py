"""The gateway's subscriptions: the router's offers for the calls this replica holds."""

from __future__ import annotations

from switchboard.core.bus import Bus
from switchboard.v1 import events_pb2
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg


def subscribe(bus: Bus, agent_leg: AgentLeg, durable: str) -> None:
    bus.subscribe(durable, events_pb2.ContactOffered, agent_leg.on_offered)

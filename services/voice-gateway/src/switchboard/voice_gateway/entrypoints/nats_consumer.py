"""The gateway's subscriptions: the router's offers for the calls this replica holds and their
withdrawals, and the other replicas' questions for the call an agent is on."""

from __future__ import annotations

from switchboard.core.bus import Bus
from switchboard.v1 import events_pb2
from switchboard.voice_gateway.adapters.replicas import NatsReplicas
from switchboard.voice_gateway.handlers.agent_leg import AgentLeg
from switchboard.voice_gateway.handlers.supervision import Supervision


def subscribe(bus: Bus, agent_leg: AgentLeg, durable: str) -> None:
    bus.subscribe(durable, events_pb2.ContactOffered, agent_leg.on_offered)
    bus.subscribe(durable, events_pb2.ContactOfferWithdrawn, agent_leg.on_withdrawn)


async def answer_replicas(replicas: NatsReplicas, supervision: Supervision) -> None:
    """Tell another replica, where a supervisor dialled in, that an agent's call is here."""
    await replicas.answer(supervision.held_here)

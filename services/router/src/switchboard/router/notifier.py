"""The router's one place for publishing its decisions as events."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from google.protobuf.message import Message

from switchboard.core import events, telemetry
from switchboard.router.domain import model
from switchboard.v1 import events_pb2

SOURCE = "router"


class Publisher(Protocol):
    async def publish_async(self, event: Message) -> asyncio.Future[Any]: ...


class RoutingNotifier:
    """Sends events in decision order without waiting for each ack; the caller awaits `pending`
    (all of JetStream's acks) once it no longer holds the router's lock."""

    def __init__(self, bus: Publisher) -> None:
        self.bus = bus
        self.pending: list[asyncio.Future[Any]] = []

    async def _publish(self, state: model.ContactState, event: Message) -> None:
        # Decisions made outside the contact's own trace (a timer, a freed agent) still join it.
        carrier = {"traceparent": state.traceparent} if state.traceparent else None
        with telemetry.continued(carrier):
            self.pending.append(await self.bus.publish_async(event))

    def take_pending(self) -> list[asyncio.Future[Any]]:
        pending, self.pending = self.pending, []
        return pending

    def _meta(self, state: model.ContactState, event_id: str | None = None) -> events_pb2.EventMeta:
        return events.new_meta(state.tenant, state.contact.channel, SOURCE, event_id)

    async def queued(self, state: model.ContactState, position: int) -> None:
        await self._publish(
            state,
            events_pb2.ContactQueued(
                meta=self._meta(state, f"{state.contact_id}:queued"),
                contact_id=state.contact_id,
                queue=state.queue,
                position=position,
            ),
        )

    async def offered(self, offer: model.Offer, state: model.ContactState) -> None:
        event = events_pb2.ContactOffered(
            meta=self._meta(state, f"{offer.offer_id}:offered"),
            contact_id=state.contact_id,
            agent_id=offer.agent_id,
            offer_id=offer.offer_id,
        )
        event.expires_at.FromSeconds(int(offer.expires_at))
        await self._publish(state, event)

    async def assigned(
        self, state: model.ContactState, agent: model.AgentState, waited: float
    ) -> None:
        event = events_pb2.ContactAssigned(
            meta=self._meta(state, f"{state.offer_id or state.contact_id}:assigned"),
            contact_id=state.contact_id,
            agent_id=agent.agent_id,
            agent_name=agent.display_name,
            offer_id=state.offer_id,
            queue=state.queue,
        )
        event.waited.FromNanoseconds(int(waited * 1e9))
        await self._publish(state, event)

    async def ended(self, state: model.ContactState, agent_id: str, code: str) -> None:
        await self._publish(
            state,
            events_pb2.ContactEnded(
                meta=self._meta(state, f"{state.contact_id}:ended"),
                contact_id=state.contact_id,
                agent_id=agent_id,
                reason=events_pb2.END_REASON_COMPLETED,
                wrap_up_code=code,
            ),
        )

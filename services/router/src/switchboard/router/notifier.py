"""The router's one place for publishing its decisions as events.

Event ids are derived from the decision (the offer id, the contact id), so publishing the same
decision again — as a new leader does for the last decisions of the old one — is de-duplicated by
JetStream and ignored by idempotent consumers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from switchboard.core import events
from switchboard.core.publishing import Publisher
from switchboard.router.domain import engine as eng
from switchboard.v1 import contact_pb2, events_pb2

SOURCE = "router"


def _duration(field: Any, seconds: float) -> None:
    field.FromNanoseconds(int(max(0.0, seconds) * 1e9))


def surge_event(effect: eng.SurgeChanged, at: float) -> events_pb2.SurgeLevelChanged:
    """The event a surge change is published as (and told to agents on their sessions)."""
    meta = events.new_meta(
        effect.tenant,
        contact_pb2.CHANNEL_UNSPECIFIED,
        SOURCE,
        f"surge:{effect.tenant}:{int(at * 1000)}:{effect.level}",
        at,
    )
    return events_pb2.SurgeLevelChanged(
        meta=meta,
        queue=effect.queue,
        level=effect.level,
        previous_level=effect.previous,
        reason=effect.reason,
        actions=sorted(effect.actions),
        abandonment_rate=effect.abandonment_rate,
        queued=effect.queued,
    )


class RoutingNotifier:
    """Sends events in decision order without waiting for each ack; the caller sends what it
    gave (`flush`) and awaits the acks once it no longer holds the router's lock.

    A publisher that can send a batch under one ack (the Bus: `publish_batch_async`) is given
    the events of one `flush` at once, and its one future stands for all of their acks (a future
    and a deadline per event cost more on the router's loop than the sending itself); another
    is given each event as it comes (`publish_async`)."""

    def __init__(self, bus: Publisher) -> None:
        self.bus = bus
        self.pending: list[asyncio.Future[Any]] = []
        self._batch: (
            Callable[[list[tuple[Message, str]]], Awaitable[asyncio.Future[Any]]] | None
        ) = getattr(bus, "publish_batch_async", None)
        self._unsent: list[tuple[Message, str]] = []

    async def flush(self) -> list[asyncio.Future[Any]]:
        """Send what was given since the last flush; the futures of every ack not taken yet."""
        if self._unsent:
            assert self._batch is not None
            unsent, self._unsent = self._unsent, []
            self.pending.append(await self._batch(unsent))
        pending, self.pending = self.pending, []
        return pending

    def drop_unsent(self) -> None:
        """Forget what was given since the last flush (its publication failed half-way)."""
        self._unsent.clear()

    async def _send(self, event: Message, traceparent: str = "") -> None:
        # Decisions made outside the contact's own trace (a timer, a freed agent) still join it;
        # its traceparent goes into the event's headers as it is (no tracing work per event).
        if self._batch is not None:
            self._unsent.append((event, traceparent))  # validated as it is sent
            return
        self.pending.append(await self.bus.publish_async(event, traceparent))

    @staticmethod
    def _meta(c: eng.Contact, event_id: str, at: float) -> Any:
        return events.new_meta(c.tenant, c.channel, SOURCE, event_id, at)

    async def publish(self, effect: eng.Effect, at: float) -> None:
        """Publish what `effect` (decided at `at`) tells the platform; some effects tell
        nothing (an end the router does not announce)."""
        method = _PUBLISHERS.get(type(effect))
        if method is not None:
            await method(self, effect, at)

    # ---- one method per event ----------------------------------------------------------------

    async def queued(self, effect: eng.Queued, at: float) -> None:
        c = effect.contact
        await self._send(
            events_pb2.ContactQueued(
                meta=self._meta(c, f"{c.contact_id}:queued", at),
                contact_id=c.contact_id,
                queue=c.queue,
                position=effect.position,
            ),
            c.traceparent,
        )

    async def offered(self, effect: eng.Offered, at: float) -> None:
        c, offer = effect.contact, effect.offer
        offered = events_pb2.ContactOffered(
            meta=self._meta(c, f"{offer.offer_id}:offered", at),
            contact_id=c.contact_id,
            agent_id=offer.agent_id,
            offer_id=offer.offer_id,
        )
        offered.expires_at.FromNanoseconds(int(offer.expires_at * 1e9))
        await self._send(offered, c.traceparent)

    async def withdrawn(self, effect: eng.OfferWithdrawn, at: float) -> None:
        offer, c = effect.offer, effect.contact
        channel = c.channel if c is not None else contact_pb2.CHANNEL_UNSPECIFIED
        await self._send(
            events_pb2.ContactOfferWithdrawn(
                meta=events.new_meta(
                    offer.tenant, channel, SOURCE, f"{offer.offer_id}:withdrawn", at
                ),
                contact_id=offer.contact_id,
                agent_id=offer.agent_id,
                offer_id=offer.offer_id,
                reason=effect.reason,
                requeued=effect.requeued,
            ),
            c.traceparent if c is not None else "",
        )

    async def assigned(self, effect: eng.Assigned, at: float) -> None:
        c = effect.contact
        assigned = events_pb2.ContactAssigned(
            meta=self._meta(c, f"{c.offer_id or c.contact_id}:assigned", at),
            contact_id=c.contact_id,
            agent_id=effect.agent.agent_id,
            agent_name=effect.agent.display_name,
            offer_id=c.offer_id,
            queue=c.queue,
        )
        _duration(assigned.waited, effect.waited)
        await self._send(assigned, c.traceparent)

    async def ended(self, effect: eng.Ended, at: float) -> None:
        if not effect.publish:
            return
        c = effect.contact
        ended = events_pb2.ContactEnded(
            meta=self._meta(c, f"{c.contact_id}:ended:{effect.wrap_up_code}", at),
            contact_id=c.contact_id,
            agent_id=effect.agent_id,
            reason=events_pb2.END_REASON_COMPLETED,
            wrap_up_code=effect.wrap_up_code,
            queue=c.queue,
        )
        _duration(ended.wait, c.assigned_at - c.queued_at)
        _duration(ended.talk, effect.talk)
        _duration(ended.hold, effect.hold)
        _duration(ended.wrap_up, effect.wrap_up)
        await self._send(ended, c.traceparent)

    async def step_applied(self, effect: eng.StepApplied, at: float) -> None:
        c = effect.contact
        step = events_pb2.RoutingStepApplied(
            meta=self._meta(c, f"{c.contact_id}:step:{effect.step.name}:{c.queue}", at),
            contact_id=c.contact_id,
            queue=c.queue,
            step=effect.step.name,
            reason=effect.reason,
        )
        _duration(step.waited, effect.waited)
        await self._send(step, c.traceparent)

    async def surge_changed(self, effect: eng.SurgeChanged, at: float) -> None:
        await self._send(surge_event(effect, at))

    async def agent_changed(self, effect: eng.AgentChanged, at: float) -> None:
        a = effect.agent
        meta = events.new_meta(
            a.tenant,
            contact_pb2.CHANNEL_UNSPECIFIED,
            SOURCE,
            f"agent:{a.tenant}:{a.agent_id}:{a.version}:{int(at * 1e6)}",
            at,
        )
        await self._send(
            events_pb2.AgentStateChanged(
                meta=meta,
                agent_id=a.agent_id,
                presence=int(a.presence),
                reason=effect.reason,
                changed_by=effect.by,
            )
        )

    async def transferred(self, effect: eng.Transferred, at: float) -> None:
        c = effect.contact
        await self._send(
            events_pb2.ContactTransferred(
                meta=self._meta(c, f"{c.contact_id}:transfer:{c.seq}:{int(at * 1e6)}", at),
                contact_id=c.contact_id,
                from_agent_id=effect.from_agent,
                to_queue=effect.to_queue,
            ),
            c.traceparent,
        )

    async def hold_changed(self, effect: eng.HoldChanged, at: float) -> None:
        c = effect.contact
        await self._send(
            events_pb2.ContactHeld(
                meta=self._meta(c, f"{c.contact_id}:hold:{effect.held}:{int(at * 1e6)}", at),
                contact_id=c.contact_id,
                agent_id=effect.agent_id,
                held=effect.held,
            ),
            c.traceparent,
        )


# The event each effect is published as; an effect not named here publishes nothing.
_PUBLISHERS: dict[type, Callable[[RoutingNotifier, Any, float], Awaitable[None]]] = {
    eng.Queued: RoutingNotifier.queued,
    eng.Offered: RoutingNotifier.offered,
    eng.OfferWithdrawn: RoutingNotifier.withdrawn,
    eng.Assigned: RoutingNotifier.assigned,
    eng.Ended: RoutingNotifier.ended,
    eng.StepApplied: RoutingNotifier.step_applied,
    eng.SurgeChanged: RoutingNotifier.surge_changed,
    eng.AgentChanged: RoutingNotifier.agent_changed,
    eng.Transferred: RoutingNotifier.transferred,
    eng.HoldChanged: RoutingNotifier.hold_changed,
}

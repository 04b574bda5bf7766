"""The router's application layer: runs engine decisions under one lock and carries out their
effects (events, offers on agents' streams, accept timers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.core import telemetry
from switchboard.core.errors import InvalidArgument, NotFound
from switchboard.router.domain import model
from switchboard.router.notifier import RoutingNotifier
from switchboard.v1 import events_pb2, router_pb2

logger = logging.getLogger(__name__)


class Router:
    def __init__(self, engine: model.Engine, notifier: RoutingNotifier) -> None:
        self.engine = engine
        self.notifier = notifier
        self._lock = asyncio.Lock()
        self._streams: dict[tuple[str, str], asyncio.Queue[router_pb2.Offer | None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def run(self, decide: Callable[[], Any]) -> Any:
        """Run one engine decision and carry out its effects, in decision order."""
        async with self._lock:
            result = decide()
            effects = result[1] if isinstance(result, tuple) else result
            await self._apply(effects)
            acks = self.notifier.take_pending()
        # Sent in order under the lock; JetStream's acks are awaited outside it, so one slow ack
        # does not hold up the next decision. A failed ack fails this call (and so its caller).
        if acks:
            await asyncio.gather(*acks)
        return result

    async def _apply(self, effects: list[model.Effect]) -> None:
        for effect in effects:
            if isinstance(effect, model.Queued):
                await self.notifier.queued(effect.contact, effect.position)
            elif isinstance(effect, model.Offered):
                await self._send_offer(effect)
            elif isinstance(effect, model.OfferWithdrawn):
                timer = self._timers.pop(effect.offer.offer_id, None)
                if timer:
                    timer.cancel()
                logger.info("offer %s withdrawn: %s", effect.offer.offer_id, effect.reason)
            elif isinstance(effect, model.Assigned):
                timer = self._timers.pop(effect.contact.offer_id, None)
                if timer:
                    timer.cancel()
                await self.notifier.assigned(effect.contact, effect.agent, effect.waited)
            elif isinstance(effect, model.Ended):
                await self.notifier.ended(effect.contact, effect.agent_id, effect.wrap_up_code)

    async def _send_offer(self, effect: model.Offered) -> None:
        offer, state = effect.offer, effect.contact
        await self.notifier.offered(offer, state)
        expires = Timestamp()
        expires.FromNanoseconds(int(offer.expires_at * 1e9))
        message = router_pb2.Offer(
            offer_id=offer.offer_id,
            agent_id=offer.agent_id,
            contact=state.contact,
            expires_at=expires,
            traceparent=state.traceparent,
        )
        queue = self._streams.get((offer.tenant, offer.agent_id))
        if queue is not None:
            queue.put_nowait(message)
        loop = asyncio.get_running_loop()
        delay = max(0.0, offer.expires_at - self.engine.clock())
        self._timers[offer.offer_id] = loop.call_later(
            delay, lambda: asyncio.ensure_future(self._expire(offer.offer_id))
        )

    async def _expire(self, offer_id: str) -> None:
        self._timers.pop(offer_id, None)
        await self.run(lambda: self.engine.expire(offer_id))

    # ---- bus handlers (idempotent) -------------------------------------------------------------

    async def on_contact_created(self, event: events_pb2.ContactCreated) -> None:
        contact = event.contact
        if not contact.contact_id:
            raise InvalidArgument("contact.contact_id")
        if contact.tenant != event.meta.tenant:
            raise InvalidArgument("contact.tenant", "differs from meta.tenant")
        traceparent = telemetry.current_traceparent()
        await self.run(lambda: self.engine.add_contact(contact, traceparent))

    async def on_contact_abandoned(self, event: events_pb2.ContactAbandoned) -> None:
        await self.run(lambda: self.engine.withdraw_contact(event.contact_id, "abandoned"))

    async def on_contact_ended(self, event: events_pb2.ContactEnded) -> None:
        if event.meta.source == "router":
            return  # our own wrap-up
        await self.run(lambda: self.engine.withdraw_contact(event.contact_id, "ended by channel"))

    # ---- agents' streams ------------------------------------------------------------------------

    async def connect(self, tenant: str, agent_id: str) -> asyncio.Queue[router_pb2.Offer | None]:
        self.engine.agent(tenant, agent_id)  # NotFound before anything else
        queue: asyncio.Queue[router_pb2.Offer | None] = asyncio.Queue()
        old = self._streams.get((tenant, agent_id))
        if old is not None:
            old.put_nowait(None)  # a newer stream replaces an older one
        self._streams[(tenant, agent_id)] = queue
        await self.run(lambda: self.engine.set_connected(tenant, agent_id, True))
        return queue

    async def disconnect(
        self, tenant: str, agent_id: str, queue: asyncio.Queue[router_pb2.Offer | None]
    ) -> None:
        if self._streams.get((tenant, agent_id)) is not queue:
            return
        del self._streams[(tenant, agent_id)]
        try:
            await self.run(lambda: self.engine.set_connected(tenant, agent_id, False))
        except NotFound:
            pass

    async def accept(self, tenant: str, agent_id: str, offer_id: str) -> model.Assigned:
        await self.run(lambda: self.engine.expire_if_due(offer_id))
        effects = await self.run(lambda: self.engine.accept(tenant, agent_id, offer_id))
        return next(e for e in effects if isinstance(e, model.Assigned))

    def close_streams(self) -> None:
        for queue in self._streams.values():
            queue.put_nowait(None)
        for timer in self._timers.values():
            timer.cancel()


def wall_clock() -> float:
    return time.time()

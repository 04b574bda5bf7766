"""RouterService over gRPC: translates requests into engine commands and results into messages."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.core.errors import InvalidArgument
from switchboard.core.grpc import principal, require
from switchboard.router.domain import model
from switchboard.router.handlers import Router
from switchboard.v1 import contact_pb2, router_pb2, router_pb2_grpc


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def agent_message(agent: model.AgentState) -> router_pb2.Agent:
    return router_pb2.Agent(
        agent_id=agent.agent_id,
        tenant=agent.tenant,
        display_name=agent.display_name,
        languages=[
            router_pb2.LanguageSkill(language=k, proficiency=v) for k, v in agent.languages.items()
        ],
        skills=[router_pb2.Skill(name=k, proficiency=v) for k, v in agent.skills.items()],
        capacity=[
            router_pb2.ChannelCapacity(channel=ch, max_contacts=n)  # type: ignore[arg-type]
            for ch, n in sorted(agent.capacity.items())
        ],
        presence=agent.presence.value,  # type: ignore[arg-type]
        presence_reason=agent.presence_reason,
        active_contact_ids=sorted(agent.active),
        idle_since=_ts(agent.idle_since),
        has_pending_offer=agent.offer_id is not None,
        connected=agent.connected,
    )


def _presence(value: int, field: str) -> model.Presence:
    try:
        return model.Presence(value)
    except ValueError:
        raise InvalidArgument(field, f"{value} is not a presence") from None


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, router: Router) -> None:
        self.router = router
        self.engine = router.engine

    def _acting(self, agent_id: str) -> str:
        if not agent_id:
            raise InvalidArgument("agent_id")
        p = principal()
        p.require_agent_or_manager(agent_id)
        return p.tenant

    async def SignIn(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        languages: dict[str, int] = {}
        for i, lang in enumerate(request.languages):
            if not lang.language:
                raise InvalidArgument(f"languages[{i}].language")
            languages[lang.language] = lang.proficiency or 3
        skills = {s.name: s.proficiency or 3 for s in request.skills if s.name}
        capacity = {c.channel: c.max_contacts for c in request.capacity}
        if contact_pb2.CHANNEL_UNSPECIFIED in capacity:
            raise InvalidArgument("capacity.channel", "must name a channel")
        presence = (
            _presence(request.presence, "presence")
            if request.presence
            else model.Presence.AVAILABLE
        )
        agent, _ = await self.router.run(
            lambda: self.engine.sign_in(
                tenant,
                request.agent_id,
                request.display_name,
                languages,
                skills,
                capacity,
                presence,
            )
        )
        return agent_message(agent)

    async def SignOut(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        agent, _ = await self.router.run(lambda: self.engine.sign_out(tenant, request.agent_id))
        return agent_message(agent)

    async def SetPresence(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "presence")
        presence = _presence(request.presence, "presence")
        agent, _ = await self.router.run(
            lambda: self.engine.set_presence(tenant, request.agent_id, presence, request.reason)
        )
        return agent_message(agent)

    async def StreamOffers(  # type: ignore[no-untyped-def]
        self, request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.Offer]:
        tenant = self._acting(request.agent_id)
        queue = await self.router.connect(tenant, request.agent_id)
        try:
            while True:
                offer = await queue.get()
                if offer is None:
                    return
                yield offer
        finally:
            await self.router.disconnect(tenant, request.agent_id, queue)

    async def AcceptOffer(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "offer_id")
        assigned = await self.router.accept(tenant, request.agent_id, request.offer_id)
        result = router_pb2.Assignment(
            contact_id=assigned.contact.contact_id,
            agent_id=request.agent_id,
            contact=assigned.contact.contact,
            assigned_at=_ts(self.engine.clock()),
        )
        result.waited.FromNanoseconds(int(assigned.waited * 1e9))
        return result

    async def DeclineOffer(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "offer_id")
        await self.router.run(
            lambda: self.engine.decline(tenant, request.agent_id, request.offer_id, request.reason)
        )
        return router_pb2.DeclineOfferResponse()

    async def WrapUp(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "contact_id")
        await self.router.run(
            lambda: self.engine.wrap_up(
                tenant, request.agent_id, request.contact_id, request.wrap_up_code
            )
        )
        return router_pb2.WrapUpResponse()

    async def GetQueueStats(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        now = self.engine.clock()
        stats: dict[str, router_pb2.QueueStats] = {}
        longest: dict[str, float] = {}

        def entry(queue: str) -> router_pb2.QueueStats:
            if queue not in stats:
                stats[queue] = router_pb2.QueueStats(tenant=tenant, queue=queue)
                longest[queue] = 0.0
            return stats[queue]

        for state in self.engine.contacts.values():
            if state.tenant != tenant or (request.queue and state.queue != request.queue):
                continue
            s = entry(state.queue)
            if state.status == model.ContactStatus.WAITING:
                s.waiting += 1
                longest[state.queue] = max(longest[state.queue], now - state.queued_at)
            elif state.status == model.ContactStatus.OFFERED:
                s.offered += 1
                longest[state.queue] = max(longest[state.queue], now - state.queued_at)
            elif state.status == model.ContactStatus.ASSIGNED:
                s.assigned += 1
        if request.queue:
            entry(request.queue)
        counts: dict[int, int] = {}
        for agent in self.engine.agents.values():
            if agent.tenant == tenant:
                counts[agent.presence.value] = counts.get(agent.presence.value, 0) + 1
        by_state = [
            router_pb2.AgentStateCount(presence=p, count=n)  # type: ignore[arg-type]
            for p, n in sorted(counts.items())
        ]
        for name, s in stats.items():
            s.longest_wait.FromNanoseconds(int(longest[name] * 1e9))
            s.agents.extend(by_state)
        return router_pb2.GetQueueStatsResponse(queues=[stats[k] for k in sorted(stats)])

    async def ListAgents(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        agents = sorted(
            (a for a in self.engine.agents.values() if a.tenant == tenant), key=lambda a: a.agent_id
        )
        return router_pb2.ListAgentsResponse(agents=[agent_message(a) for a in agents])

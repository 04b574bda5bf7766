"""RouterService and RouterAdminService over gRPC: requests become engine inputs (through
`Router.run`, so they are journaled), results become messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.core import roles
from switchboard.core.errors import DomainError, InvalidArgument
from switchboard.core.grpc import (
    OFFERS_OPEN,
    acting_for,
    for_anyone,
    principal,
    require,
    status_for,
)
from switchboard.core.service_level import Outcomes
from switchboard.router import metrics
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.domain.model import Attempt
from switchboard.router.handlers import Router, StreamQueue, agent_message
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _dur(field: object, seconds: float) -> None:
    field.FromNanoseconds(int(max(0.0, seconds) * 1e9))  # type: ignore[attr-defined]


# The AgentSessionEvent field each item of an agent's stream goes down a session in.
_SESSION_EVENT = {
    router_pb2.Offer: "offer",
    events_pb2.SurgeLevelChanged: "surge",
    router_pb2.Agent: "agent",
    router_pb2.OfferWithdrawn: "withdrawn",
}


def _assignment(assigned: eng.Assigned, agent_id: str) -> router_pb2.Assignment:
    result = router_pb2.Assignment(
        contact_id=assigned.contact.contact_id,
        agent_id=agent_id,
        contact=contact_pb2.Contact.FromString(assigned.message)
        if assigned.message
        else assigned.contact.contact,
        assigned_at=_ts(assigned.contact.assigned_at),
    )
    _dur(result.waited, assigned.waited)
    return result


def _presence(value: int, field: str) -> eng.Presence:
    try:
        return eng.Presence(value)
    except ValueError:
        raise InvalidArgument(field, f"{value} is not a presence") from None


def queue_stats(router: Router, tenant: str, queue: str) -> router_pb2.QueueStats:
    engine = router.engine
    state = engine.tenant(tenant)
    qs, longest = engine.queue_snapshot(tenant, queue)
    q = state.config.queue(queue)
    out = router_pb2.QueueStats(
        tenant=tenant,
        queue=queue,
        waiting=qs.waiting,
        offered=qs.offered,
        assigned=qs.assigned,
        answered=qs.answered,
        abandoned=qs.abandoned,
        answered_within_threshold=qs.answered_in,
        abandoned_within_threshold=qs.abandoned_in,
        sl_target=q.sl_target,
        surge_level=state.surge_level if state.surge_queue in ("", queue) else 0,
        agents=agent_counts(router, tenant),
    )
    _rates(out)
    _dur(out.longest_wait, longest)
    _dur(out.sl_threshold, q.sl_threshold)
    _dur(out.average_speed_of_answer, qs.answer_wait_total / qs.answered if qs.answered else 0.0)
    return out


def outcomes(stats: router_pb2.QueueStats) -> Outcomes:
    """The window's outcomes: a short abandon is one within the queue's threshold (the
    short-abandon limit defaults to the threshold, as in the reports)."""
    return Outcomes(
        answered=stats.answered,
        answered_within_threshold=stats.answered_within_threshold,
        abandoned=stats.abandoned,
        short_abandoned=stats.abandoned_within_threshold,
    )


def _rates(stats: router_pb2.QueueStats) -> None:
    """SL, SL2 and the abandonment rate by the one formula (switchboard.core.service_level); an
    undefined rate (nothing answered or abandoned in the window) is sent as 0 and the client
    tells it by answered + abandoned = 0."""
    o = outcomes(stats)
    stats.service_level = o.service_level or 0.0
    stats.service_level_2 = o.service_level_2 or 0.0
    stats.abandonment_rate = o.abandon_rate or 0.0


def agent_counts(router: Router, tenant: str) -> list[router_pb2.AgentStateCount]:
    counts = router.engine.tenant(tenant).presence_counts
    return [
        router_pb2.AgentStateCount(presence=int(p), count=n)  # type: ignore[arg-type]
        for p, n in sorted(counts.items())
        if n > 0
    ]


def snapshot(router: Router, tenant: str, queue: str) -> router_pb2.QueueStatsSnapshot:
    router.now()
    engine = router.engine
    names = [queue] if queue else engine.queues_of(tenant)
    queues = [queue_stats(router, tenant, name) for name in names]
    total = router_pb2.QueueStats(tenant=tenant, agents=agent_counts(router, tenant))
    longest = 0.0
    wait_total = 0.0
    for q in queues:
        total.waiting += q.waiting
        total.offered += q.offered
        total.assigned += q.assigned
        total.answered += q.answered
        total.abandoned += q.abandoned
        total.answered_within_threshold += q.answered_within_threshold
        total.abandoned_within_threshold += q.abandoned_within_threshold
        longest = max(longest, q.longest_wait.ToNanoseconds() / 1e9)
        wait_total += q.average_speed_of_answer.ToNanoseconds() / 1e9 * q.answered
    _dur(total.longest_wait, longest)
    if total.answered:
        _dur(total.average_speed_of_answer, wait_total / total.answered)
    _rates(total)
    state = engine.tenant(tenant)
    total.surge_level = state.surge_level
    return router_pb2.QueueStatsSnapshot(
        tenant=tenant,
        at=_ts(router.now()),
        queues=queues,
        total=total,
        surge_level=state.surge_level,
    )


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, router: Router) -> None:
        self.router = router

    @property
    def engine(self) -> eng.Engine:
        return self.router.engine  # replaced on recovery

    @staticmethod
    def _acting(agent_id: str) -> str:
        """The caller's tenant, once the role table lets it act for `agent_id` (an agent acts
        only for itself)."""
        return acting_for(agent_id).tenant

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
            _presence(request.presence, "presence") if request.presence else eng.Presence.AVAILABLE
        )
        agent = await self.router.sign_in(
            tenant, request.agent_id, request.display_name, languages, skills, capacity, presence
        )
        return agent_message(agent)

    @staticmethod
    def _by(agent_id: str) -> tuple[str, str]:
        """The caller's tenant, and who it is when it acts for another agent than itself (a
        supervisor, a partner): "" for the agent itself."""
        caller = acting_for(agent_id)
        return caller.tenant, "" if caller.subject == agent_id else caller.subject

    async def SignOut(self, request, context):  # type: ignore[no-untyped-def]
        tenant, by = self._by(request.agent_id)
        agent = await self.router.sign_out(tenant, request.agent_id, by)
        return agent_message(agent)

    async def SetPresence(self, request, context):  # type: ignore[no-untyped-def]
        tenant, by = self._by(request.agent_id)
        require(request, "presence")
        presence = _presence(request.presence, "presence")
        agent = await self.router.set_presence(
            tenant, request.agent_id, presence, request.reason, by
        )
        return agent_message(agent)

    async def StreamOffers(  # type: ignore[no-untyped-def]
        self, request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.Offer]:
        tenant = self._acting(request.agent_id)
        queue = await self.router.connect(tenant, request.agent_id)
        try:
            # Headers now, not with the first offer: the client knows the stream is open.
            await context.send_initial_metadata(((OFFERS_OPEN, "1"),))
            while True:
                offer = await queue.get()
                if offer is None:
                    return
                if isinstance(offer, router_pb2.Offer):  # the rest goes on sessions only
                    yield offer
        finally:
            await self.router.disconnect(tenant, request.agent_id, queue)

    async def AcceptOffer(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "offer_id")
        assigned = await self.router.accept(tenant, request.agent_id, request.offer_id)
        return _assignment(assigned, request.agent_id)

    async def AgentSession(  # type: ignore[no-untyped-def]
        self, requests, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.AgentSessionEvent]:
        actions = requests.__aiter__()
        try:
            first = await actions.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("action") != "open":
            raise InvalidArgument("open", "the first message of a session must open it")
        agent_id = first.open.agent_id
        caller = acting_for(agent_id)
        tenant = caller.tenant
        # A team lead's or supervisor's own desk is told of every surge change.
        lead = caller.subject == agent_id and caller.has_any(roles.TEAM_LEAD, roles.SUPERVISOR)
        # One queue carries the session's whole output: what the router pushes (offers, surge
        # notices, the agent's state) and the answers to the agent's actions, in that order.
        stream = await self.router.connect(tenant, agent_id, lead=lead)
        await context.send_initial_metadata(((OFFERS_OPEN, "1"),))
        pending: set[asyncio.Future[None]] = set()

        async def take_actions() -> None:
            async for request in actions:
                # Started in arrival order: the router decides them in that order.
                task = asyncio.ensure_future(self._act(tenant, agent_id, request, stream))
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending, return_exceptions=True)
            stream.put_nowait(None)  # the agent closed its side, and every action is answered

        # None from the router: a newer stream replaced this one, or the router stopped.
        worker = asyncio.ensure_future(take_actions())
        try:
            while (item := await stream.get()) is not None:
                if type(item) is router_pb2.AgentSessionEvent:
                    yield item
                else:
                    field = _SESSION_EVENT[type(item)]
                    yield router_pb2.AgentSessionEvent(**{field: item})  # type: ignore[arg-type]
        finally:
            worker.cancel()
            await self.router.disconnect(tenant, agent_id, stream)

    async def _act(
        self,
        tenant: str,
        agent_id: str,
        request: router_pb2.AgentSessionRequest,
        out: StreamQueue,
    ) -> None:
        """One action of an agent's session, answered on it (an error does not end it)."""
        event = router_pb2.AgentSessionEvent(request_id=request.request_id)
        kind = request.WhichOneof("action")
        try:
            if kind in ("accept", "decline", "wrap_up"):
                action = getattr(request, kind)
                if action.agent_id not in ("", agent_id):
                    raise InvalidArgument(f"{kind}.agent_id", "is not the session's agent")
            if kind == "accept":
                require(request.accept, "offer_id")
                assigned = await self.router.accept(tenant, agent_id, request.accept.offer_id)
                event.assigned.CopyFrom(_assignment(assigned, agent_id))
            elif kind == "decline":
                require(request.decline, "offer_id")
                d = request.decline
                await self.router.decline(tenant, agent_id, d.offer_id, d.reason)
                event.declined.SetInParent()
            elif kind == "wrap_up":
                require(request.wrap_up, "contact_id")
                w = request.wrap_up
                await self.router.wrap_up(tenant, agent_id, w.contact_id, w.wrap_up_code)
                event.wrapped_up.SetInParent()
            elif kind == "open":
                raise InvalidArgument("open", "the session is already open")
            else:
                raise InvalidArgument("action", "is required")
        except DomainError as exc:
            code = status_for(exc)
            event.error.code = code.value[0]
            event.error.message = str(exc)
        else:
            code = grpc.StatusCode.OK
        metrics.SESSION_ACTIONS.labels(kind or "none", code.name).inc()
        out.put_nowait(event)

    async def DeclineOffer(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "offer_id")
        await self.router.decline(tenant, request.agent_id, request.offer_id, request.reason)
        return router_pb2.DeclineOfferResponse()

    async def WrapUp(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "contact_id")
        await self.router.wrap_up(
            tenant, request.agent_id, request.contact_id, request.wrap_up_code
        )
        return router_pb2.WrapUpResponse()

    async def GetQueueStats(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        snap = await self.router.durable(lambda: snapshot(self.router, tenant, request.queue))
        return router_pb2.GetQueueStatsResponse(queues=list(snap.queues))

    async def WatchQueueStats(  # type: ignore[no-untyped-def]
        self, request, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.QueueStatsSnapshot]:
        tenant = principal().tenant
        interval = request.interval.ToNanoseconds() / 1e9 if request.HasField("interval") else 1.0
        if interval < 0.1:
            raise InvalidArgument("interval", "must be at least 100 ms")
        while True:
            yield await self.router.durable(lambda: snapshot(self.router, tenant, request.queue))
            await asyncio.sleep(interval)

    async def ListAgents(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant

        def view() -> router_pb2.ListAgentsResponse:
            agents = sorted(
                (a for a in self.engine.agents.values() if a.tenant == tenant),
                key=lambda a: a.agent_id,
            )
            return router_pb2.ListAgentsResponse(agents=[agent_message(a) for a in agents])

        return await self.router.durable(view)

    async def ExplainDecision(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "contact_id")
        return await self.router.durable(lambda: self._explain(tenant, request.contact_id))

    def _explain(self, tenant: str, contact_id: str) -> router_pb2.Decision:
        self.router.now()
        c, state, live = self.engine.explain(tenant, contact_id)
        out = router_pb2.Decision(
            contact_id=c.contact_id,
            tenant=c.tenant,
            queue=c.queue,
            state=state,
            assigned_agent_id=c.agent_id,
            steps=[
                router_pb2.StepFired(step=name, at=_ts(at), reason=reason)
                for name, at, reason in c.decision.steps
            ],
        )
        attempts = list(c.decision.attempts) + ([live] if live is not None else [])
        out.attempts.extend(_attempt(a) for a in attempts)
        return out

    async def GetContactPosition(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "contact_id")
        return await self.router.durable(lambda: self._position(tenant, request.contact_id))

    def _position(self, tenant: str, contact_id: str) -> router_pb2.ContactPosition:
        self.router.now()
        c, position, waiting, estimate = self.engine.position(tenant, contact_id)
        state = eng.STATUS_NAMES.get(c.status, "")
        out = router_pb2.ContactPosition(
            contact_id=c.contact_id, queue=c.queue, position=position, waiting=waiting, state=state
        )
        _dur(out.estimated_wait, estimate)
        return out

    async def TransferContact(self, request, context):  # type: ignore[no-untyped-def]
        require(request, "contact_id")
        require(request, "queue")
        # An agent transfers its own contacts (naming itself); leads transfer any contact.
        p = acting_for(request.agent_id) if request.agent_id else for_anyone()
        await self.router.transfer(p.tenant, request.contact_id, request.queue, request.agent_id)
        return router_pb2.TransferContactResponse()

    async def SetHold(self, request, context):  # type: ignore[no-untyped-def]
        tenant = self._acting(request.agent_id)
        require(request, "contact_id")
        await self.router.set_hold(tenant, request.agent_id, request.contact_id, request.held)
        return router_pb2.SetHoldResponse()


def _attempt(a: Attempt) -> router_pb2.DecisionAttempt:
    return router_pb2.DecisionAttempt(
        offer_id=a.offer_id,
        agent_id=a.agent_id,
        at=_ts(a.at),
        outcome=a.outcome,
        step=a.step,
        candidates=[
            router_pb2.Candidate(
                agent_id=agent_id, proficiency=score, idle_since=_ts(idle), sticky=sticky
            )
            for agent_id, score, idle, sticky in a.candidates
        ],
        excluded=[
            router_pb2.Exclusion(
                agent_id=agent_id,
                reasons=[int(r) for r in reasons],  # type: ignore[misc]
                detail=detail,
            )
            for agent_id, reasons, detail in a.excluded
        ],
        excluded_total=a.excluded_total,
    )


class RouterAdminServicer(router_pb2_grpc.RouterAdminServiceServicer):
    """Run-time configuration. Changing a tenant keeps its queued contacts: they are re-filed
    under the new rules."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def _message(self, tenant: str) -> router_pb2.RouterConfig:
        state = self.router.engine.tenant(tenant)
        version, applied = self.router.engine.config_versions.get(tenant, (0, 0.0))
        return router_pb2.RouterConfig(
            tenant=tenant,
            yaml=state.config.yaml_text,
            version=version,
            applied_at=_ts(applied) if applied else None,
            changes=[
                router_pb2.ConfigChange(version=number, applied_at=_ts(at), actor=actor, diff=diff)
                for number, at, actor, diff in self.router.engine.config_changes.get(tenant, [])
            ],
        )

    async def GetConfig(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        return await self.router.durable(lambda: self._message(tenant))

    async def ApplyConfig(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "yaml")
        parsed = cfg.load_tenant_text(tenant, request.yaml, "ApplyConfig")
        if request.dry_run:
            out = self._message(tenant)
            out.yaml = request.yaml
            return out
        await self.router.apply_tenant_config(parsed, principal().subject)
        return self._message(tenant)

    async def PreviewRouting(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        self.router.now()
        queue, attempt = self.router.engine.preview(
            tenant, request.channel, request.language, tuple(request.skills), request.queue
        )
        return router_pb2.Decision(
            tenant=tenant, queue=queue, state="preview", attempts=[_attempt(attempt)]
        )

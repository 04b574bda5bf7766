"""The router's features over real gRPC with a real nats-server: relaxation steps, sticky routing,
the surge protocol, explanations, statistics, run-time configuration, bad input."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient, SessionAgentClient
from switchboard.testing.waiting import eventually
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc

SECRET = "router-features-secret"
CONFIG = (Path(__file__).parent / "fixtures" / "router_features.yaml").read_text()


@pytest.fixture
async def router(nats_url: str, tmp_path: Path) -> AsyncIterator[RouterApp]:
    path = tmp_path / "router.yaml"
    path.write_text(CONFIG)
    app = RouterApp(
        RouterSettings(
            NATS_URL=nats_url,
            ROUTER_GRPC_PORT=0,
            SWITCHBOARD_AUTH_SECRET=SECRET,
            ROUTER_CONFIG_FILE=str(path),
        )
    )
    await app.start()
    yield app
    await app.stop()


def target(app: RouterApp) -> str:
    return f"127.0.0.1:{app.port}"


_channels: list[grpc.aio.Channel] = []  # a stub does not keep its channel alive


def stub(
    app: RouterApp, roles: tuple[str, ...] = ("supervisor",)
) -> router_pb2_grpc.RouterServiceStub:
    token = auth.mint(SECRET, "acme", "sup", roles)
    _channels.append(sb_grpc.channel(target(app), token))
    return router_pb2_grpc.RouterServiceStub(_channels[-1])


def created(
    cid: str,
    language: str = "ko",
    queue: str = "general",
    phone: str = "",
    skills: tuple[str, ...] = (),
) -> events_pb2.ContactCreated:
    c = contact_pb2.Contact(
        contact_id=cid,
        tenant="acme",
        channel=contact_pb2.CHANNEL_CHAT,
        language=language,
        queue=queue,
        skills=list(skills),
    )
    if phone:
        c.identities.add(kind=contact_pb2.IDENTITY_KIND_PHONE, value=phone)
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"), contact=c
    )


async def agent(
    app: RouterApp, agent_id: str, languages: dict[str, int], **skills: int
) -> AgentClient:
    client = AgentClient(target(app), SECRET, "acme", agent_id)
    await client.sign_in(languages, dict(skills))
    return client


async def test_relaxation_step_fires_and_is_explained(router: RouterApp, bus: Bus) -> None:
    junior = await agent(router, "ko-junior", {"ko": 2})
    await bus.publish(created("c-step"))
    offer = await junior.next_offer()  # only after the step lowered the bar to 2
    assert offer.step == "accept-level-2"
    await junior.accept(offer)
    decision = await stub(router).ExplainDecision(
        router_pb2.ExplainDecisionRequest(contact_id="c-step")
    )
    assert decision.state == "assigned" and decision.assigned_agent_id == "ko-junior"
    assert [s.step for s in decision.steps] == ["accept-level-2"]
    assert "min proficiency 2" in decision.steps[0].reason
    assert decision.attempts[-1].outcome == "accepted"
    assert decision.attempts[-1].step == "accept-level-2"


async def test_sticky_routing_returns_the_customer_to_the_last_agent(
    router: RouterApp, bus: Bus
) -> None:
    first = await agent(router, "ko-a", {"ko": 5})
    second = await agent(router, "ko-b", {"ko": 5})
    await bus.publish(created("c-s1", phone="+821055550000"))
    offer = await first.next_offer()
    assert first.offers.empty() and second.offers.empty()
    await first.accept(offer)
    await first.stub.WrapUp(
        router_pb2.WrapUpRequest(agent_id="ko-a", contact_id="c-s1", wrap_up_code="ok")
    )
    # ko-b has been idle longer, yet the returning customer goes back to ko-a
    await bus.publish(created("c-s2", phone="+821055550000"))
    again = await first.next_offer()
    assert again.contact.contact_id == "c-s2"
    decision = await stub(router).ExplainDecision(
        router_pb2.ExplainDecisionRequest(contact_id="c-s2")
    )
    assert decision.attempts[0].candidates[0].sticky
    await second.close()
    await first.close()


async def test_surge_raised_refuses_breaks_and_clears(router: RouterApp, bus: Bus) -> None:
    sup = stub(router)
    surges: asyncio.Queue[events_pb2.SurgeLevelChanged] = asyncio.Queue()

    async def on_surge(event: events_pb2.SurgeLevelChanged) -> None:
        surges.put_nowait(event)

    bus.subscribe("surge-watch", events_pb2.SurgeLevelChanged, on_surge)
    await bus.start()
    ko = await agent(router, "ko-1", {"ko": 5})
    await bus.publish(created("ja-1", language="ja", queue="slow"))
    await bus.publish(created("ja-2", language="ja", queue="slow"))
    raised = await asyncio.wait_for(surges.get(), 15)
    assert (raised.level, raised.queue) == (3, "slow")
    assert "refuse_breaks" in raised.actions
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ko.stub.SetPresence(
            router_pb2.SetPresenceRequest(
                agent_id="ko-1", presence=router_pb2.PRESENCE_BREAK, reason="lunch"
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "surge level 3" in (refused.value.details() or "")
    stats = await sup.GetQueueStats(router_pb2.GetQueueStatsRequest(queue="slow"))
    assert stats.queues[0].surge_level == 3 and stats.queues[0].waiting == 2
    # A Japanese speaker answers both; idle agents then clear the level.
    ja = await agent(router, "ja-1", {"ja": 5})
    for _ in range(2):
        offer = await ja.next_offer()
        await ja.accept(offer)
        await ja.stub.WrapUp(
            router_pb2.WrapUpRequest(agent_id="ja-1", contact_id=offer.contact.contact_id)
        )
    cleared = await asyncio.wait_for(surges.get(), 15)
    assert (cleared.level, cleared.previous_level) == (0, 3)
    await ko.stub.SetPresence(
        router_pb2.SetPresenceRequest(
            agent_id="ko-1", presence=router_pb2.PRESENCE_BREAK, reason="lunch"
        )
    )
    await ko.close()
    await ja.close()


async def test_surge_tells_agents_on_break_and_team_leads_and_holds_callbacks(
    router: RouterApp, bus: Bus
) -> None:
    surges: asyncio.Queue[events_pb2.SurgeLevelChanged] = asyncio.Queue()

    async def on_surge(event: events_pb2.SurgeLevelChanged) -> None:
        surges.put_nowait(event)

    bus.subscribe("surge-watch", events_pb2.SurgeLevelChanged, on_surge)
    await bus.start()

    async def desk(agent_id: str, languages: dict[str, int], *roles: str) -> SessionAgentClient:
        client = SessionAgentClient(target(router), SECRET, "acme", agent_id, roles=roles)
        await client.sign_in(languages)
        return client

    lead = await desk("lead-1", {"en": 5}, "team_lead")
    resting = await desk("ko-rest", {"zh": 5}, "agent")
    await resting.stub.SetPresence(
        router_pb2.SetPresenceRequest(
            agent_id="ko-rest", presence=router_pb2.PRESENCE_BREAK, reason="lunch"
        )
    )
    working = await desk("ko-work", {"ko": 5}, "agent")
    # One answered and one lost in the queue before the rush: a loss rate of 0.5.
    ja = await agent(router, "ja-1", {"ja": 5})
    await bus.publish(created("ja-a", language="ja", queue="slow"))
    await ja.accept(await ja.next_offer())
    await ja.stub.SignOut(router_pb2.SignOutRequest(agent_id="ja-1"))
    await bus.publish(created("ja-lost", language="fr", queue="slow"))
    await bus.publish(
        events_pb2.ContactAbandoned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"), contact_id="ja-lost"
        )
    )
    await bus.publish(created("ja-1", language="ja", queue="slow"))
    await bus.publish(created("ja-2", language="ja", queue="slow"))
    raised = await asyncio.wait_for(surges.get(), 15)
    assert (raised.level, raised.queue, raised.queued) == (3, "slow", 2)
    assert raised.abandonment_rate == pytest.approx(0.5)
    # The agent on break and the team lead are told on their sessions.
    for told in (resting, lead):
        notice = await asyncio.wait_for(told.surges.get(), 15)
        assert (notice.level, notice.queue, notice.queued) == (3, "slow", 2)
        assert notice.abandonment_rate == pytest.approx(0.5)
        assert "notify_agents" in notice.actions
    # A non-urgent callback waits; an urgent one is offered.
    for cid, priority in (("cb-later", 0), ("cb-urgent", 5)):
        c = created(cid, language="ko", queue="slow").contact
        c.callback, c.priority = True, priority
        await bus.publish(
            events_pb2.ContactCreated(
                meta=events.new_meta("acme", contact_pb2.CHANNEL_VOICE, "test"), contact=c
            )
        )
    offer = await working.next_offer()
    assert offer.contact.contact_id == "cb-urgent"
    assert working.surges.empty()  # working, not a lead: its session carries offers only
    later = await stub(router).GetContactPosition(
        router_pb2.GetContactPositionRequest(contact_id="cb-later")
    )
    assert later.state == "waiting"
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await working.stub.SetPresence(
            router_pb2.SetPresenceRequest(
                agent_id="ko-work", presence=router_pb2.PRESENCE_BREAK, reason="lunch"
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await working.accept(offer)
    await working.wrap_up("cb-urgent")
    # The Japanese customers are answered; the idle team lead clears the level, and the held
    # callback goes out.
    ja2 = await agent(router, "ja-2", {"ja": 5})
    for _ in range(2):
        offer = await ja2.next_offer()
        await ja2.accept(offer)
    cleared = await asyncio.wait_for(surges.get(), 15)
    assert (cleared.level, cleared.previous_level) == (0, 3)
    for told in (resting, lead):
        notice = await asyncio.wait_for(told.surges.get(), 15)
        assert (notice.level, notice.previous_level) == (0, 3)
    offer = await working.next_offer()
    assert offer.contact.contact_id == "cb-later"
    for client in (lead, resting, working, ja, ja2):
        await client.close()


async def test_watch_queue_stats_streams_service_levels(router: RouterApp, bus: Bus) -> None:
    sup = stub(router)
    stream = sup.WatchQueueStats(
        router_pb2.WatchQueueStatsRequest(queue="slow", interval={"nanos": 200_000_000})
    )
    first = await stream.read()
    assert first.queues[0].waiting == 0
    # Nothing answered or abandoned yet: the service level is undefined (sent as 0).
    assert first.total.answered + first.total.abandoned == 0 and first.total.service_level == 0
    en = await agent(router, "en-1", {"en": 5})
    await bus.publish(created("en-c", language="en", queue="slow"))
    offer = await en.next_offer()
    await en.accept(offer)
    await bus.publish(
        events_pb2.ContactAbandoned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"), contact_id="never"
        )
    )
    for _ in range(50):
        snap = await stream.read()
        q = snap.queues[0]
        if q.answered == 1:
            break
    assert q.answered == 1 and q.answered_within_threshold == 1
    assert q.service_level == 1.0 and q.sl_threshold.seconds == 20
    assert q.average_speed_of_answer.ToNanoseconds() >= 0
    stream.cancel()
    await en.close()


async def test_admin_config_applies_at_run_time_and_rejects_bad_yaml(
    router: RouterApp, bus: Bus
) -> None:
    await bus.publish(created("waits", language="ja", queue="slow"))
    _channels.append(sb_grpc.channel(target(router), auth.mint(SECRET, "acme", "ops", ["admin"])))
    admin = router_pb2_grpc.RouterAdminServiceStub(_channels[-1])
    bad = "languages: [ko]\nskills: [billing]\nqueues:\n  - name: a\n    skills: [cooking]\n"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.ApplyConfig(router_pb2.ApplyConfigRequest(yaml=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ApplyConfig:5: tenants.acme.queues[0].skills[0]: unknown skill 'cooking'" in (
        err.value.details() or ""
    )
    good = "languages: [ko, ja]\nqueues:\n  - name: general\n  - name: slow\n  - name: new-queue\n"
    applied = await admin.ApplyConfig(router_pb2.ApplyConfigRequest(yaml=good))
    assert applied.version >= 2 and "new-queue" in applied.yaml
    # The change is kept with who applied it and the lines it changed (the refused one is not).
    assert [(c.version, c.actor) for c in applied.changes] == [(applied.version, "ops")]
    assert "+  - name: new-queue" in applied.changes[0].diff
    got = await admin.GetConfig(router_pb2.GetConfigRequest())
    assert list(got.changes) == list(applied.changes)
    stats = await stub(router).GetQueueStats(router_pb2.GetQueueStatsRequest())
    assert {q.queue: q.waiting for q in stats.queues}["slow"] == 1  # kept through the change
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub(router, ("agent",)).WrapUp(
            router_pb2.WrapUpRequest(agent_id="sup", contact_id="x")
        )
    assert denied.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)


async def test_unknown_agent_and_contact_are_not_found(router: RouterApp) -> None:
    sup = stub(router)
    for call in (
        sup.ExplainDecision(router_pb2.ExplainDecisionRequest(contact_id="nope")),
        sup.GetContactPosition(router_pb2.GetContactPositionRequest(contact_id="nope")),
        sup.SetPresence(
            router_pb2.SetPresenceRequest(agent_id="ghost", presence=router_pb2.PRESENCE_AVAILABLE)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_position_and_estimated_wait(router: RouterApp, bus: Bus) -> None:
    for i in range(3):
        await bus.publish(created(f"zh-{i}", language="zh", queue="slow"))
    sup = stub(router)
    for _ in range(200):  # until the router has consumed all three
        try:
            pos = await sup.GetContactPosition(
                router_pb2.GetContactPositionRequest(contact_id="zh-2")
            )
            if pos.waiting == 3:
                break
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
        await asyncio.sleep(0.05)
    assert (pos.position, pos.waiting, pos.state) == (3, 3, "waiting")
    assert pos.estimated_wait.seconds > 0


def admin_stub(
    app: RouterApp, roles: tuple[str, ...] = ("admin",), tenant: str = "acme"
) -> router_pb2_grpc.RouterAdminServiceStub:
    _channels.append(sb_grpc.channel(target(app), auth.mint(SECRET, tenant, "ops", roles)))
    return router_pb2_grpc.RouterAdminServiceStub(_channels[-1])


async def test_preview_names_who_would_be_offered_and_why_not_the_others(
    router: RouterApp, bus: Bus
) -> None:
    ko = await agent(router, "ko-billing", {"ko": 5}, billing=4)
    zh = await agent(router, "zh-tech", {"zh": 5}, technical=5)
    waiting = created("preview-waits", language="ja", queue="slow")
    await bus.publish(waiting)

    async def queued() -> bool:
        stats = await stub(router).GetQueueStats(router_pb2.GetQueueStatsRequest())
        return {q.queue: q.waiting for q in stats.queues}.get("slow") == 1

    await eventually(queued, "the real contact waits in slow")
    sample = router_pb2.PreviewRoutingRequest(
        channel=contact_pb2.CHANNEL_CHAT, language="ko", skills=["billing"], queue="slow"
    )
    # A supervisor may try it out; the preview queues nothing.
    seen = await admin_stub(router, ("supervisor",)).PreviewRouting(sample)
    assert seen.state == "preview" and seen.queue == "slow"
    attempt = seen.attempts[0]
    assert attempt.outcome == "offered" and attempt.agent_id == "ko-billing"
    assert [c.agent_id for c in attempt.candidates] == ["ko-billing"]
    why = {e.agent_id: (list(e.reasons), e.detail) for e in attempt.excluded}
    assert why["zh-tech"] == (
        [router_pb2.EXCLUSION_REASON_LANGUAGE, router_pb2.EXCLUSION_REASON_SKILL],
        "does not speak ko",
    )
    stats = await stub(router).GetQueueStats(router_pb2.GetQueueStatsRequest())
    assert {q.queue: q.waiting for q in stats.queues}["slow"] == 1  # only the real contact

    # The queue now requires technical skill: the preview follows the change at once, and the
    # contact already waiting stays queued through it.
    admin = admin_stub(router)
    current = await admin.GetConfig(router_pb2.GetConfigRequest())
    changed = re.sub(
        r"^( *)- name: slow\n",
        r"\1- name: slow\n\1  skills: [technical]\n",
        current.yaml,
        flags=re.M,
    )
    assert changed != current.yaml
    await admin.ApplyConfig(router_pb2.ApplyConfigRequest(yaml=changed))
    after = (await admin.PreviewRouting(sample)).attempts[0]
    assert after.outcome == "waiting" and not after.candidates
    why = {e.agent_id: e.detail for e in after.excluded}
    assert why["ko-billing"] == "lacks skill technical"
    stats = await stub(router).GetQueueStats(router_pb2.GetQueueStatsRequest())
    assert {q.queue: q.waiting for q in stats.queues}["slow"] == 1

    # Another tenant's administrator sees none of acme's agents.
    other = await admin_stub(router, tenant="globex").PreviewRouting(sample)
    assert not other.attempts[0].candidates and not other.attempts[0].excluded
    # An agent may not preview, nor apply.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await admin_stub(router, ("agent",)).PreviewRouting(sample)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await admin_stub(router, ("supervisor",)).ApplyConfig(
            router_pb2.ApplyConfigRequest(yaml=changed)
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await ko.close()
    await zh.close()

"""The router over real gRPC with a real nats-server: offers, accept, decline, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from nats.js import api as js_api

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import ActionRefused, AgentClient, SessionAgentClient
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc

SECRET = "router-test-secret"


@pytest.fixture
async def router(nats_url: str) -> AsyncIterator[RouterApp]:
    settings = RouterSettings(
        NATS_URL=nats_url,
        ROUTER_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        ROUTER_ACCEPT_TIMEOUT_SECONDS=1.0,
    )
    app = RouterApp(settings)
    await app.start()
    yield app
    await app.stop()


def created(cid: str, language: str = "ko", tenant: str = "acme") -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta(tenant, contact_pb2.CHANNEL_CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=cid,
            tenant=tenant,
            channel=contact_pb2.CHANNEL_CHAT,
            language=language,
            customer_name="고객",
        ),
    )


async def agent(router: RouterApp, agent_id: str, languages: dict[str, int]) -> AgentClient:
    client = AgentClient(f"127.0.0.1:{router.port}", SECRET, "acme", agent_id)
    await client.sign_in(languages)
    return client


async def routing_events(bus: Bus, kind: str, count: int) -> list[bytes]:
    sub = await bus.js.pull_subscribe(
        f"routing.acme.{kind}",
        stream="EVENTS",
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    msgs = await sub.fetch(count, timeout=10)
    return [m.data for m in msgs]


async def test_offer_accept_publishes_assignment(router: RouterApp, bus: Bus) -> None:
    ko = await agent(router, "ko-1", {"ko": 5})
    zh = await agent(router, "zh-1", {"zh": 5})
    await bus.publish(created("c-1", "ko-KR"))
    offer = await ko.next_offer()
    assert offer.contact.contact_id == "c-1"
    assert offer.traceparent  # the contact's trace travels with the offer
    assignment = await ko.accept(offer)
    assert assignment.contact.customer_name == "고객"
    [data] = await routing_events(bus, "assigned", 1)
    event = events_pb2.ContactAssigned.FromString(data)
    assert (event.contact_id, event.agent_id) == ("c-1", "ko-1")
    assert zh.offers.empty()
    await ko.close()
    await zh.close()


async def test_a_bare_answer_to_the_survey_is_neither_queued_nor_offered(
    router: RouterApp, bus: Bus
) -> None:
    a = await agent(router, "a", {"ko": 5})
    answer = created("s-1")
    answer.contact.survey_answer = 5  # the channel read nothing but a rating
    await bus.publish(answer)
    await bus.publish(created("c-3"))  # behind it on the stream
    offer = await a.next_offer()
    assert offer.contact.contact_id == "c-3"
    queued = [
        events_pb2.ContactQueued.FromString(d) for d in await routing_events(bus, "queued", 5)
    ]
    assert [e.contact_id for e in queued] == ["c-3"]
    assert router.router is not None and "s-1" not in router.router.engine.contacts
    await a.close()


async def test_decline_and_timeout_reoffer(router: RouterApp, bus: Bus) -> None:
    a = await agent(router, "a", {"ko": 5})
    b = await agent(router, "b", {"ko": 3})
    await bus.publish(created("c-2"))
    first = await a.next_offer()
    await a.decline(first, "on another call")
    second = await b.next_offer()
    assert second.contact.contact_id == "c-2"
    # b lets the 1 s accept timeout pass: the contact comes back to a, never to both at once
    third = await a.next_offer()
    assert third.contact.contact_id == "c-2"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await b.accept(second)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await a.accept(third)
    await a.close()
    await b.close()


async def test_errors_are_status_codes(router: RouterApp) -> None:
    target = f"127.0.0.1:{router.port}"
    token = auth.mint(SECRET, "acme", "ko-1", ["agent"])
    async with sb_grpc.channel(target, token) as ch:
        stub = router_pb2_grpc.RouterServiceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SignIn(router_pb2.SignInRequest())
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "agent_id" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.AcceptOffer(router_pb2.AcceptOfferRequest(agent_id="ko-1"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "offer_id" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SetPresence(router_pb2.SetPresenceRequest(agent_id="ko-1", presence=2))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SignIn(router_pb2.SignInRequest(agent_id="someone-else"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with sb_grpc.channel(target, None) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router_pb2_grpc.RouterServiceStub(ch).ListAgents(router_pb2.ListAgentsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with sb_grpc.channel(target, token[:-4] + "AAAA") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await router_pb2_grpc.RouterServiceStub(ch).ListAgents(router_pb2.ListAgentsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await sb_grpc.check_health(target) == "SERVING"


async def test_malformed_event_is_terminated_and_the_router_goes_on(
    router: RouterApp, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    ko = await agent(router, "ko-1", {"ko": 5})
    await bus.js.publish(
        "contact.acme.chat.created",
        b"\xff\x00 not protobuf",
        headers={events.TYPE_HEADER: "switchboard.v1.ContactCreated", "Nats-Msg-Id": "bad-1"},
    )
    await bus.js.publish(
        "contact.acme.chat.created",
        b"",
        headers={events.TYPE_HEADER: "switchboard.v1.Nope", "Nats-Msg-Id": "bad-2"},
    )
    await bus.publish(created("c-good"))
    offer = await ko.next_offer()
    assert offer.contact.contact_id == "c-good"
    assert router.consumer_bus is not None
    for _ in range(100):
        if router.consumer_bus.stats()["router"]["terminated"] >= 2:
            break
        await asyncio.sleep(0.05)
    assert router.consumer_bus.stats()["router"]["terminated"] == 2
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unknown event type 'switchboard.v1.Nope'" in messages
    assert "not a valid switchboard.v1.ContactCreated" in messages or "invalid" in messages
    # terminated, not redelivered: the consumer has nothing pending (once the server has
    # taken the terms, which travel on the router's own connection)
    for _ in range(100):
        info = await bus.js.consumer_info("EVENTS", "router")
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    await ko.close()


async def test_queue_stats_and_agents_are_tenant_scoped(router: RouterApp, bus: Bus) -> None:
    await bus.publish(created("w-1", "ja"))
    await bus.publish(created("w-2", "ja", tenant="globex"))
    target = f"127.0.0.1:{router.port}"
    async with sb_grpc.channel(target, auth.mint(SECRET, "acme", "sup", ["supervisor"])) as ch:
        stub = router_pb2_grpc.RouterServiceStub(ch)
        for _ in range(100):
            stats = await stub.GetQueueStats(router_pb2.GetQueueStatsRequest())
            if stats.queues and stats.queues[0].waiting:
                break
            await asyncio.sleep(0.05)
        assert [(q.tenant, q.queue, q.waiting) for q in stats.queues] == [("acme", "general", 1)]


async def test_an_agent_session_carries_offers_down_and_actions_up(
    router: RouterApp, bus: Bus
) -> None:
    target = f"127.0.0.1:{router.port}"
    ko = SessionAgentClient(target, SECRET, "acme", "ko-1")
    read: list[str] = []  # what the client saw as each offer was read off the stream
    ko.on_offer = lambda offer: read.append(offer.offer_id)
    await ko.sign_in({"ko": 5})
    other = SessionAgentClient(target, SECRET, "acme", "ko-2")
    await other.sign_in({"ko": 3})
    await bus.publish(created("s-1"))
    offer = await ko.next_offer()
    assert offer.contact.contact_id == "s-1"
    assert read == [offer.offer_id]
    assignment = await ko.accept(offer)
    assert (assignment.contact_id, assignment.agent_id) == ("s-1", "ko-1")
    assert assignment.contact.customer_name == "고객"
    [data] = await routing_events(bus, "assigned", 1)
    assert events_pb2.ContactAssigned.FromString(data).contact_id == "s-1"

    # A refused action is answered with its status code; the session goes on.
    with pytest.raises(ActionRefused) as refused:
        await ko.accept(router_pb2.Offer(offer_id="no-such-offer"))
    assert refused.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ActionRefused) as refused:
        await ko._send(accept=router_pb2.AcceptOfferRequest(agent_id="ko-2", offer_id="x"))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT

    await ko.wrap_up("s-1", "resolved")
    await bus.publish(created("s-2"))
    offer = await ko.next_offer()  # ko-1 is free again and the better match
    await ko.decline(offer, "busy")
    reoffer = await other.next_offer()
    assert reoffer.contact.contact_id == "s-2"
    await other.accept(reoffer)
    agents = {
        a.agent_id: a for a in (await ko.stub.ListAgents(router_pb2.ListAgentsRequest())).agents
    }
    assert list(agents["ko-2"].active_contact_ids) == ["s-2"]
    assert not agents["ko-1"].active_contact_ids
    await ko.close()
    await other.close()


async def test_an_agent_session_is_told_what_others_change_about_the_agent(
    router: RouterApp, bus: Bus
) -> None:
    """The agent's own state comes down its session whoever changed it (a supervisor, the
    router's missed-offers rule), and so does every offer of its that is no longer open."""
    ko = SessionAgentClient(f"127.0.0.1:{router.port}", SECRET, "acme", "ko-1")
    await ko.sign_in({"ko": 5})

    async def state() -> router_pb2.Agent:
        return await asyncio.wait_for(ko.states.get(), 15)

    told_withdrawn: list[tuple[str, str]] = []

    async def withdrawn() -> router_pb2.OfferWithdrawn:
        gone = await asyncio.wait_for(ko.withdrawn.get(), 15)
        told_withdrawn.append((gone.offer_id, gone.reason))
        return gone

    opened = await state()  # as the session opened
    assert (opened.agent_id, opened.presence) == ("ko-1", router_pb2.PRESENCE_AVAILABLE)
    channel, supervisor = router_stub(router, auth.mint(SECRET, "acme", "sup-1", ["supervisor"]))
    async with channel:
        # A contact offered to the agent ends while it is offered: the offer is withdrawn.
        await bus.publish(created("w-1"))
        offer = await ko.next_offer()
        await bus.publish(
            events_pb2.ContactAbandoned(
                meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"), contact_id="w-1"
            )
        )
        gone = await withdrawn()
        assert gone.offer_id == offer.offer_id and gone.reason

        # A supervisor puts the agent on a break: the offer on the table goes, the agent is told.
        await bus.publish(created("w-2"))
        offer = await ko.next_offer()
        await supervisor.SetPresence(
            router_pb2.SetPresenceRequest(
                agent_id="ko-1", presence=router_pb2.PRESENCE_BREAK, reason="coaching"
            )
        )
        assert (await withdrawn()).offer_id == offer.offer_id
        told = await state()
        assert (told.presence, told.presence_reason) == (router_pb2.PRESENCE_BREAK, "coaching")
        assert told.presence_set_by == "sup-1"  # who, when it was not the agent

        # Back to available, the agent lets three offers time out (the 1 s accept timeout):
        # each is withdrawn, and the router sets the agent not responding and says so.
        await supervisor.SetPresence(
            router_pb2.SetPresenceRequest(agent_id="ko-1", presence=router_pb2.PRESENCE_AVAILABLE)
        )
        assert (await state()).presence == router_pb2.PRESENCE_AVAILABLE
        for n in range(3):
            await bus.publish(created(f"w-{3 + n}"))
            offer = await ko.next_offer()
            gone = await withdrawn()
            assert (gone.offer_id, gone.reason) == (offer.offer_id, "accept timeout")
        told = await state()
        assert told.presence == router_pb2.PRESENCE_NOT_RESPONDING
        assert told.presence_reason == "missed 3 offers in a row"
        assert told.missed_offers == 3 and told.presence_set_by == ""  # the router's own

        # A supervisor signs the agent out.
        await supervisor.SignOut(router_pb2.SignOutRequest(agent_id="ko-1"))
        told = await state()
        assert (told.presence, told.presence_reason) == (router_pb2.PRESENCE_OFFLINE, "signed out")
        assert told.presence_set_by == "sup-1"
    assert ko.states.empty() and ko.withdrawn.empty() and ko.offers.empty()
    # The agent's own change names no one; the event published for each change says who.
    back = await ko.stub.SetPresence(
        router_pb2.SetPresenceRequest(agent_id="ko-1", presence=router_pb2.PRESENCE_AVAILABLE)
    )
    assert back.presence_set_by == ""
    assert (await state()).presence == router_pb2.PRESENCE_AVAILABLE  # told on the session too
    changes = [
        events_pb2.AgentStateChanged.FromString(data)
        for data in await routing_events(bus, "agent_state", 6)
    ]
    assert [(c.presence, c.changed_by) for c in changes[-3:]] == [
        (router_pb2.PRESENCE_NOT_RESPONDING, ""),
        (router_pb2.PRESENCE_OFFLINE, "sup-1"),
        (router_pb2.PRESENCE_AVAILABLE, ""),
    ]
    # Each withdrawal is published as well, for the channel presenting the offer (the voice
    # gateway stops the agent's phone ringing) and the case record (the contact waits again).
    published = [
        events_pb2.ContactOfferWithdrawn.FromString(data)
        for data in await routing_events(bus, "offer_withdrawn", 5)
    ]
    assert [(w.offer_id, w.reason) for w in published] == told_withdrawn
    assert [(w.contact_id, w.agent_id, w.requeued) for w in published[:2]] == [
        ("w-1", "ko-1", False),  # abandoned: no longer waiting
        ("w-2", "ko-1", True),  # waits for the next agent
    ]
    assert all(w.agent_id == "ko-1" and w.requeued for w in published[2:])
    assert {w.meta.channel for w in published} == {contact_pb2.CHANNEL_CHAT}
    await ko.close()


async def test_an_agent_session_is_authenticated_and_opened_first(router: RouterApp) -> None:
    target = f"127.0.0.1:{router.port}"
    ko = AgentClient(target, SECRET, "acme", "ko-1")
    await ko.stub.SignIn(
        router_pb2.SignInRequest(
            agent_id="ko-1", languages=[router_pb2.LanguageSkill(language="ko")]
        )
    )

    async def first_answer(stub: router_pb2_grpc.RouterServiceStub, *requests: object) -> None:
        call = stub.AgentSession()
        for request in requests:
            await call.write(request)
        await call.read()

    accept = router_pb2.AgentSessionRequest(accept=router_pb2.AcceptOfferRequest(offer_id="o"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first_answer(ko.stub, accept)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must open it" in (err.value.details() or "")

    # An agent's token cannot open another agent's session; no token opens none.
    open_other = router_pb2.AgentSessionRequest(
        open=router_pb2.StreamOffersRequest(agent_id="ko-2")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first_answer(ko.stub, open_other)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    anonymous = router_pb2_grpc.RouterServiceStub(grpc.aio.insecure_channel(target))
    open_own = router_pb2.AgentSessionRequest(open=router_pb2.StreamOffersRequest(agent_id="ko-1"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await first_answer(anonymous, open_own)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await ko.close()


# ---- roles: what an agent and a partner may not do (switchboard.core.roles) ------------------


def router_stub(router: RouterApp, token: str) -> tuple[grpc.aio.Channel, Any]:
    channel = sb_grpc.channel(f"127.0.0.1:{router.port}", token)
    return channel, router_pb2_grpc.RouterServiceStub(channel)


async def test_an_agent_cannot_watch_queue_statistics(router: RouterApp) -> None:
    request = router_pb2.WatchQueueStatsRequest(interval={"nanos": 200_000_000})
    channel, agent_stub = router_stub(router, auth.mint(SECRET, "acme", "ko-1", ["agent"]))
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent_stub.WatchQueueStats(request).read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent_stub.GetQueueStats(router_pb2.GetQueueStatsRequest())
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    lead = auth.mint(SECRET, "acme", "lead-1", ["team_lead"])
    channel, lead_stub = router_stub(router, lead)
    async with channel:
        stream = lead_stub.WatchQueueStats(request)
        assert (await stream.read()).tenant == "acme"
        stream.cancel()


async def test_a_partner_without_act_as_agent_cannot_take_an_agents_offers(
    router: RouterApp, bus: Bus
) -> None:
    ko = await agent(router, "ko-1", {"ko": 5})
    await bus.publish(created("p-1"))
    offer = await ko.next_offer()
    partner = auth.mint(SECRET, "acme", "partner-1", ["partner"])
    channel, partner_stub = router_stub(router, partner)
    async with channel:
        session = partner_stub.AgentSession()
        await session.write(
            router_pb2.AgentSessionRequest(open=router_pb2.StreamOffersRequest(agent_id="ko-1"))
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await session.read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await partner_stub.StreamOffers(router_pb2.StreamOffersRequest(agent_id="ko-1")).read()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await partner_stub.AcceptOffer(
                router_pb2.AcceptOfferRequest(agent_id="ko-1", offer_id=offer.offer_id)
            )
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # The agent's own stream was not taken over: the offer is still the agent's to accept,
    # and a partner granted routing:act-as-agent may accept it in the agent's name.
    assert (await ko.stub.ListAgents(router_pb2.ListAgentsRequest())).agents[0].connected
    acting = auth.mint(SECRET, "acme", "partner-1", ["partner"], scopes=["routing:act-as-agent"])
    channel, acting_stub = router_stub(router, acting)
    async with channel:
        assignment = await acting_stub.AcceptOffer(
            router_pb2.AcceptOfferRequest(agent_id="ko-1", offer_id=offer.offer_id)
        )
    assert (assignment.contact_id, assignment.agent_id) == ("p-1", "ko-1")
    await ko.close()

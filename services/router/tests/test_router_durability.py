"""Durability and availability with a real nats-server: a router killed with SIGKILL recovers
every waiting contact and every agent's state from JetStream and assigns none twice, also when
killed in the middle of a burst's group-committed batches; with two replicas, the standby takes
over when the leader dies."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from switchboard.core import auth, events, router_groups
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.router import journal
from switchboard.router.bootstrap import RouterApp
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.testing.contacts import chat_contact_created as created
from switchboard.testing.processes import ServiceProcess
from switchboard.testing.streams import published
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc

SECRET = "router-durability-secret"


async def assignments(bus: Bus) -> list[str]:
    """Every contact id in a ContactAssigned event so far, in order."""
    return [
        e.contact_id
        for e in await published(bus, "routing.acme.assigned", events_pb2.ContactAssigned)
    ]


async def acknowledged_by_router(bus: Bus) -> None:
    """Wait until the router's consumer has acknowledged every contact event on the bus (each
    only once its decision is in the journal)."""
    stream = events.spec_for(events_pb2.ContactCreated).stream
    for _ in range(200):
        info = await bus.js.consumer_info(stream, router_groups.durable("default"))
        if not info.num_pending and not info.num_ack_pending:  # delivered and acknowledged
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the router has not acknowledged the contact events: {info}")


class RouterProcess(ServiceProcess):
    """`python -m switchboard.router` as a real process, to be killed with SIGKILL."""

    def __init__(self, nats_url: str, port: int, log: Path) -> None:
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "ROUTER_GRPC_PORT": str(port),
            "SWITCHBOARD_AUTH_SECRET": SECRET,
            "SWITCHBOARD_REPLICA_ID": "router-a",
            "ROUTER_SNAPSHOT_INTERVAL_SECONDS": "1",
            "ROUTER_ACCEPT_TIMEOUT_SECONDS": "30",
            "METRICS_PORT": "0",
        }
        target = f"127.0.0.1:{port}"
        super().__init__("switchboard.router", env, target, "switchboard.v1.RouterService", log)


async def test_kill_9_recovers_every_contact_and_agent_and_assigns_none_twice(
    nats_url: str, bus: Bus, tmp_path: Path
) -> None:
    router = RouterProcess(nats_url, free_port(), tmp_path / "router.log")
    await router.start()
    try:
        ko = AgentClient(router.target, SECRET, "acme", "ko-1")
        await ko.sign_in({"ko": 5}, capacity={contact_pb2.CHANNEL_CHAT: 1})
        zh = AgentClient(router.target, SECRET, "acme", "zh-1")
        await zh.sign_in({"zh": 5})
        await zh.stub.SetPresence(
            router_pb2.SetPresenceRequest(
                agent_id="zh-1", presence=router_pb2.PRESENCE_BREAK, reason="lunch"
            )
        )
        for cid in ("c1", "c2", "c3"):
            await bus.publish(created(cid))
        offer = await ko.next_offer()
        assert offer.contact.contact_id == "c1"
        await ko.accept(offer)
        await asyncio.sleep(1.5)  # a snapshot is written; what follows is only in the journal
        await bus.publish(created("c4"))
        await bus.publish(created("ja-1", "ja"))
        sup = router_pb2_grpc.RouterServiceStub(
            sb_grpc.channel(router.target, auth.mint(SECRET, "acme", "sup", ["supervisor"]))
        )
        # The engine counts a contact as waiting as soon as it has decided it, before its
        # journal entry is written; the router acknowledges the contact's event only once
        # JetStream holds that entry. Killed in between, the event comes back after the ack
        # wait, not at restart. Kill once every event published so far is acknowledged: then
        # all four must be there the moment the router is back.
        await acknowledged_by_router(bus)
        stats = await sup.GetQueueStats(router_pb2.GetQueueStatsRequest(queue="general"))
        assert stats.queues[0].waiting == 4

        router.kill()
        await ko.close()
        await zh.close()
        await router.start()

        stats = await sup.GetQueueStats(router_pb2.GetQueueStatsRequest(queue="general"))
        assert (stats.queues[0].waiting, stats.queues[0].assigned) == (4, 1)
        agents = {
            a.agent_id: a for a in (await sup.ListAgents(router_pb2.ListAgentsRequest())).agents
        }
        assert list(agents["ko-1"].active_contact_ids) == ["c1"]
        assert agents["zh-1"].presence == router_pb2.PRESENCE_BREAK
        assert agents["zh-1"].presence_reason == "lunch"
        assert not agents["ko-1"].connected  # its stream died with the old process

        ko = AgentClient(router.target, SECRET, "acme", "ko-1")
        await ko.open_stream()
        await ko.stub.WrapUp(router_pb2.WrapUpRequest(agent_id="ko-1", contact_id="c1"))
        served = []
        for _ in range(3):
            offer = await ko.next_offer()
            served.append(offer.contact.contact_id)
            await ko.accept(offer)
            await ko.stub.WrapUp(
                router_pb2.WrapUpRequest(agent_id="ko-1", contact_id=offer.contact.contact_id)
            )
        assert served == ["c2", "c3", "c4"]
        assigned = await assignments(bus)
        assert sorted(assigned) == ["c1", "c2", "c3", "c4"]  # each exactly once
        await ko.close()
    finally:
        router.stop()


@pytest.fixture
async def replicas(nats_url: str) -> AsyncIterator[tuple[RouterApp, RouterApp]]:
    def app(replica: str) -> RouterApp:
        return RouterApp(
            RouterSettings(
                NATS_URL=nats_url,
                ROUTER_GRPC_PORT=0,
                SWITCHBOARD_AUTH_SECRET=SECRET,
                SWITCHBOARD_REPLICA_ID=replica,
                ROUTER_LEASE_TTL_SECONDS=2.0,
                ROUTER_ACCEPT_TIMEOUT_SECONDS=30,
            )
        )

    first, second = app("router-1"), app("router-2")
    await first.start()
    await second.start()
    yield first, second
    for a in (first, second):
        await a.stop()


async def test_standby_takes_over_when_the_leader_dies(
    replicas: tuple[RouterApp, RouterApp], bus: Bus
) -> None:
    leader, standby = replicas
    assert leader.is_leader and not standby.is_leader
    ko = AgentClient(f"127.0.0.1:{leader.port}", SECRET, "acme", "ko-1")
    await ko.sign_in({"ko": 5})
    await bus.publish(created("before"))
    offer = await ko.next_offer()
    await ko.accept(offer)
    await bus.publish(created("waiting-1", "ja"))

    # The standby refuses work while it follows the journal.
    token = auth.mint(SECRET, "acme", "sup", ["supervisor"])
    standby_stub = router_pb2_grpc.RouterServiceStub(
        sb_grpc.channel(f"127.0.0.1:{standby.port}", token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await standby_stub.SignIn(
            router_pb2.SignInRequest(
                agent_id="x", languages=[router_pb2.LanguageSkill(language="en")]
            )
        )
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    for _ in range(100):  # the standby has replayed the waiting contact
        if "waiting-1" in standby.router.engine.contacts:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    died = time.monotonic()
    await leader.kill()
    await ko.close()
    await asyncio.wait_for(standby.led.wait(), 15)
    took = time.monotonic() - died
    print(f"standby took over {took:.2f}s after the leader died (lease TTL 2s)")

    ko = AgentClient(f"127.0.0.1:{standby.port}", SECRET, "acme", "ko-1")
    await ko.open_stream()
    agents = (await standby_stub.ListAgents(router_pb2.ListAgentsRequest())).agents
    assert [list(a.active_contact_ids) for a in agents if a.agent_id == "ko-1"] == [["before"]]
    stats = await standby_stub.GetQueueStats(router_pb2.GetQueueStatsRequest(queue="general"))
    assert stats.queues[0].waiting == 1
    # New work flows through the new leader.
    await ko.stub.WrapUp(router_pb2.WrapUpRequest(agent_id="ko-1", contact_id="before"))
    await bus.publish(created("after"))
    offer = await ko.next_offer()
    assert offer.contact.contact_id == "after"
    await ko.accept(offer)
    assert sorted(await assignments(bus)) == ["after", "before"]
    await ko.close()


async def test_kill_9_mid_batch_recovers_from_the_typed_journal_and_assigns_none_twice(
    nats_url: str, bus: Bus, tmp_path: Path
) -> None:
    """A burst is routed in group-committed batches; SIGKILL lands while batches are being
    decided, journaled and published. The restarted router recovers from the typed journal
    (snapshot off: the journal alone) and every contact is assigned exactly once."""
    port = free_port()
    router = RouterProcess(nats_url, port, tmp_path / "router.log")
    router.env["ROUTER_SNAPSHOT_INTERVAL_SECONDS"] = "3600"
    await router.start()
    burst = [f"burst-{i:03d}" for i in range(240)]
    accepted: list[str] = []
    agents: list[AgentClient] = []

    async def work(agent: AgentClient) -> None:
        while True:
            offer = await agent.offers.get()
            try:
                await agent.accept(offer)
                accepted.append(offer.contact.contact_id)
            except grpc.aio.AioRpcError:
                pass  # the router died under the call: the restarted one offers it again

    async def connect(sign_in: bool) -> list[asyncio.Task[None]]:
        agents.clear()
        for n in range(6):
            agent = AgentClient(router.target, SECRET, "acme", f"ko-{n}")
            if sign_in:
                await agent.sign_in({"ko": 5}, capacity={contact_pb2.CHANNEL_CHAT: 100})
            else:
                await agent.open_stream()
            agents.append(agent)
        return [asyncio.create_task(work(a)) for a in agents]

    workers = await connect(sign_in=True)
    try:
        acks = [await bus.publish_async(created(cid)) for cid in burst]
        await asyncio.gather(*acks)
        while len(accepted) < 30:  # noqa: ASYNC110 (the agents' tasks fill it)
            await asyncio.sleep(0.005)
        router.kill()
        for task in workers:
            task.cancel()
        for agent in agents:
            await agent.close()
        before = len(accepted)
        assert before < len(burst), "the burst was over before the kill"

        await router.start()
        workers = await connect(sign_in=False)
        for _ in range(600):
            assigned = await assignments(bus)
            if len(set(assigned)) == len(burst):
                break
            await asyncio.sleep(0.1)
        assert sorted(assigned) == burst  # every one, each exactly once

        # The journal is typed, and the burst went into it in batches.
        entries = []
        sub = await bus.js.subscribe("router.journal.default", ordered_consumer=True)
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1)
                except TimeoutError:
                    break
                entries.append(journal.decode(msg.metadata.sequence.stream, msg.data))
        finally:
            await sub.unsubscribe()
        calls = [c for e in entries for c in e.calls]
        added = [c.args[0].contact_id for c in calls if c.name == "add_contact"]
        assert sorted(set(added)) == burst
        assert max(len(e.calls) for e in entries) > 1
        assert len(entries) < len(calls)
    finally:
        for task in workers:
            task.cancel()
        for agent in agents:
            await agent.close()
        router.stop()


async def test_read_views_show_only_what_the_journal_has_acknowledged(
    nats_url: str, bus: Bus
) -> None:
    """Queue statistics, the agents, a contact's position and its decision are answered only
    once JetStream has acknowledged the journal entry of every decision they show: a supervisor
    or a customer never sees a contact waiting (or an agent's state) that the router dying before
    that acknowledgement would undo. An entry that failed makes them UNAVAILABLE."""
    app = RouterApp(
        RouterSettings(
            NATS_URL=nats_url,
            ROUTER_GRPC_PORT=0,
            SWITCHBOARD_AUTH_SECRET=SECRET,
            SWITCHBOARD_REPLICA_ID="router-a",
        )
    )
    await app.start()
    try:
        assert app.router is not None and app.journal is not None
        real_append = app.journal.append
        held: list[tuple[asyncio.Future[int], asyncio.Future[int]]] = []
        holding = [True]

        async def append(commands: list[Any]) -> asyncio.Future[int]:
            """The real write; its acknowledgement handed to the router when the test says."""
            written = await real_append(commands)
            if not holding[0]:
                return written
            told: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            held.append((written, told))
            return told

        app.journal.append = append  # type: ignore[method-assign]
        sup = router_pb2_grpc.RouterServiceStub(
            sb_grpc.channel(
                f"127.0.0.1:{app.port}", auth.mint(SECRET, "acme", "sup", ["supervisor"])
            )
        )

        async def waiting() -> int:
            stats = await sup.GetQueueStats(router_pb2.GetQueueStatsRequest(queue="general"))
            return stats.queues[0].waiting

        await bus.publish(created("c1"))
        for _ in range(200):  # decided: the engine has it, its journal entry is unacknowledged
            if held:
                break
            await asyncio.sleep(0.05)
        assert len(held) == 1 and "c1" in app.router.engine.contacts
        reads = [
            asyncio.ensure_future(waiting()),
            asyncio.ensure_future(sup.ListAgents(router_pb2.ListAgentsRequest())),
            asyncio.ensure_future(
                sup.GetContactPosition(router_pb2.GetContactPositionRequest(contact_id="c1"))
            ),
            asyncio.ensure_future(
                sup.ExplainDecision(router_pb2.ExplainDecisionRequest(contact_id="c1"))
            ),
        ]
        done, _ = await asyncio.wait(reads, timeout=1.0)
        assert not done, "a read answered before the journal acknowledged what it shows"
        written, told = held.pop()
        told.set_result(await written)
        stats, _agents, position, decision = await asyncio.gather(*reads)
        assert stats == 1
        assert (position.contact_id, position.position) == ("c1", 1)
        assert decision.contact_id == "c1"

        await bus.publish(created("c2"))
        for _ in range(200):
            if held:
                break
            await asyncio.sleep(0.05)
        read = asyncio.ensure_future(waiting())
        done, _ = await asyncio.wait({read}, timeout=1.0)
        assert not done
        written, told = held.pop()
        await written
        holding[0] = False  # the replica steps down, then leads again with the real journal
        told.set_exception(TimeoutError("the journal's acknowledgement did not come"))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await read
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # Stopped during the step-down that follows, the replica stops: it does not go on to
        # lead again while the service stops.
        replica = app._replica_task
        await app.stop()
        assert replica is not None and replica.done()
    finally:
        await app.stop()

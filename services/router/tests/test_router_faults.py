"""The router under the faults an operator meets, with a real nats-server and real gRPC:

- killed before its first snapshot and restarted hours later, it replays its journal in journal
  time to exactly the state and offers it had and published;
- a nats-server that stops answering while journal writes are in flight, then restarts, leaves a
  router that steps down, re-reads its journal and routes again;
- a standby is NOT_SERVING across a NATS restart, the leader SERVING again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from switchboard.core import events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.router import metrics
from switchboard.router.bootstrap import RouterApp
from switchboard.router.domain import engine as eng
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.testing.contacts import chat_contact_created as created
from switchboard.testing.signals import freeze
from switchboard.testing.streams import published
from switchboard.v1 import contact_pb2, events_pb2, router_pb2

SECRET = "router-faults-secret"


SERVICE = "switchboard.v1.RouterService"


def router_app(nats_url: str, replica: str, **extra: Any) -> RouterApp:
    settings: dict[str, Any] = {
        "NATS_URL": nats_url,
        "ROUTER_GRPC_PORT": 0,
        "SWITCHBOARD_AUTH_SECRET": SECRET,
        "SWITCHBOARD_REPLICA_ID": replica,
        "ROUTER_LEASE_TTL_SECONDS": 2.0,
        "ROUTER_SNAPSHOT_INTERVAL_SECONDS": 3600,  # no snapshot: the journal alone
        "ROUTER_ACCEPT_TIMEOUT_SECONDS": 1.0,
        "ROUTER_JOURNAL_WRITE_TIMEOUT_SECONDS": 1.0,
        **extra,
    }
    return RouterApp(RouterSettings(**settings))


def state(engine: eng.Engine) -> dict[str, Any]:
    """What the router knows about contacts, offers and agents' work, in comparable form."""
    return {
        "contacts": {
            cid: (c.status.name, c.agent_id, c.offer_id, c.queued_at, c.assigned_at)
            for cid, c in engine.contacts.items()
        },
        "ended": sorted(engine.history),
        "offers": {
            o.offer_id: (o.agent_id, o.contact_id, o.expires_at) for o in engine.offers.values()
        },
        "active": {a.agent_id: sorted(a.active) for a in engine.agents.values()},
        "offer_seq": engine._offer_seq,
    }


def decided_offers(engine: eng.Engine) -> set[tuple[str, str, str]]:
    """(offer id, agent, contact) of every offer the engine made, ended contacts included."""
    contacts = [*engine.contacts.values(), *(c for c, _ in engine.history.values())]
    return {
        (a.offer_id, a.agent_id, c.contact_id)
        for c in contacts
        for a in c.decision.attempts
        if a.offer_id
    }


async def published_offers(bus: Bus) -> set[tuple[str, str, str]]:
    return {
        (e.offer_id, e.agent_id, e.contact_id)
        for e in await published(bus, "routing.acme.offered", events_pb2.ContactOffered)
    }


async def test_a_journal_replayed_hours_later_gives_the_same_state_and_offers(
    nats_url: str, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = router_app(nats_url, "router-a")
    await app.start()
    target = f"127.0.0.1:{app.port}"
    first = AgentClient(target, SECRET, "acme", "ko-1")
    second = AgentClient(target, SECRET, "acme", "ko-2")
    try:
        await first.sign_in({"ko": 5})
        await asyncio.sleep(0.3)
        await second.sign_in({"ko": 5})
        await bus.publish(created("c1"))
        ignored = await first.next_offer()  # the longest idle agent; it lets the offer expire
        assert ignored.contact.contact_id == "c1"
        offer = await second.next_offer()  # re-offered after the 1 s accept timeout
        assert offer.contact.contact_id == "c1"
        await second.accept(offer)
        await bus.publish(created("c2"))
        offer = await first.next_offer()
        await first.accept(offer)
        await first.stub.WrapUp(router_pb2.WrapUpRequest(agent_id="ko-1", contact_id="c2"))
        await bus.publish(created("c3"))
        offer = await first.next_offer()
        await first.accept(offer)
        assert app.router is not None
        before = state(app.router.engine)
        published = await published_offers(bus)
        assert published == decided_offers(app.router.engine)
        assert not app.router.engine.offers  # nothing live: the restart's timers change nothing
    finally:
        await first.close()
        await second.close()
        await app.kill()  # before any snapshot: recovery is the journal alone

    # Three hours later.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3 * 3600)
    again = router_app(nats_url, "router-a")
    await again.start()
    try:
        assert again.is_leader and again.router is not None
        assert getattr(again.router, "divergences", 0) == 0
        assert state(again.router.engine) == before
        assert decided_offers(again.router.engine) == published
        # New offers never reuse an id published before the restart.
        agent = AgentClient(f"127.0.0.1:{again.port}", SECRET, "acme", "ko-3")
        await agent.sign_in({"ko": 5})
        await bus.publish(created("c4"))
        offer = await agent.next_offer()
        assert offer.offer_id not in {o for o, _, _ in published}
        await agent.close()
    finally:
        await again.stop()


@pytest.fixture
async def restartable_nats(tmp_path: Any) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    if server.proc is not None:
        with_suppressed = server.proc
        try:
            os.kill(with_suppressed.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    server.stop()


async def routes(agent: AgentClient, bus: Bus, contact_id: str, within: float) -> None:
    """Publish a contact (again until JetStream takes it) and see the agent get and accept it."""
    deadline = time.monotonic() + within
    while True:
        try:
            await bus.publish(created(contact_id), timeout=2)
            break
        except Exception:
            assert time.monotonic() < deadline, "JetStream never took the contact"
            await asyncio.sleep(0.2)
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{contact_id} was never offered"
        try:
            offer = await agent.next_offer(timeout=remaining)
        except TimeoutError:
            raise AssertionError(f"{contact_id} was never offered") from None
        if offer.contact.contact_id != contact_id:
            continue  # a contact of before the outage, offered again: take it too
        await agent.accept(offer)
        return


async def reconnecting_agent(target: str, agent_id: str, within: float) -> AgentClient:
    """An agent that opens its offer stream again once the router leads again."""
    deadline = time.monotonic() + within
    while True:
        agent = AgentClient(target, SECRET, "acme", agent_id)
        try:
            await agent.open_stream()
            return agent
        except Exception:
            await agent.close()
            assert time.monotonic() < deadline, f"{agent_id} could not reconnect"
            await asyncio.sleep(0.2)


async def test_nats_stopping_mid_journal_write_then_restarting_leaves_a_routing_router(
    restartable_nats: NatsServer,
) -> None:
    nats_server = restartable_nats
    app = router_app(nats_server.url, "router-a", ROUTER_ACCEPT_TIMEOUT_SECONDS=30.0)
    await app.start()
    bus = await Bus.connect(nats_server.url, source="test")
    target = f"127.0.0.1:{app.port}"
    agent = AgentClient(target, SECRET, "acme", "ko-1")
    try:
        await agent.sign_in({"ko": 5}, capacity={contact_pb2.CHANNEL_CHAT: 50})
        await routes(agent, bus, "before", within=10)
        assert app.router is not None
        # Journal writes in flight when the server dies: they reach a server that has stopped
        # answering, which is then killed and restarted; their acks never come.
        assert nats_server.proc is not None
        freeze(nats_server.proc.pid)
        calls = [
            asyncio.ensure_future(
                agent.stub.SetPresence(
                    router_pb2.SetPresenceRequest(
                        agent_id="ko-1", presence=router_pb2.PRESENCE_AVAILABLE
                    ),
                    timeout=10,
                )
            )
            for _ in range(5)
        ]
        await asyncio.sleep(0.3)
        await asyncio.to_thread(nats_server.kill)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(nats_server.start)
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        # Refused as UNAVAILABLE once their outcome is in doubt (the client tries again), not
        # left hanging until the caller's deadline.
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        assert failures
        assert {o.code() for o in failures if isinstance(o, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.UNAVAILABLE
        }, failures

        await asyncio.wait_for(app.led.wait(), 30)
        assert await sb_grpc.check_health(target, service=SERVICE) == "SERVING"
        await agent.close()
        agent = await reconnecting_agent(target, "ko-1", within=30)
        await routes(agent, bus, "after", within=30)
        assert getattr(app.router, "divergences", 0) == 0
    finally:
        await agent.close()
        await app.stop()
        await bus.drain()


async def health(target: str) -> str:
    return await sb_grpc.check_health(target, service=SERVICE, timeout=1)


async def test_the_standby_is_not_serving_across_a_nats_restart(
    restartable_nats: NatsServer,
) -> None:
    nats_server = restartable_nats
    leader = router_app(nats_server.url, "router-1")
    standby = router_app(nats_server.url, "router-2")
    await leader.start()
    await standby.start()
    try:
        assert leader.is_leader and not standby.is_leader
        leader_target, standby_target = f"127.0.0.1:{leader.port}", f"127.0.0.1:{standby.port}"
        assert await health(standby_target) == "NOT_SERVING"
        for kill in (True, False):  # a crash, then a graceful restart
            await asyncio.to_thread(nats_server.kill if kill else nats_server.stop)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(nats_server.start)
            seen: set[tuple[str, str]] = set()
            for _ in range(200):  # 10 s: the reconnects happen, the leader leads again
                pair = (await health(leader_target), await health(standby_target))
                seen.add(pair)
                if pair == ("SERVING", "NOT_SERVING") and leader.bus and leader.bus.nc.is_connected:
                    if standby.bus and standby.bus.nc.is_connected:
                        break
                await asyncio.sleep(0.05)
            assert (await health(leader_target), await health(standby_target)) == (
                "SERVING",
                "NOT_SERVING",
            )
            assert all(s == "NOT_SERVING" for _, s in seen), seen
    finally:
        await standby.stop()
        await leader.stop()


async def test_a_leader_whose_consumer_stopped_moving_steps_down_and_routes_again(
    nats_url: str, bus: Bus
) -> None:
    app = router_app(
        nats_url, "router-a", ROUTER_WATCHDOG_SECONDS=1.0, ROUTER_CONSUMER_ACK_WAIT_SECONDS=2.0
    )
    await app.start()
    target = f"127.0.0.1:{app.port}"
    agent = AgentClient(target, SECRET, "acme", "ko-1")
    try:
        await agent.sign_in({"ko": 5}, capacity={contact_pb2.CHANNEL_CHAT: 5})
        await routes(agent, bus, "before", within=10)
        assert app.consumer_bus is not None
        for consumer in app.consumer_bus._consumers.values():  # the consumer's loop dies
            assert consumer.task is not None
            consumer.task.cancel()
        watchdog = metrics.STEP_DOWNS.labels("watchdog")
        before = watchdog._value.get()
        await bus.publish(created("stuck"))
        for _ in range(200):  # the watchdog sees events waiting and nothing moving
            if watchdog._value.get() > before:
                break
            await asyncio.sleep(0.05)
        assert watchdog._value.get() > before
        await asyncio.wait_for(app.led.wait(), 20)  # the lease is still its own: it leads again
        await agent.close()
        agent = await reconnecting_agent(target, "ko-1", within=20)
        offer = await agent.next_offer(timeout=20)
        assert offer.contact.contact_id == "stuck"
    finally:
        await agent.close()
        await app.stop()


async def published_ends(bus: Bus) -> dict[str, str]:
    """contact id -> wrap-up code of every ContactEnded in EVENTS."""
    ends = await published(bus, "contact.acme.*.ended", events_pb2.ContactEnded)
    return {e.contact_id: e.wrap_up_code for e in ends}


async def test_an_input_whose_caller_gives_up_is_still_journaled_and_published(
    nats_url: str, bus: Bus
) -> None:
    """A gRPC deadline cancels the handler: a decision the engine has made must still be
    journaled and published (seen in make chaos: a wrap-up ended in the router, no ContactEnded
    on the bus, the case store left the contact assigned)."""
    app = router_app(nats_url, "router-a")
    await app.start()
    agent = AgentClient(f"127.0.0.1:{app.port}", SECRET, "acme", "ko-1")
    try:
        await agent.sign_in({"ko": 5})
        router = app.router
        assert router is not None
        for n in range(5):
            cid = f"c{n}"
            await bus.publish(created(cid))
            await agent.accept(await agent.next_offer())
            # The caller gives up as soon as the engine has decided, mid-way through the journal
            # write and the publication (where a gRPC deadline would cancel the handler).
            call = asyncio.create_task(router.run("wrap_up", "acme", "ko-1", cid, "done"))
            yields = 0
            for _ in range(1000):
                if cid in router.engine.history:
                    yields += 1
                    if yields > n:  # each time a little later after the decision
                        break
                await asyncio.sleep(0)
            assert cid in router.engine.history  # decided before the caller gave up
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await call
            await router.settled()
        # Every decision made it out, and the router still leads and routes.
        assert router.leader
        ends: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while len(ends) < 5 and time.monotonic() < deadline:
            ends = await published_ends(bus)
        assert ends == {f"c{n}": "done" for n in range(5)}
        await bus.publish(created("after"))
        offer = await agent.next_offer()
        assert offer.contact.contact_id == "after"
    finally:
        await agent.close()
        await app.stop()


async def test_a_transfer_fetched_with_its_contact_in_one_batch_is_applied(
    nats_url: str, bus: Bus, tmp_path: Path
) -> None:
    """The router's consumer runs a fetched batch's handlers concurrently; a handler that
    depends on the engine's state (a transfer of a contact created earlier in the same batch)
    asks after the earlier inputs were decided, not before."""
    config = tmp_path / "router.yaml"
    config.write_text(
        "tenants:\n  acme:\n    languages: [ko]\n"
        "    queues:\n      - name: general\n      - name: billing\n"
    )
    await bus.publish(created("moved"))
    await bus.publish(
        events_pb2.ContactTransferred(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "voice"),
            contact_id="moved",
            to_queue="billing",
        )
    )
    app = router_app(nats_url, "router-a", ROUTER_CONFIG_FILE=str(config))
    await app.start()  # both events arrive in its first fetch
    try:
        router = app.router
        assert router is not None

        def moved() -> bool:
            c = router.engine.contacts.get("moved")
            return c is not None and c.queue == "billing"

        for _ in range(200):
            if moved():
                break
            await asyncio.sleep(0.05)
        assert moved()
    finally:
        await app.stop()


async def test_a_leader_slow_to_take_the_lead_keeps_its_lease(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking the lead (catching up, a new term, publishing the last decisions again) can take
    longer than the lease's TTL on a busy machine. The lease is renewed from the moment it is
    taken: the standby must not take it meanwhile (seen in make chaos: the two replicas took
    turns, each fencing the other out, and neither routed for minutes)."""
    original = RouterApp._became_leader
    ttl = 1.0

    async def slow(self: RouterApp) -> None:
        if self.settings.replica_id == "router-a":
            await asyncio.sleep(3 * ttl)
        await original(self)

    monkeypatch.setattr(RouterApp, "_became_leader", slow)
    steps_before = metrics.STEP_DOWNS.labels("fenced")._value.get()
    first = router_app(nats_url, "router-a", ROUTER_LEASE_TTL_SECONDS=ttl)
    second = router_app(nats_url, "router-b", ROUTER_LEASE_TTL_SECONDS=ttl)
    start = asyncio.create_task(first.start())
    await asyncio.sleep(0.5)  # router-a holds the lease and is taking the lead
    await second.start()
    try:
        await start
        for _ in range(100):
            if first.is_leader:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2 * ttl)  # renewals go on after the lead is taken
        assert first.is_leader and not second.is_leader
        assert metrics.STEP_DOWNS.labels("fenced")._value.get() == steps_before
    finally:
        await second.stop()
        await first.stop()


async def test_a_new_term_publishes_again_only_what_the_duplicate_window_covers() -> None:
    """A decision is published within seconds or its leader steps down, so a new leader sends
    again only the last minute of decisions: older ones, past JetStream's two-minute duplicate
    window, would be stored a second time."""
    from switchboard.router import handlers

    class Recorder:
        def __init__(self) -> None:
            self.sent: list[float] = []

        async def publish(self, effect: Any, at: float) -> None:
            self.sent.append(at)

        async def flush(self) -> list[Any]:
            return []

    notifier = Recorder()
    router = handlers.Router(handlers.new_engine(), notifier)  # type: ignore[arg-type]
    for at in (0.0, 100.0, 500.0, 900.0, 939.0, 941.0, 1000.0):
        router._recent.append((at, object.__new__(eng.Assigned)))
    await router.republish_recent()
    assert notifier.sent == [941.0, 1000.0]

"""Tenants partitioned across router groups (ROUTER_GROUPS), with real processes on a real
nats-server: two groups, each a leader and a standby, serve their own tenants at once; a group
refuses another group's tenant, naming the group that serves it; when group 1's leader dies
(SIGKILL), its standby takes over with group 1's waiting contacts while group 2 goes on routing
under the same leader. Nothing is lost, nothing assigned twice."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.router.bootstrap import RouterApp
from switchboard.router.journal import LEASE_BUCKET, Lease
from switchboard.router.settings import RouterSettings
from switchboard.testing.agents import AgentClient
from switchboard.testing.contacts import chat_contact_created as created
from switchboard.testing.processes import ServiceProcess
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.signals import freeze
from switchboard.testing.streams import published
from switchboard.testing.waiting import eventually
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc

SECRET = "router-groups-secret"
GROUPS = "g1=acme;g2=korea"
CHAT_ONE = {contact_pb2.CHANNEL_CHAT: 1}


class GroupReplica(ServiceProcess):
    """`python -m switchboard.router` as one replica of router group `group`."""

    def __init__(self, nats_url: str, group: str, replica: str, log: Path) -> None:
        port = free_port()
        env = {
            **os.environ,
            "NATS_URL": nats_url,
            "ROUTER_GRPC_PORT": str(port),
            "SWITCHBOARD_AUTH_SECRET": SECRET,
            "SWITCHBOARD_REPLICA_ID": replica,
            "ROUTER_GROUP": group,
            "ROUTER_GROUPS": GROUPS,
            "ROUTER_LEASE_TTL_SECONDS": "2",
            "ROUTER_JOURNAL_WRITE_TIMEOUT_SECONDS": "10",
            "ROUTER_WATCHDOG_SECONDS": "30",
            "ROUTER_ACCEPT_TIMEOUT_SECONDS": "60",
            "METRICS_PORT": "0",
        }
        super().__init__(
            "switchboard.router",
            env,
            f"127.0.0.1:{port}",
            "switchboard.v1.RouterService",
            log,
        )
        self.replica = replica
        self.channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, tenant: str) -> router_pb2_grpc.RouterServiceStub:
        """A supervisor's stub for `tenant` (its channel kept open until `stop`)."""
        if tenant not in self.channels:
            token = auth.mint(SECRET, tenant, "sup", ["supervisor"])
            self.channels[tenant] = sb_grpc.channel(self.target, token)
        return router_pb2_grpc.RouterServiceStub(self.channels[tenant])


@pytest.fixture
async def groups(
    nats_url: str, tmp_path: Path
) -> AsyncIterator[dict[str, tuple[GroupReplica, GroupReplica]]]:
    """Each group's leader (started first) and standby."""
    made = {
        group: (
            GroupReplica(nats_url, group, f"{group}-a", tmp_path / f"{group}-a.log"),
            GroupReplica(nats_url, group, f"{group}-b", tmp_path / f"{group}-b.log"),
        )
        for group in ("g1", "g2")
    }
    try:
        for leader, _ in made.values():
            await leader.start()
        for _, standby in made.values():
            await standby.start(serving=False)
        yield made
    finally:
        for pair in made.values():
            for replica in pair:
                if replica.proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(replica.proc.pid, signal.SIGCONT)
                replica.stop()
                for channel in replica.channels.values():
                    await channel.close()


async def assigned(bus: Bus, tenant: str) -> list[str]:
    events = await published(bus, f"routing.{tenant}.assigned", events_pb2.ContactAssigned)
    return [e.contact_id for e in events]


async def holder(bus: Bus, group: str) -> str:
    """The replica holding `group`'s lease."""
    kv = await bus.js.key_value(LEASE_BUCKET)
    return ((await kv.get(group)).value or b"").decode()


def term(offer_id: str) -> str:
    """The leader's term an offer was made in (offer ids are of-<term>-<seq>-<contact>)."""
    return offer_id.split("-")[1]


class Served:
    """The offers agents took (accepted, then wrapped up), in order."""

    def __init__(self) -> None:
        self.offers: list[router_pb2.Offer] = []

    async def one(self, agent: AgentClient) -> str:
        """Take the agent's next offer, accept it and wrap it up; the contact's id."""
        offer = await agent.next_offer(30)
        cid = offer.contact.contact_id
        await agent.accept(offer)
        await agent.stub.WrapUp(router_pb2.WrapUpRequest(agent_id=agent.agent_id, contact_id=cid))
        self.offers.append(offer)
        return cid


async def test_two_groups_route_their_own_tenants_and_fail_over_alone(
    groups: dict[str, tuple[GroupReplica, GroupReplica]], bus: Bus
) -> None:
    (g1_leader, g1_standby), (g2_leader, g2_standby) = groups["g1"], groups["g2"]
    assert [await r.health() for r in (g1_standby, g2_standby)] == ["NOT_SERVING"] * 2
    assert await holder(bus, "g2") == "g2-a"
    served = Served()

    # A group refuses another group's tenant, naming the group that serves it.
    for replica, tenant, serving in ((g1_leader, "korea", "g2"), (g2_leader, "acme", "g1")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await replica.stub(tenant).ListAgents(router_pb2.ListAgentsRequest())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"router group {serving!r}" in (refused.value.details() or "")

    acme = AgentClient(g1_leader.target, SECRET, "acme", "ac-1")
    await acme.sign_in({"ko": 5}, capacity=CHAT_ONE)
    korea = AgentClient(g2_leader.target, SECRET, "korea", "kr-1")
    await korea.sign_in({"ko": 5}, capacity=CHAT_ONE)

    # Both groups route at once, each its own tenant's contacts.
    await bus.publish(created("a-1", tenant="acme"))
    await bus.publish(created("k-1", tenant="korea"))
    first = await acme.next_offer(30)
    assert first.contact.contact_id == "a-1"
    await acme.accept(first)
    assert await served.one(korea) == "k-1"
    # Each group's durable consumer filters its own tenant's subjects.
    for durable, tenant in (("router-g1", "acme"), ("router-g2", "korea")):
        info = await bus.js.consumer_info("EVENTS", durable)
        filters = info.config.filter_subjects or [info.config.filter_subject]
        assert filters and all(f.split(".")[1] == tenant for f in filters), filters

    # Group 1's contacts wait (its agent is busy with a-1), and the standby has them.
    await bus.publish(created("a-2", tenant="acme"))
    await bus.publish(created("a-3", tenant="acme"))

    async def waiting_in_g1() -> bool:
        stats = await g1_leader.stub("acme").GetQueueStats(
            router_pb2.GetQueueStatsRequest(queue="general")
        )
        return stats.queues[0].waiting == 2

    await eventually(waiting_in_g1, "a-2 and a-3 waiting in group 1")

    # Group 1 loses its leader (SIGKILL), with its standby held back: group 1 has no leader
    # at all while group 2 goes on routing.
    assert g1_standby.proc is not None
    freeze(g1_standby.proc.pid)
    g1_leader.kill()
    await acme.close()
    while_leaderless = []
    for cid in ("k-2", "k-3"):
        await bus.publish(created(cid, tenant="korea"))
        while_leaderless.append(await served.one(korea))
    assert while_leaderless == ["k-2", "k-3"]
    assert (await g1_standby.health()).startswith("UNREACHABLE")  # no group 1 replica serves

    # The standby takes over; korea traffic keeps flowing while it does.
    os.kill(g1_standby.proc.pid, signal.SIGCONT)
    during: list[str] = []
    limit = time.monotonic() + 60  # only keeps a broken takeover from hanging the test
    while time.monotonic() < limit:
        await bus.publish(created(f"k-{len(during) + 4}", tenant="korea"))
        during.append(await served.one(korea))
        if await g1_standby.health() == "SERVING":
            break
    assert await g1_standby.health() == "SERVING", "group 1's standby never took over"
    assert await holder(bus, "g1") == "g1-b"

    # Group 1's waiting contacts are offered by its new leader.
    acme = AgentClient(g1_standby.target, SECRET, "acme", "ac-1")
    await acme.open_stream()
    await acme.stub.WrapUp(router_pb2.WrapUpRequest(agent_id="ac-1", contact_id="a-1"))
    acme_served = Served()
    assert [await acme_served.one(acme), await acme_served.one(acme)] == ["a-2", "a-3"]
    assert term(acme_served.offers[0].offer_id) != term(first.offer_id)  # the new leader's
    await bus.publish(created("k-last", tenant="korea"))
    assert await served.one(korea) == "k-last"

    # Group 2's leader never changed (every korea offer was made in its one term), and its
    # standby never served.
    assert await holder(bus, "g2") == "g2-a"
    assert len({term(o.offer_id) for o in served.offers}) == 1
    assert await g2_leader.health() == "SERVING"
    assert await g2_standby.health() == "NOT_SERVING"
    # Nothing lost, nothing assigned twice.
    assert sorted(await assigned(bus, "acme")) == ["a-1", "a-2", "a-3"]
    korea_ids = ["k-1", "k-2", "k-3", *during, "k-last"]
    assert sorted(await assigned(bus, "korea")) == sorted(korea_ids)
    assert len(set(korea_ids)) == len(korea_ids)
    await acme.close()
    await korea.close()


def test_each_group_has_its_own_consumer_and_tenants() -> None:
    single = RouterSettings()
    assert (single.durable, single.served_tenants) == ("router", None)
    g2 = RouterSettings(ROUTER_GROUP="g2", ROUTER_GROUPS=GROUPS)
    assert (g2.durable, g2.served_tenants) == ("router-g2", {"korea"})
    named = RouterSettings(ROUTER_GROUP="g2", ROUTER_GROUPS=GROUPS, ROUTER_CONSUMER="rt-korea")
    assert named.durable == "rt-korea"


def test_a_group_the_map_does_not_name_cannot_start() -> None:
    with pytest.raises(ValidationError, match="ROUTER_GROUP 'g3' is not in ROUTER_GROUPS"):
        RouterSettings(ROUTER_GROUP="g3", ROUTER_GROUPS=GROUPS)
    with pytest.raises(ValidationError, match="ROUTER_GROUP 'default' is not in ROUTER_GROUPS"):
        RouterSettings(ROUTER_GROUPS=GROUPS)


async def test_a_group_routes_on_a_nats_server_that_grants_each_group_its_own(
    tmp_path: Path,
) -> None:
    """With NATS users (`switchboard nats-config --router-groups`), the routers' user may use
    each group's consumer and journal: a router of group g2 leads and routes korea's contacts
    with no permission refused."""
    secured = SecuredNats.start(tmp_path / "nats", router_groups=["g1", "g2"])
    try:
        settings = RouterSettings(
            **secured.env("router"),
            ROUTER_GRPC_PORT=0,
            SWITCHBOARD_AUTH_SECRET=SECRET,
            ROUTER_GROUP="g2",
            ROUTER_GROUPS=GROUPS,
        )
        app = RouterApp(settings)
        chat = await Bus.connect(secured.url, source="chat", **secured.options("chat"))
        await app.start()
        try:
            assert app.is_leader
            korea = AgentClient(f"127.0.0.1:{app.port}", SECRET, "korea", "kr-1")
            await korea.sign_in({"ko": 5})
            await chat.publish(created("k-1", tenant="korea"))
            assert (await korea.next_offer(30)).contact.contact_id == "k-1"
            await korea.close()
        finally:
            await app.stop()
            await chat.drain()
        assert secured.violations() == []
    finally:
        secured.server.stop()


async def test_every_group_renews_its_lease_by_the_shared_buckets_ttl(bus: Bus) -> None:
    """The groups' leases are keys of one bucket, whose TTL its creator set: a group configured
    with a longer one would renew too late and lose its lease between renewals."""
    first = Lease(bus.js, "g1", "g1-a", 2.0)
    await first.ensure()
    second = Lease(bus.js, "g2", "g2-a", 10.0)
    await second.ensure()
    assert (first.ttl, second.ttl) == (2.0, 2.0)

"""Data minimisation with a real nats-server: once a snapshot is durable, neither the journal
nor the snapshot holds the identities, name or words of contacts that have ended (a waiting
contact's are kept: its offer shows them), and yet a router stopped after the journal was
trimmed recovers with nothing lost and nothing assigned twice, sends a returning customer back
to the same agent and still explains an ended contact's decision; a standby that fell behind
the trimmed journal recovers from the snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import nats.js.errors
import pytest

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.router import journal as jr
from switchboard.router.handlers import Router, lead_or_follow, new_engine
from switchboard.router.notifier import RoutingNotifier
from switchboard.testing.agents import AgentClient
from switchboard.testing.streams import published
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc

from .test_router_durability import SECRET, RouterProcess  # snapshots every second

STREAM = "ROUTER_DEFAULT"

# The ended contacts' personal data: none of it may outlive the next snapshot.
ENDED = {
    "phone": "+821055501234",
    "email": "minji.kim@example.com",
    "name": "Kim Minji",
    "subject": "parcel 4471 never arrived",
    "text": "I waited all week for parcel 4471",
    "abandoned phone": "+819055506789",
    "abandoned text": "hello, is anyone there from Osaka",
}
WAITING = {"phone": "+33612345678", "text": "bonjour, my invoice is wrong"}


def created(
    cid: str, language: str, phone: str = "", email: str = "", text: str = "", **fields: str
) -> events_pb2.ContactCreated:
    c = contact_pb2.Contact(
        contact_id=cid,
        tenant="acme",
        channel=contact_pb2.CHANNEL_CHAT,
        language=language,
        queue="general",
        **fields,  # type: ignore[arg-type]
    )
    if phone:
        c.identities.add(kind=contact_pb2.IDENTITY_KIND_PHONE, value=phone)
    if email:
        c.identities.add(kind=contact_pb2.IDENTITY_KIND_EMAIL, value=email)
    if text:
        c.content.add(content_type="text/plain", text=text)
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"), contact=c
    )


def supervisor(target: str) -> router_pb2_grpc.RouterServiceStub:
    token = auth.mint(SECRET, "acme", "sup", ["supervisor"])
    return router_pb2_grpc.RouterServiceStub(sb_grpc.channel(target, token))


async def journal_bytes(bus: Bus) -> tuple[int, list[bytes]]:
    """(the stream's first sequence, every message it holds), read raw."""
    state = (await bus.js.stream_info(STREAM)).state
    out = []
    for seq in range(state.first_seq, state.last_seq + 1):
        with contextlib.suppress(Exception):
            out.append((await bus.js.get_msg(STREAM, seq)).data or b"")
    return state.first_seq, out


async def trimmed_past(bus: Bus, seq: int) -> int:
    """Wait until a snapshot covering journal sequence `seq` is durable and the journal's
    entries up to it are purged; the sequence the snapshot covers."""
    for _ in range(300):
        covered = await snapshot_covers(bus)
        first_seq = (await bus.js.stream_info(STREAM)).state.first_seq
        if covered >= seq and first_seq > seq:
            return covered
        await asyncio.sleep(0.05)
    raise AssertionError(f"the journal was never trimmed past {seq}")


async def snapshot_covers(bus: Bus) -> int:
    kv = await bus.js.key_value(jr.STATE_BUCKET)
    with contextlib.suppress(Exception):
        return int(json.loads((await kv.get("default.snapshot")).value or b"{}")["seq"])
    return 0


async def snapshot_bytes(bus: Bus) -> tuple[int, bytes]:
    """(the journal sequence it covers, the newest snapshot object), read raw."""
    kv = await bus.js.key_value(jr.STATE_BUCKET)
    meta = json.loads((await kv.get("default.snapshot")).value or b"{}")
    objects = await bus.js.object_store(jr.SNAPSHOT_BUCKET)
    return int(meta["seq"]), bytes((await objects.get(meta["object"])).data or b"")


async def until(check: object, what: str, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def queue_counts(sup: router_pb2_grpc.RouterServiceStub) -> tuple[int, int, int]:
    stats = await sup.GetQueueStats(router_pb2.GetQueueStatsRequest(queue="general"))
    q = stats.queues[0]
    return q.waiting, q.assigned, q.abandoned


async def test_after_a_snapshot_ended_contacts_leave_no_personal_data_and_recovery_loses_nothing(
    nats_url: str, bus: Bus, tmp_path: Path
) -> None:
    router = RouterProcess(nats_url, free_port(), tmp_path / "router.log")
    await router.start()
    sup = supervisor(router.target)
    first = AgentClient(router.target, SECRET, "acme", "ko-a")
    await first.sign_in({"ko": 5})
    second = AgentClient(router.target, SECRET, "acme", "ko-b")
    await second.sign_in({"ko": 5})
    try:
        await bus.publish(
            created(
                "ended-1",
                "ko",
                phone=ENDED["phone"],
                email=ENDED["email"],
                text=ENDED["text"],
                customer_name=ENDED["name"],
                subject=ENDED["subject"],
            )
        )
        offer = await first.next_offer()  # ko-a has been idle longest
        assert offer.contact.identities[0].value == ENDED["phone"]  # the agent sees who it is
        await first.accept(offer)
        await first.stub.WrapUp(
            router_pb2.WrapUpRequest(agent_id="ko-a", contact_id="ended-1", wrap_up_code="ok")
        )
        # Nobody speaks Japanese or French: one waits until its customer leaves, one waits on.
        await bus.publish(
            created(
                "abandoned-1", "ja", phone=ENDED["abandoned phone"], text=ENDED["abandoned text"]
            )
        )
        await bus.publish(created("waiting-1", "fr", phone=WAITING["phone"], text=WAITING["text"]))

        async def both_queued() -> bool:
            return (await queue_counts(sup))[0] == 2

        await until(both_queued, "both contacts queued")
        await bus.publish(
            events_pb2.ContactEnded(
                meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
                contact_id="abandoned-1",
            )
        )

        async def abandoned() -> bool:
            return (await queue_counts(sup))[2] == 1

        await until(abandoned, "the customer left")
        last = (await bus.js.stream_info(STREAM)).state.last_seq
        covered = await trimmed_past(bus, last)

        first_seq, entries = await journal_bytes(bus)
        assert first_seq > last  # the entries the snapshot covers are gone
        at, snapshot = await snapshot_bytes(bus)
        assert at >= covered
        for what, value in ENDED.items():
            assert not any(value.encode() in data for data in entries), f"{what} in the journal"
            assert value.encode() not in snapshot, f"{what} in the snapshot"
        # The waiting contact's data is still there: its offer is to show it.
        assert WAITING["phone"].encode() in snapshot
        assert WAITING["text"].encode() in snapshot

        # The ended contact's decision is still explained.
        decision = await sup.ExplainDecision(
            router_pb2.ExplainDecisionRequest(contact_id="ended-1")
        )
        assert (decision.state, decision.assigned_agent_id) == ("ended", "ko-a")
        assert [a.outcome for a in decision.attempts] == ["accepted"]

        # After the trim: a second waiting contact (in the journal until the next snapshot).
        await bus.publish(created("waiting-2", "fr"))

        async def waiting_2() -> bool:
            return (await queue_counts(sup))[0] == 2  # waiting-1 and waiting-2

        await until(waiting_2, "waiting-2 queued")
    finally:
        router.kill()
        await first.close()
        await second.close()

    # Started again: the snapshot (with ended-1's history and waiting-1, whose journal entries
    # are gone) plus the journal after it.
    await router.start()
    try:
        # A contact the router had queued but not yet journaled when it was killed comes back
        # with the redelivery of its event (unacknowledged, within the consumer's ack wait).
        async def recovered() -> bool:
            return await queue_counts(sup) == (2, 0, 1)

        await until(recovered, "every contact recovered", seconds=40)
        decision = await sup.ExplainDecision(
            router_pb2.ExplainDecisionRequest(contact_id="ended-1")
        )
        assert (decision.state, decision.assigned_agent_id) == ("ended", "ko-a")

        first = AgentClient(router.target, SECRET, "acme", "ko-a")
        second = AgentClient(router.target, SECRET, "acme", "ko-b")
        await second.open_stream()
        await first.open_stream()
        # ko-b has been idle longer, yet the returning customer goes back to ko-a.
        await bus.publish(created("returning-1", "ko", email=ENDED["email"]))
        offer = await first.next_offer()
        assert offer.contact.contact_id == "returning-1"
        assert second.offers.empty()
        await first.accept(offer)
        decision = await sup.ExplainDecision(
            router_pb2.ExplainDecisionRequest(contact_id="returning-1")
        )
        assert decision.attempts[0].candidates[0].sticky
        assigned = [
            e.contact_id
            for e in await published(bus, "routing.acme.assigned", events_pb2.ContactAssigned)
        ]
        assert sorted(assigned) == ["ended-1", "returning-1"]  # each exactly once
        await first.close()
        await second.close()
    finally:
        router.stop()
    # Every snapshot was written: the forked serialiser is not aborted by gRPC's fork handlers
    # (a failed snapshot would leave the journal untrimmed longer).
    assert "snapshot failed" not in router.log.read_text()


async def test_a_standby_behind_the_trimmed_journal_recovers_from_the_snapshot(
    nats_url: str, bus: Bus, tmp_path: Path
) -> None:
    leader = RouterProcess(nats_url, free_port(), tmp_path / "router.log")
    await leader.start()
    sup = supervisor(leader.target)
    for i in range(3):
        await bus.publish(created(f"before-{i}", "fr"))

    async def queued() -> bool:
        return (await queue_counts(sup))[0] == 3

    await until(queued, "three contacts queued")
    seq = await trimmed_past(bus, (await bus.js.stream_info(STREAM)).state.last_seq)

    # A standby that has applied nothing yet: the entries it needs next are purged.
    journal = jr.Journal(bus.js, "default", bus.acks, bus.nc)
    snapshots = jr.Snapshots(bus.js, "default")
    await snapshots.ensure()
    lease = jr.Lease(bus.js, "default", "router-standby", ttl=3.0)
    await lease.ensure()
    standby = Router(new_engine(), RoutingNotifier(bus), journal, time.time)
    standby.leader = False
    with pytest.raises(jr.JournalTrimmed):
        async for _ in journal.follow(0):
            break

    async def became_leader() -> None:
        raise AssertionError("the leader holds the lease")

    following = asyncio.create_task(
        lead_or_follow(standby, journal, lease, became_leader, snapshots=snapshots)
    )
    try:

        async def caught_up() -> bool:
            return standby.applied_seq >= seq and len(standby.engine.contacts) == 3

        await until(caught_up, "the standby loaded the snapshot")
        await bus.publish(created("after", "fr"))  # and it follows on from there

        async def followed() -> bool:
            return "after" in standby.engine.contacts

        await until(followed, "the standby followed the journal after the snapshot")
        assert sorted(standby.engine.contacts) == ["after", "before-0", "before-1", "before-2"]
        assert standby.divergences == 0
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        leader.stop()


async def test_the_snapshot_record_never_moves_back_and_the_sticky_key_is_shared(
    bus: Bus,
) -> None:
    """A replica deposed while it wrote an older snapshot leaves the newer one recorded (the
    journal before it may be purged already); every replica of a group gets the same sticky
    key, and another group another."""
    mine, theirs = jr.Snapshots(bus.js, "default"), jr.Snapshots(bus.js, "default")
    await mine.ensure()
    await theirs.ensure()
    await theirs.save(b"newer", 20)
    await mine.save(b"older", 10)
    assert await mine.load() == (b"newer", 20)
    objects = await bus.js.object_store(jr.SNAPSHOT_BUCKET)
    with pytest.raises(nats.js.errors.NotFoundError):  # deleted, not recorded
        await objects.get("default-10")
    await mine.save(b"newest", 30)
    assert await theirs.load() == (b"newest", 30)
    with pytest.raises(nats.js.errors.NotFoundError):  # the one it replaced is deleted
        await objects.get("default-20")

    key = await mine.sticky_key()
    assert len(key) == 32 and await theirs.sticky_key() == key
    other = jr.Snapshots(bus.js, "other")
    await other.ensure()
    assert await other.sticky_key() != key

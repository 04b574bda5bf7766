"""The router's handlers on fakes, without nats-server: contact events go in through the router's
own subscriptions on a `FakeBus`, agents act through the handlers the gRPC servicers call, and
what comes out is checked where the platform sees it (the events the notifier published, the
offers on the agents' streams, the journal entries). Last, the composition root on the same
fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from switchboard.core import events
from switchboard.core.errors import FailedPrecondition, InvalidArgument
from switchboard.router import journal
from switchboard.router.bootstrap import bootstrap
from switchboard.router.domain import config as cfg
from switchboard.router.domain.model import Presence
from switchboard.router.entrypoints import nats_consumer
from switchboard.router.handlers import Router, StreamItem, StreamQueue, new_engine
from switchboard.router.notifier import RoutingNotifier
from switchboard.router.settings import RouterSettings
from switchboard.testing.fakes import FakeBus, FakeClock
from switchboard.v1 import contact_pb2, events_pb2, router_journal_pb2, router_pb2

TENANT = "acme"
ACCEPT_TIMEOUT = 20.0  # as CONFIG says
CONFIG = """
defaults:
  accept_timeout: {voice: 20s, chat: 20s, email: 20s, fax: 20s}
  sticky_ttl: 0s
"""


class MemoryJournal:
    """The journal as the leader writes it (`Router.journal`), in memory: each entry goes
    through the real format and is acknowledged at once."""

    def __init__(self) -> None:
        self.entries: list[journal.Entry] = []
        self.last_seq = 0
        self.connected = True

    async def append(self, commands: list[router_journal_pb2.RouterCommand]) -> asyncio.Future[int]:
        self.last_seq += 1
        self.entries.append(journal.decode(self.last_seq, journal.encode(commands)))
        written: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        written.set_result(self.last_seq)
        return written

    def calls(self) -> list[str]:
        return [call.name for entry in self.entries for call in entry.calls]

    # What recovery and a standby read (the composition root's test).

    async def tail_seq(self) -> int:
        return self.last_seq

    async def read(self, after: int, until: int | None = None) -> AsyncIterator[journal.Entry]:
        for entry in self.entries[after : until or None]:
            yield entry

    async def follow(self, after: int) -> AsyncIterator[journal.Entry]:
        async for entry in self.read(after):
            yield entry
        await asyncio.Event().wait()  # nobody else writes to it


class MemoryLease:
    """The leader lease, held by whoever takes it first until released."""

    def __init__(self, ttl: float = 3.0) -> None:
        self.ttl = ttl
        self.revision = 0
        self.held = False

    async def try_acquire(self) -> bool:
        if self.held:
            return False
        self.held, self.revision = True, self.revision + 1
        return True

    async def renew(self) -> bool:
        return self.held

    async def release(self) -> None:
        self.held = False


class NoSnapshots:
    """A snapshot store that has none yet."""

    async def load(self) -> None:
        return None

    async def save(self, engine_state: bytes, seq: int) -> None:
        raise AssertionError("no snapshot is due in these tests")

    async def sticky_key(self) -> bytes:
        return b"sticky key of the tests"


@dataclass
class Desk:
    router: Router
    bus: FakeBus
    journal: MemoryJournal
    clock: FakeClock[float]
    streams: dict[str, StreamQueue]

    async def agent(self, agent_id: str, languages: dict[str, int]) -> None:
        """Sign an agent in, available, with its AgentSession stream open."""
        await self.router.sign_in(TENANT, agent_id, agent_id, languages, {}, {}, Presence.AVAILABLE)
        self.streams[agent_id] = await self.router.connect(TENANT, agent_id)

    def offers_to(self, agent_id: str) -> list[router_pb2.Offer]:
        """The offers on the agent's stream since the last look."""
        return [i for i in self.told(agent_id) if isinstance(i, router_pb2.Offer)]

    async def next_offer(self, agent_id: str) -> router_pb2.Offer | None:
        """The next offer on the agent's stream (None: it closed), waiting up to 10 s."""
        while True:
            item = await asyncio.wait_for(self.streams[agent_id].get(), 10)
            if item is None or isinstance(item, router_pb2.Offer):
                return item

    def told(self, agent_id: str) -> list[StreamItem]:
        """Everything on the agent's stream since the last look."""
        queue, items = self.streams[agent_id], []
        while not queue.empty():
            item = queue.get_nowait()
            assert item is not None, "the stream was closed"
            items.append(item)
        return items

    def offered(self) -> list[tuple[str, str]]:
        """(contact, agent) of every ContactOffered published."""
        return [(e.contact_id, e.agent_id) for e in self.bus.of(events_pb2.ContactOffered)]


@pytest.fixture
async def desk() -> AsyncIterator[Desk]:
    bus, log, clock = FakeBus(), MemoryJournal(), FakeClock(1000.0)
    router = Router(new_engine(), RoutingNotifier(bus), log, clock)  # type: ignore[arg-type]
    router.leader = True  # as a replica that took the lease and caught up with the journal
    nats_consumer.subscribe(bus, router, "router")  # type: ignore[arg-type]
    await router.run("apply_file_config", cfg.load_text(CONFIG, "test.yaml"))
    yield Desk(router, bus, log, clock, {})
    router.close_streams()


def created(cid: str, language: str = "ko", event_id: str = "") -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta(TENANT, contact_pb2.CHANNEL_CHAT, "chat", event_id),
        contact=contact_pb2.Contact(
            contact_id=cid, tenant=TENANT, channel=contact_pb2.CHANNEL_CHAT, language=language
        ),
    )


async def two_korean_agents(desk: Desk) -> None:
    """ko-1, then ko-2 a second later: ko-1 has been idle longer and is offered first."""
    await desk.agent("ko-1", {"ko": 4})
    desk.clock.advance(1.0)
    await desk.agent("ko-2", {"ko": 4})
    desk.clock.advance(1.0)


async def test_a_contact_is_offered_to_the_agent_who_speaks_its_language(desk: Desk) -> None:
    await desk.agent("zh-1", {"zh": 5})  # idle longest, but cannot serve a Korean speaker
    desk.clock.advance(5.0)
    await desk.agent("ko-1", {"ko": 4})

    assert await desk.bus.deliver(created("c1")) == FakeBus.ACK

    [queued] = desk.bus.of(events_pb2.ContactQueued)
    assert queued.contact_id == "c1"
    assert desk.offered() == [("c1", "ko-1")]
    [offer] = desk.offers_to("ko-1")
    assert offer.contact.contact_id == "c1"
    assert offer.expires_at.ToNanoseconds() == int((desk.clock.now + ACCEPT_TIMEOUT) * 1e9)
    assert desk.offers_to("zh-1") == []
    assert desk.journal.calls()[-1] == "add_contact"


async def test_accepting_the_offer_assigns_the_contact(desk: Desk) -> None:
    await desk.agent("ko-1", {"ko": 4})
    await desk.bus.deliver(created("c1"))
    [offer] = desk.offers_to("ko-1")
    desk.clock.advance(3.0)

    assigned = await desk.router.accept(TENANT, "ko-1", offer.offer_id)

    assert assigned.contact.contact_id == "c1"
    [event] = desk.bus.of(events_pb2.ContactAssigned)
    assert (event.contact_id, event.agent_id, event.offer_id) == ("c1", "ko-1", offer.offer_id)
    assert event.waited.ToSeconds() == 3
    assert desk.journal.calls()[-1] == "accept"


async def test_a_declined_offer_goes_to_the_next_agent(desk: Desk) -> None:
    await two_korean_agents(desk)
    await desk.bus.deliver(created("c1"))
    [first] = desk.offers_to("ko-1")

    await desk.router.decline(TENANT, "ko-1", first.offer_id, "on a call")

    [second] = desk.offers_to("ko-2")
    assert second.contact.contact_id == "c1" and second.offer_id != first.offer_id
    assert desk.offered() == [("c1", "ko-1"), ("c1", "ko-2")]
    assert desk.offers_to("ko-1") == []
    assert not desk.bus.of(events_pb2.ContactAssigned)


async def test_an_offer_not_accepted_in_time_goes_to_the_next_agent(desk: Desk) -> None:
    await two_korean_agents(desk)
    await desk.bus.deliver(created("c1"))
    [first] = desk.offers_to("ko-1")

    desk.clock.advance(ACCEPT_TIMEOUT - 1)
    await desk.router.run("tick")
    assert desk.offers_to("ko-2") == []  # not yet due

    desk.clock.advance(1.0)
    await desk.router.run("tick")

    [second] = desk.offers_to("ko-2")
    assert second.contact.contact_id == "c1" and second.offer_id != first.offer_id
    assert desk.offered() == [("c1", "ko-1"), ("c1", "ko-2")]
    with pytest.raises(FailedPrecondition, match="no longer live"):
        await desk.router.accept(TENANT, "ko-1", first.offer_id)


async def test_a_redelivered_contact_is_routed_once(desk: Desk) -> None:
    await two_korean_agents(desk)
    event = created("c1", event_id="ev-c1")

    assert await desk.bus.deliver(event) == FakeBus.ACK
    assert await desk.bus.deliver(event) == FakeBus.ACK  # at least once: the same event again

    assert len(desk.bus.of(events_pb2.ContactQueued)) == 1
    assert desk.offered() == [("c1", "ko-1")]
    [offer] = desk.offers_to("ko-1")
    assert desk.offers_to("ko-2") == []

    await desk.router.accept(TENANT, "ko-1", offer.offer_id)
    assert await desk.bus.deliver(event) == FakeBus.ACK  # even once it is assigned
    assert desk.offered() == [("c1", "ko-1")]
    assert desk.offers_to("ko-2") == []
    assert len(desk.bus.of(events_pb2.ContactAssigned)) == 1


async def test_a_malformed_event_is_parked_and_the_next_one_is_routed(desk: Desk) -> None:
    await desk.agent("ko-1", {"ko": 4})
    no_meta = events_pb2.ContactCreated(contact=created("c0").contact)
    no_contact_id = created("")
    other_tenant = created("c2")
    other_tenant.contact.tenant = "globex"
    entries = len(desk.journal.entries)

    assert await desk.bus.deliver(no_meta) == FakeBus.PARKED
    assert await desk.bus.deliver(no_contact_id) == FakeBus.PARKED
    assert await desk.bus.deliver(other_tenant) == FakeBus.PARKED

    assert [why.split(":")[0] for _, why in desk.bus.parked] == [
        "malformed",
        "InvalidArgument",
        "InvalidArgument",
    ]
    assert "contact.tenant" in desk.bus.parked[2][1]
    assert desk.bus.of(events_pb2.ContactQueued) == []
    assert len(desk.journal.entries) == entries  # refused before the engine changed anything

    assert await desk.bus.deliver(created("c3")) == FakeBus.ACK
    assert desk.offered() == [("c3", "ko-1")]


async def test_the_contact_handler_refuses_what_it_cannot_route(desk: Desk) -> None:
    with pytest.raises(InvalidArgument, match=r"contact\.contact_id"):
        await desk.router.on_contact_created(created(""))


async def test_the_journal_replays_to_the_same_decisions(desk: Desk) -> None:
    await two_korean_agents(desk)
    await desk.bus.deliver(created("c1"))
    [first] = desk.offers_to("ko-1")
    await desk.router.decline(TENANT, "ko-1", first.offer_id, "")
    await desk.bus.deliver(created("c2"))
    [second] = desk.offers_to("ko-2")
    await desk.router.accept(TENANT, "ko-2", second.offer_id)

    replica = Router(new_engine(), RoutingNotifier(FakeBus()), MemoryJournal())  # type: ignore[arg-type]
    for entry in desk.journal.entries:
        replica.apply_entry(entry)

    assert replica.divergences == 0
    assert replica.applied_seq == desk.journal.last_seq
    assert set(replica.engine.offers) == set(desk.router.engine.offers)
    assert {cid: (c.status, c.agent_id) for cid, c in replica.engine.contacts.items()} == {
        cid: (c.status, c.agent_id) for cid, c in desk.router.engine.contacts.items()
    }


class SendingBus(FakeBus):
    """A FakeBus that also keeps every event it was handed, acknowledged or not (what went out
    on the wire)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Any] = []

    async def publish_async(self, event: Any, traceparent: str = "") -> asyncio.Future[bool]:
        self.sent.append(event)
        return await super().publish_async(event, traceparent)


async def held_offer(desk: Desk, agent_id: str) -> tuple[router_pb2.Offer, asyncio.Task[str]]:
    """Deliver c1 with JetStream holding back every event's ack: the offer on the agent's
    stream, and the contact event's delivery (not yet settled)."""
    desk.bus.hold = asyncio.Event()
    delivery = asyncio.ensure_future(desk.bus.deliver(created("c1", event_id="ev-c1")))
    offer = await desk.next_offer(agent_id)
    assert offer is not None
    return offer, delivery


async def test_the_offer_reaches_the_agent_while_its_events_wait_for_their_acks(
    desk: Desk,
) -> None:
    """Once the journal holds the decision, the offer goes out; the events' acks are awaited
    beside it, and the contact event is acknowledged only once they came."""
    await desk.agent("ko-1", {"ko": 4})

    offer, delivery = await held_offer(desk, "ko-1")

    assert offer.contact.contact_id == "c1"
    assert desk.journal.calls()[-1] == "add_contact"
    assert desk.bus.of(events_pb2.ContactOffered) == []  # sent, not yet acknowledged
    assert not delivery.done()
    assert desk.bus.hold is not None
    desk.bus.hold.set()
    assert await delivery == FakeBus.ACK
    assert desk.offered() == [("c1", "ko-1")]
    assert desk.router.leader


class StalledBus(FakeBus):
    """A FakeBus whose sending stalls (the connection's outbound buffer is full, say) until
    `flowing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = asyncio.Event()

    async def publish_async(self, event: Any, traceparent: str = "") -> asyncio.Future[bool]:
        await self.flowing.wait()
        return await super().publish_async(event, traceparent)


async def test_the_offer_does_not_wait_for_its_events_to_be_sent(desk: Desk) -> None:
    """The journal entry alone makes the decision durable: the offer goes to the agent as soon
    as JetStream acknowledged it, while the decision's events are still being sent; the contact
    event is acknowledged only once they are sent and acknowledged."""
    desk.bus = desk.router.notifier.bus = stalled = StalledBus()  # type: ignore[assignment]
    nats_consumer.subscribe(stalled, desk.router, "router")  # type: ignore[arg-type]
    stalled.flowing.set()
    await desk.agent("ko-1", {"ko": 4})
    stalled.flowing.clear()

    delivery = asyncio.ensure_future(stalled.deliver(created("c1", event_id="ev-c1")))
    offer = await desk.next_offer("ko-1")

    assert offer is not None and offer.contact.contact_id == "c1"
    assert desk.journal.calls()[-1] == "add_contact"
    assert desk.offered() == []  # not sent yet
    assert not delivery.done()
    stalled.flowing.set()
    assert await delivery == FakeBus.ACK
    assert desk.offered() == [("c1", "ko-1")]
    assert desk.router.leader


async def test_events_lost_after_the_offer_are_published_once_by_recovery(desk: Desk) -> None:
    """The leader dies after the journal acknowledged the entry and the offer reached the agent,
    before JetStream stored the events: recovery from the journal publishes them with the same
    event ids, so the old leader's copies, if they land after all, are dropped as duplicates."""
    desk.bus = desk.router.notifier.bus = sending = SendingBus()  # type: ignore[assignment]
    nats_consumer.subscribe(sending, desk.router, "router")  # type: ignore[arg-type]
    await desk.agent("ko-1", {"ko": 4})

    offer, delivery = await held_offer(desk, "ko-1")
    delivery.cancel()  # the leader is gone: its acks never come, the event is not acknowledged
    lost = [e for e in sending.sent if isinstance(e, events_pb2.ContactOffered)]
    assert [e.offer_id for e in lost] == [offer.offer_id]

    bus = FakeBus()
    recovered = Router(new_engine(), RoutingNotifier(bus), MemoryJournal())  # type: ignore[arg-type]
    for entry in desk.journal.entries:
        recovered.apply_entry(entry)
    await recovered.republish_recent()
    for event in sending.sent:  # the old leader's copies arrive late
        await bus.publish(event)

    assert recovered.divergences == 0
    assert [(e.contact_id, e.offer_id) for e in bus.of(events_pb2.ContactOffered)] == [
        ("c1", offer.offer_id)
    ]
    assert [e.contact_id for e in bus.of(events_pb2.ContactQueued)] == ["c1"]
    assert recovered.engine.offers[offer.offer_id].agent_id == "ko-1"


async def test_the_composition_root_runs_on_the_adapters_it_is_given() -> None:
    """bootstrap() with every adapter given: the router recovers from the given journal, takes
    the given lease, consumes on the connection it is given, publishes on the given bus, and
    hands the lease back when it stops."""
    bus, consumer, log, lease = FakeBus(), FakeBus(), MemoryJournal(), MemoryLease()

    async def connect_consumer() -> FakeBus:
        return consumer

    settings = RouterSettings(
        ROUTER_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET="unit-secret",
        ROUTER_WATCHDOG_SECONDS=60,  # the fake bus has no consumer to watch
        SHUTDOWN_GRACE_SECONDS=0.5,
    )
    app = bootstrap(
        settings,
        bus=bus,  # type: ignore[arg-type]
        journal=log,  # type: ignore[arg-type]
        snapshots=NoSnapshots(),  # type: ignore[arg-type]
        lease=lease,  # type: ignore[arg-type]
        clock=FakeClock(1000.0),
        connect_consumer=connect_consumer,  # type: ignore[arg-type]
    )
    await app.start()
    try:
        assert app.is_leader and app.router is not None and app.readiness is not None
        assert app.readiness.serving and lease.held and consumer.started
        assert log.calls()[:3] == ["begin_term", "disconnect_all", "apply_file_config"]
        await app.router.sign_in(TENANT, "ko-1", "ko-1", {"ko": 4}, {}, {}, Presence.AVAILABLE)
        stream = await app.router.connect(TENANT, "ko-1")

        assert await consumer.deliver(created("c1")) == FakeBus.ACK

        state, offer = stream.get_nowait(), stream.get_nowait()
        assert isinstance(state, router_pb2.Agent) and state.agent_id == "ko-1"  # as it opened
        assert isinstance(offer, router_pb2.Offer) and offer.contact.contact_id == "c1"
        [offered] = bus.of(events_pb2.ContactOffered)
        assert (offered.contact_id, offered.agent_id) == ("c1", "ko-1")
        assert {call.at for entry in log.entries for call in entry.calls} == {1000.0}  # its clock
    finally:
        await app.stop()
    assert not lease.held and consumer.drained and bus.drained
    assert app.readiness.reasons() == {"leader": "stopping"}


async def test_a_lone_input_is_decided_in_its_callers_own_step(desk: Desk) -> None:
    """With nothing else in flight, an input is decided by the task that brought it (the bus
    handler), not handed to another task first: its first step routes the contact."""
    await desk.agent("ko-1", {"ko": 4})

    handling = asyncio.ensure_future(desk.router.on_contact_created(created("c1")))
    await asyncio.sleep(0)  # the handler's first step, and nothing after it

    contact = desk.router.engine.contacts.get("c1")
    assert contact is not None and contact.agent_id == "" and contact.offer_id
    await handling
    assert [o.contact.contact_id for o in desk.offers_to("ko-1")] == ["c1"]
    assert desk.offered() == [("c1", "ko-1")]


class WatchingBus(FakeBus):
    """A FakeBus that notes, as each event is handed to it, what `watch` says then."""

    def __init__(self) -> None:
        super().__init__()
        self.watch: Any = lambda: None
        self.seen: list[tuple[str, Any]] = []

    async def publish_async(self, event: Any, traceparent: str = "") -> asyncio.Future[bool]:
        self.seen.append((type(event).__name__, self.watch()))
        return await super().publish_async(event, traceparent)


async def test_the_offer_is_on_the_agents_stream_before_its_events_are_sent(desk: Desk) -> None:
    """Once the journal holds the decision, the offer is handed to the agent's stream first and
    the decision's events are sent right after it."""
    desk.bus = desk.router.notifier.bus = watching = WatchingBus()  # type: ignore[assignment]
    nats_consumer.subscribe(watching, desk.router, "router")  # type: ignore[arg-type]
    await desk.agent("ko-1", {"ko": 4})
    stream = desk.streams["ko-1"]
    [opened] = desk.told("ko-1")  # the agent's state as its stream opened
    assert isinstance(opened, router_pb2.Agent)
    watching.watch = stream.qsize  # offers waiting on the agent's stream
    watching.seen.clear()

    assert await watching.deliver(created("c1", event_id="ev-c1")) == FakeBus.ACK

    assert watching.seen == [("ContactQueued", 1), ("ContactOffered", 1)]
    assert desk.offered() == [("c1", "ko-1")]


class AckedLaterJournal(MemoryJournal):
    """A MemoryJournal whose acknowledgements come when the test gives them."""

    def __init__(self) -> None:
        super().__init__()
        self.unacked: list[asyncio.Future[int]] = []

    async def append(self, commands: list[router_journal_pb2.RouterCommand]) -> asyncio.Future[int]:
        await super().append(commands)
        written: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.unacked.append(written)
        return written


async def test_the_offer_is_handed_to_the_stream_right_as_the_journal_acknowledges(
    desk: Desk,
) -> None:
    """Nothing stands between the journal's acknowledgement and the offer's delivery: the task
    waiting for the acknowledgement puts the offer on the agent's stream when it wakes."""
    await desk.agent("ko-1", {"ko": 4})
    desk.router.journal = journal = AckedLaterJournal()  # type: ignore[assignment]
    stream = desk.streams["ko-1"]
    desk.told("ko-1")  # the agent's state as its stream opened

    handling = asyncio.ensure_future(desk.router.on_contact_created(created("c1")))
    for _ in range(20):  # until every task waits for the journal
        await asyncio.sleep(0)
    assert len(journal.unacked) == 1 and stream.empty()

    journal.unacked[0].set_result(1)
    await asyncio.sleep(0)  # one turn of the loop

    assert stream.qsize() == 1
    await handling
    assert desk.offered() == [("c1", "ko-1")]


async def test_a_lone_input_whose_caller_gives_up_is_carried_through(desk: Desk) -> None:
    """Decided in its caller's step, the input is journaled, offered and published even though
    the caller stops waiting right after."""
    await desk.agent("ko-1", {"ko": 4})

    handling = asyncio.ensure_future(desk.router.on_contact_created(created("c1")))
    await asyncio.sleep(0)
    handling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handling

    offer = await desk.next_offer("ko-1")
    assert offer is not None and offer.contact.contact_id == "c1"
    assert desk.journal.calls()[-1] == "add_contact"
    for _ in range(100):
        if desk.offered():
            break
        await asyncio.sleep(0.01)
    assert desk.offered() == [("c1", "ko-1")]

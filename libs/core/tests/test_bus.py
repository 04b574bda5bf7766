"""The bus against a real nats-server: de-duplication, redelivery, parking, decoding."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from switchboard.core import deadletter, events, telemetry
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.core.errors import InvalidArgument, Retry, RetryUntouched, Unavailable
from switchboard.testing.waiting import eventually, until
from switchboard.v1 import contact_pb2, events_pb2


def created(cid: str) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=cid, tenant="acme", channel=contact_pb2.CHANNEL_CHAT
        ),
    )


# A consumer that gives up within seconds: patience 2 x 1 + 0.2 + 0.5 = 2.7 s.
IMPATIENT = ConsumerOptions(ack_wait=1.0, max_backoff=0.2, retry_margin=0.5)


async def test_publish_is_deduplicated_by_event_id(bus: Bus) -> None:
    event = created("c1")
    first = await bus.publish(event)
    second = await bus.publish(event)
    assert second.duplicate and first.seq == second.seq
    acks = await bus.publish_many([created("c2"), created("c3")])
    assert [a.seq for a in acks] == [first.seq + 1, first.seq + 2]


async def test_failing_handler_is_retried_then_succeeds(nats_url: str, bus: Bus) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    attempts: list[str] = []

    async def flaky(event: events_pb2.ContactCreated) -> None:
        attempts.append(event.contact.contact_id)
        if len(attempts) < 3:
            raise RuntimeError("database briefly unavailable")

    consumer_bus.subscribe(
        "flaky", events_pb2.ContactCreated, flaky, ConsumerOptions(max_deliver=5)
    )
    await consumer_bus.start()
    await bus.publish(created("c1"))
    await until(lambda: consumer_bus.stats()["flaky"]["processed"] == 1, "processed after retries")
    assert attempts == ["c1", "c1", "c1"]
    await consumer_bus.drain()


async def test_an_event_that_is_never_ready_is_parked_with_its_reason_and_not_redelivered(
    nats_url: str, bus: Bus
) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    attempts: list[str] = []
    seen: list[str] = []

    async def broken(event: events_pb2.ContactCreated) -> None:
        if event.contact.contact_id == "poison":
            attempts.append("poison")
            raise Retry("contact poison is not recorded yet")
        seen.append(event.contact.contact_id)

    consumer_bus.subscribe("broken", events_pb2.ContactCreated, broken, IMPATIENT)
    await consumer_bus.start()
    poison = created("poison")
    ack = await bus.publish(poison)
    await bus.publish(created("after"))
    await until(lambda: consumer_bus.stats()["broken"]["parked"] == 1, "poison parked")
    await until(lambda: seen == ["after"], "the next event handled")
    allowed = IMPATIENT.policy.attempts
    assert attempts == ["poison"] * allowed
    assert consumer_bus.stats()["broken"]["terminated"] == 1

    [parked] = await deadletter.parked(bus.js)
    assert parked.consumer == "broken"
    assert (parked.stream, parked.sequence) == ("EVENTS", ack.seq)
    assert parked.subject == "contact.acme.chat.created"
    assert parked.type_name == "switchboard.v1.ContactCreated"
    assert (parked.event_id, parked.tenant) == (poison.meta.event_id, "acme")
    assert parked.deliveries == allowed
    assert parked.reason == (
        f"not ready: contact poison is not recorded yet (gave up after {allowed} deliveries)"
    )
    # the original payload and headers, and an id that makes parking the same delivery idempotent
    assert events_pb2.ContactCreated.FromString(parked.data) == poison
    assert parked.headers["Nats-Msg-Id"] == f"dlq:broken:EVENTS:{ack.seq}"
    assert parked.headers[deadletter.MSG_ID_HEADER] == poison.meta.event_id
    original = await bus.js.get_msg("EVENTS", ack.seq)
    kept = {k: v for k, v in (original.headers or {}).items() if k != "Nats-Msg-Id"}
    assert kept.items() <= parked.headers.items() and events.TYPE_HEADER in kept

    # terminated after parking: JetStream does not hand it out again
    await asyncio.sleep(1.5)
    assert attempts == ["poison"] * allowed
    info = await bus.js.consumer_info("EVENTS", "broken")
    assert info.num_ack_pending == 0 and info.num_pending == 0
    # and the server's own limit was never what stopped it
    assert info.config.max_deliver == IMPATIENT.policy.server_max_deliver > allowed
    await consumer_bus.drain()


async def test_a_not_ready_event_outlasts_the_redelivery_of_what_it_waits_for(
    nats_url: str, bus: Bus
) -> None:
    """A consumer dies holding a ContactCreated; the ContactAssigned behind it waits until the
    ack wait (15 s, beyond the 11.3 s the old fixed schedule allowed) brings it back."""
    options = ConsumerOptions(ack_wait=15.0)
    dying = await Bus.connect(nats_url, source="dying")
    fetched = asyncio.Event()

    async def hang(event: events_pb2.ContactCreated) -> None:
        fetched.set()
        await asyncio.Event().wait()

    async def never(event: events_pb2.ContactAssigned) -> None:
        raise AssertionError("the dying consumer never gets this far")

    dying.subscribe("case", events_pb2.ContactCreated, hang, options)
    dying.subscribe("case", events_pb2.ContactAssigned, never, options)
    await dying.start()
    await bus.publish(created("c1"))
    await asyncio.wait_for(fetched.wait(), 10)
    # Its handler never returns, so draining gives up on it and cancels it: no ack, no nak, as
    # if the process had been killed.
    dead = asyncio.create_task(dying.drain())

    recorded: set[str] = set()
    assigned: list[str] = []
    tries = 0

    async def on_created(event: events_pb2.ContactCreated) -> None:
        recorded.add(event.contact.contact_id)

    async def on_assigned(event: events_pb2.ContactAssigned) -> None:
        nonlocal tries
        tries += 1
        if event.contact_id not in recorded:
            raise Retry(f"contact {event.contact_id} is not recorded yet")
        assigned.append(event.contact_id)

    survivor = await Bus.connect(nats_url, source="survivor")
    survivor.subscribe("case", events_pb2.ContactCreated, on_created, options)
    survivor.subscribe("case", events_pb2.ContactAssigned, on_assigned, options)
    await survivor.start()
    await bus.publish(
        events_pb2.ContactAssigned(
            meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
            contact_id="c1",
            agent_id="agent-7",
        )
    )
    await until(lambda: assigned == ["c1"], "the assignment applied", seconds=40)
    assert tries > 8  # more deliveries than the old schedule's 8
    assert survivor.stats()["case"]["parked"] == 0
    assert await deadletter.parked(bus.js) == []
    await dead
    await survivor.drain()


async def test_an_unavailable_replica_leaves_the_event_for_later_instead_of_dropping_it(
    nats_url: str, bus: Bus
) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    attempts: list[str] = []

    async def standby_then_leader(event: events_pb2.ContactCreated) -> None:
        attempts.append(event.contact.contact_id)
        if len(attempts) <= 3 or event.contact.contact_id == "never":
            raise Unavailable("this router replica is the standby; the leader takes requests")

    consumer_bus.subscribe("router", events_pb2.ContactCreated, standby_then_leader, IMPATIENT)
    await consumer_bus.start()
    await bus.publish(created("c1"))
    await until(lambda: consumer_bus.stats()["router"]["processed"] == 1, "handled by a leader")
    assert attempts == ["c1"] * 4
    assert consumer_bus.stats()["router"]["terminated"] == 0

    # With no leader for longer than the patience, it is parked, still not dropped.
    await bus.publish(created("never"))
    await until(lambda: consumer_bus.stats()["router"]["parked"] == 1, "parked")
    [parked] = await deadletter.parked(bus.js)
    assert parked.reason.startswith("unavailable: this router replica is the standby")
    await consumer_bus.drain()


async def test_an_invalid_event_is_parked_at_once(nats_url: str, bus: Bus) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    calls = 0

    async def strict(event: events_pb2.ContactCreated) -> None:
        nonlocal calls
        calls += 1
        raise InvalidArgument("contact.language", "is not a BCP 47 tag")

    consumer_bus.subscribe("strict", events_pb2.ContactCreated, strict)
    await consumer_bus.start()
    event = created("c1")
    await bus.publish(event)
    await until(lambda: consumer_bus.stats()["strict"]["terminated"] == 1, "terminated")
    assert calls == 1
    assert consumer_bus.stats()["strict"]["parked"] == 1
    [parked] = await deadletter.parked(bus.js, consumer="strict")
    assert parked.event_id == event.meta.event_id
    assert parked.deliveries == 1
    assert parked.reason == "InvalidArgument: contact.language: is not a BCP 47 tag"
    assert await deadletter.parked(bus.js, consumer="someone-else") == []
    await consumer_bus.drain()


async def test_undecodable_messages_are_parked_with_a_reason(
    nats_url: str, bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    seen: list[str] = []

    async def handler(event: events_pb2.ContactCreated) -> None:
        seen.append(event.contact.contact_id)

    consumer_bus.subscribe("decoder", events_pb2.ContactCreated, handler)
    await consumer_bus.start()
    await bus.js.publish("contact.acme.chat.created", b"garbage")  # no type header
    wrong_place = created("misfiled")
    await bus.js.publish(
        "contact.globex.chat.created",
        wrong_place.SerializeToString(),
        headers={events.TYPE_HEADER: "switchboard.v1.ContactCreated"},
    )
    no_meta = events_pb2.ContactCreated(contact=contact_pb2.Contact(contact_id="x"))
    await bus.js.publish(
        "contact.acme.chat.created",
        no_meta.SerializeToString(),
        headers={events.TYPE_HEADER: "switchboard.v1.ContactCreated"},
    )
    await bus.publish(created("good"))
    await until(lambda: seen == ["good"], "the good event handled")
    await until(lambda: consumer_bus.stats()["decoder"]["terminated"] == 3, "three terminated")
    log = caplog.text
    assert "missing Sb-Event-Type header" in log
    assert "belongs on 'contact.acme.chat.created'" in log
    assert "meta: is required" in log
    parked = await deadletter.parked(bus.js)
    assert [(p.subject, p.data) for p in parked] == [
        ("contact.acme.chat.created", b"garbage"),
        ("contact.globex.chat.created", wrong_place.SerializeToString()),
        ("contact.acme.chat.created", no_meta.SerializeToString()),
    ]
    assert parked[0].reason == "malformed: missing Sb-Event-Type header"
    assert parked[1].headers[events.TYPE_HEADER] == "switchboard.v1.ContactCreated"
    await consumer_bus.drain()


async def test_an_event_that_cannot_be_parked_is_redelivered_not_terminated(
    nats_url: str, bus: Bus
) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    calls = 0

    async def strict(event: events_pb2.ContactCreated) -> None:
        nonlocal calls
        calls += 1
        raise InvalidArgument("contact.language", "is not a BCP 47 tag")

    await bus.js.delete_stream(deadletter.STREAM)
    consumer_bus.subscribe("strict", events_pb2.ContactCreated, strict)
    await consumer_bus.start()
    await bus.publish(created("c1"))
    await until(lambda: calls >= 3, "delivered again while the dead-letter stream is gone")
    assert consumer_bus.stats()["strict"]["terminated"] == 0
    await bus.ensure_streams()
    await until(lambda: consumer_bus.stats()["strict"]["parked"] == 1, "parked once it is back")
    assert len(await deadletter.parked(bus.js)) == 1
    await consumer_bus.drain()


async def test_parking_the_same_delivery_twice_stores_it_once(bus: Bus) -> None:
    await bus.publish(created("c1"))
    sub = await bus.js.pull_subscribe("contact.acme.chat.created", durable="probe", stream="EVENTS")
    [msg] = await sub.fetch(1, timeout=5)
    first = await deadletter.park(bus.js, msg, "probe", "first try")
    second = await deadletter.park(bus.js, msg, "probe", "term was lost, parked again")
    assert second.duplicate and second.seq == first.seq
    [parked] = await deadletter.parked(bus.js)
    assert parked.reason == "first try"
    await sub.unsubscribe()


async def test_a_replayed_event_is_handled_again_and_leaves_the_dead_letter_stream(
    nats_url: str, bus: Bus
) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    fixed = False
    handled: list[str] = []

    async def handler(event: events_pb2.ContactCreated) -> None:
        if not fixed:
            raise InvalidArgument("contact.language", "is not a BCP 47 tag")
        handled.append(event.meta.event_id)

    consumer_bus.subscribe("fixer", events_pb2.ContactCreated, handler)
    await consumer_bus.start()
    event = created("c1")
    await bus.publish(event)
    await bus.publish(created("c2"))
    await until(lambda: consumer_bus.stats()["fixer"]["parked"] == 2, "both parked")
    first, second = await deadletter.parked(bus.js)

    fixed = True  # e.g. a corrected configuration
    [outcome] = await deadletter.replay(bus.js, [first.seq])
    assert outcome.ok and outcome.ack is not None
    await until(lambda: handled == [event.meta.event_id], "the replayed event handled")
    assert [p.seq for p in await deadletter.parked(bus.js)] == [second.seq]
    replayed = await bus.js.get_msg("EVENTS", outcome.ack.seq)
    assert replayed.subject == "contact.acme.chat.created"
    assert replayed.data == event.SerializeToString()
    headers = replayed.headers or {}
    assert headers["Nats-Msg-Id"] == f"{event.meta.event_id}:replay:{first.seq}"
    assert headers[events.TYPE_HEADER] == "switchboard.v1.ContactCreated"
    assert headers[deadletter.REPLAYED_FROM_HEADER] == str(first.seq)
    assert not [k for k in headers if k.startswith("Sb-Dlq-")]

    # a sequence that is not parked is reported, not invented
    [missing] = await deadletter.replay(bus.js, [first.seq])
    assert not missing.ok and missing.error == "no such parked event"
    assert [o.ok for o in await deadletter.replay(bus.js, consumer="fixer")] == [True]
    await until(lambda: len(handled) == 2, "the other one handled too")
    assert await deadletter.parked(bus.js) == []
    await consumer_bus.drain()


async def test_publishing_an_invalid_event_is_refused(bus: Bus) -> None:
    with pytest.raises(InvalidArgument, match="meta"):
        await bus.publish(events_pb2.ContactCreated())


class UnitOfWork:
    """A fake transaction: what handlers stage inside a batch is committed only on a clean exit."""

    def __init__(self, isolates: bool = False, always: bool = False) -> None:
        self.committed: list[str] = []
        self.staged: list[str] | None = None
        self.commits = 0
        self.isolates = isolates
        self.always = always  # yields itself without isolating too
        # (the number of events each batch was given up front, whether it was to isolate them)
        self.seen: list[tuple[int, bool]] = []

    @contextlib.asynccontextmanager
    async def batch(
        self, events: Sequence[Any] = (), isolate: bool = False
    ) -> AsyncIterator[UnitOfWork | None]:
        self.staged = []
        self.seen.append((len(events), isolate))
        try:
            yield self if self.always or (self.isolates and isolate) else None
            self.committed += self.staged
            self.commits += 1
        finally:
            self.staged = None

    @contextlib.asynccontextmanager
    async def each(self, event: Any) -> AsyncIterator[None]:
        """A savepoint: what the handler staged is undone if it raises."""
        assert self.staged is not None
        mark = len(self.staged)
        try:
            yield
        except BaseException:
            del self.staged[mark:]
            raise

    def write(self, item: str) -> None:
        if self.staged is not None:
            self.staged.append(item)
        else:
            self.committed.append(item)


async def test_batches_commit_together_and_a_bad_event_falls_back_to_one_by_one(
    nats_url: str, bus: Bus
) -> None:
    uow = UnitOfWork()

    async def handler(event: events_pb2.ContactCreated) -> None:
        uow.write(event.contact.contact_id)
        if event.contact.contact_id == "bad":
            raise InvalidArgument("contact.language", "is not a BCP 47 tag")

    # Everything is on the stream before the consumer starts, so it arrives in one fetch.
    await bus.publish_many([created(f"a{i}") for i in range(5)] + [created("bad")])
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "uow", events_pb2.ContactCreated, handler, ConsumerOptions(batch_scope=uow.batch)
    )
    await consumer_bus.start()
    await until(lambda: consumer_bus.stats()["uow"]["terminated"] == 1, "the bad event terminated")
    await until(lambda: consumer_bus.stats()["uow"]["processed"] == 5, "the good ones processed")
    # the batch rolled back; each event was then handled alone: every good one exactly once
    assert sorted(uow.committed) == sorted([f"a{i}" for i in range(5)] + ["bad"])
    assert consumer_bus.stats()["uow"]["batched"] == 0

    await consumer_bus.drain()
    await bus.publish_many([created(f"n{i}") for i in range(8)])
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "uow", events_pb2.ContactCreated, handler, ConsumerOptions(batch_scope=uow.batch)
    )
    await consumer_bus.start()
    await until(lambda: consumer_bus.stats()["uow"]["processed"] == 8, "the next batch processed")
    assert consumer_bus.stats()["uow"]["batched"] == 8
    assert uow.commits == 1
    assert [c for c in uow.committed if c.startswith("n")] == [f"n{i}" for i in range(8)]
    await consumer_bus.drain()


async def test_a_unit_that_isolates_events_settles_a_bad_one_alone_and_commits_the_rest(
    nats_url: str, bus: Bus
) -> None:
    uow = UnitOfWork(isolates=True)
    attempts: dict[str, int] = {}

    async def handler(event: events_pb2.ContactCreated) -> None:
        cid = event.contact.contact_id
        attempts[cid] = attempts.get(cid, 0) + 1
        uow.write(cid)
        if cid == "bad":
            raise InvalidArgument("contact.language", "is not a BCP 47 tag")
        if cid == "early" and attempts[cid] == 1:
            raise Retry("its contact is not recorded yet")

    await bus.publish_many(
        [created(f"a{i}") for i in range(3)]
        + [created("bad"), created("early")]
        + [created(f"b{i}") for i in range(3)]
    )
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "uow", events_pb2.ContactCreated, handler, ConsumerOptions(batch_scope=uow.batch)
    )
    await consumer_bus.start()
    try:
        await until(lambda: consumer_bus.stats()["uow"]["processed"] == 7, "all good ones applied")
        stats = consumer_bus.stats()["uow"]
        assert stats["terminated"] == 1  # the invalid one, parked at once
        assert stats["batched"] >= 6  # the six good ones committed in the first batch
        # Tried whole first; after the refusal, again with each event isolated.
        assert uow.seen[:2] == [(8, False), (8, True)]
        # What the bad and the not-ready events staged was undone; the rest once each.
        assert sorted(uow.committed) == sorted(
            [f"a{i}" for i in range(3)] + [f"b{i}" for i in range(3)] + ["early"]
        )
        # The first try stopped at the bad one; the isolated try ran all; "early" again alone.
        assert attempts["bad"] == 2 and attempts["early"] == 2
    finally:
        await consumer_bus.drain()


async def test_an_event_refused_untouched_waits_alone_and_the_batch_commits_without_isolating(
    nats_url: str, bus: Bus
) -> None:
    uow = UnitOfWork(isolates=True, always=True)
    attempts: dict[str, int] = {}

    async def handler(event: events_pb2.ContactCreated) -> None:
        cid = event.contact.contact_id
        attempts[cid] = attempts.get(cid, 0) + 1
        if cid == "early" and attempts[cid] == 1:
            raise RetryUntouched("its contact is not recorded yet")  # before writing anything
        uow.write(cid)

    await bus.publish_many(
        [created(f"a{i}") for i in range(3)]
        + [created("early")]
        + [created(f"b{i}") for i in range(3)]
    )
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "uow", events_pb2.ContactCreated, handler, ConsumerOptions(batch_scope=uow.batch)
    )
    await consumer_bus.start()
    try:
        await until(lambda: consumer_bus.stats()["uow"]["processed"] == 7, "all applied")
        # One try of the whole batch, not isolated, committed without "early"; no second try.
        assert uow.seen[0] == (7, False)
        assert (7, True) not in uow.seen
        assert consumer_bus.stats()["uow"]["batched"] >= 6
        assert sorted(uow.committed) == sorted(
            [f"a{i}" for i in range(3)] + [f"b{i}" for i in range(3)] + ["early"]
        )
        assert attempts == {**{c: 1 for c in uow.committed}, "early": 2}
    finally:
        await consumer_bus.drain()


async def test_a_concurrent_consumer_starts_handlers_in_stream_order_and_settles_each(
    nats_url: str, bus: Bus
) -> None:
    started: list[str] = []
    in_flight = 0
    most = 0
    release = asyncio.Event()

    async def handler(event: events_pb2.ContactCreated) -> None:
        nonlocal in_flight, most
        started.append(event.contact.contact_id)
        in_flight += 1
        most = max(most, in_flight)
        try:
            await release.wait()  # an I/O wait (a journal ack)
            if event.contact.contact_id == "c3":
                raise InvalidArgument("contact.language", "is not a BCP 47 tag")
        finally:
            in_flight -= 1

    await bus.publish_many([created(f"c{i}") for i in range(8)])
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "together", events_pb2.ContactCreated, handler, ConsumerOptions(concurrent=True)
    )
    await consumer_bus.start()
    try:
        await until(lambda: len(started) == 8, "all eight handlers started")
        assert most == 8  # all waiting at once, not one after the other
        assert started == [f"c{i}" for i in range(8)]
        release.set()
        await until(lambda: consumer_bus.stats()["together"]["processed"] == 7, "seven acked")
        await until(lambda: consumer_bus.stats()["together"]["terminated"] == 1, "one parked")
    finally:
        await consumer_bus.drain()


async def test_a_concurrent_consumer_fetches_on_while_a_batch_waits_and_drains_them_all(
    nats_url: str, bus: Bus
) -> None:
    """The next batch is fetched while the handlers of the one before still wait on I/O (the
    router's journal and event acks), up to `max_in_flight` events at once; handlers still start
    in stream order, and draining waits for every one of them to be settled."""
    started: list[str] = []
    release = asyncio.Event()

    async def handler(event: events_pb2.ContactCreated) -> None:
        started.append(event.contact.contact_id)
        await release.wait()

    await bus.publish_many([created(f"c{i}") for i in range(20)])
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "pipelined",
        events_pb2.ContactCreated,
        handler,
        ConsumerOptions(concurrent=True, batch=4, max_in_flight=12, fetch_timeout=0.2),
    )
    await consumer_bus.start()
    try:
        await until(lambda: len(started) == 12, "three batches waiting at once")
        await asyncio.sleep(0.5)
        assert started == [f"c{i}" for i in range(12)]  # no more than max_in_flight
        release.set()
        await until(lambda: len(started) == 20, "the rest fetched as room is made")
        assert started == [f"c{i}" for i in range(20)]
        await until(lambda: consumer_bus.stats()["pipelined"]["processed"] == 20, "all acked")
    finally:
        await consumer_bus.drain()


async def test_a_concurrent_consumer_hands_a_lone_event_straight_to_its_handler(
    nats_url: str, bus: Bus
) -> None:
    """A lone event fetched while nothing else waits is handled in the one task the consumer
    starts for it (no batch task in between), and then settled as any other."""
    handled_in: list[bool] = []

    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer = None

    async def handler(event: events_pb2.ContactCreated) -> None:
        assert consumer is not None
        handled_in.append(asyncio.current_task() in consumer.batches)

    consumer_bus.subscribe(
        "alone",
        events_pb2.ContactCreated,
        handler,
        ConsumerOptions(concurrent=True, fetch_timeout=0.2),
    )
    consumer = consumer_bus._consumers[("alone", "EVENTS")]
    await consumer_bus.start()
    try:
        for i in range(3):
            await bus.publish(created(f"c{i}"))
            await until(lambda i=i: consumer_bus.stats()["alone"]["processed"] == i + 1, "acked")
        assert handled_in == [True, True, True]
    finally:
        await consumer_bus.drain()


async def test_draining_a_concurrent_consumer_waits_for_the_batches_in_flight(
    nats_url: str, bus: Bus
) -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def handler(event: events_pb2.ContactCreated) -> None:
        await release.wait()
        done.append(event.contact.contact_id)

    await bus.publish_many([created(f"c{i}") for i in range(8)])
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe(
        "drained",
        events_pb2.ContactCreated,
        handler,
        ConsumerOptions(concurrent=True, batch=2, fetch_timeout=0.2),
    )
    await consumer_bus.start()
    await until(lambda: consumer_bus._consumers[("drained", "EVENTS")].in_flight == 8, "all 8")
    draining = asyncio.create_task(consumer_bus.drain())
    await asyncio.sleep(0.3)
    release.set()
    await draining
    assert sorted(done) == sorted(f"c{i}" for i in range(8))
    assert consumer_bus.stats()["drained"]["processed"] == 8
    info = await bus.js.consumer_info("EVENTS", "drained")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_an_event_published_into_a_named_trace_carries_it_whatever_trace_is_current(
    bus: Bus,
) -> None:
    """The router publishes a contact's events into the contact's own trace (a timer or a freed
    agent decides outside it), by naming its traceparent, without continuing it first."""
    contact_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    other_trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    with telemetry.continued(other_trace):
        named = await (await bus.publish_async(created("c-named"), traceparent=contact_trace))
        current = await (await bus.publish_async(created("c-current")))
    stored = [await bus.js.get_msg("EVENTS", ack.seq) for ack in (named, current)]
    assert [(m.headers or {}).get("traceparent") for m in stored] == [
        contact_trace,
        other_trace["traceparent"],
    ]


async def test_an_idle_consumer_logs_no_warning_while_its_fetches_time_out(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A pull consumer with nothing to fetch times out every fetch_timeout: that is how it
    waits, not a failure, so it logs nothing at WARNING (only a real failure would)."""
    consumer_bus = await Bus.connect(nats_url, source="idle")

    async def handler(event: events_pb2.ContactCreated) -> None:
        pass

    consumer_bus.subscribe(
        "idle", events_pb2.ContactCreated, handler, ConsumerOptions(fetch_timeout=0.1)
    )
    caplog.set_level("INFO")
    await consumer_bus.start()
    consumer = next(iter(consumer_bus._consumers.values()))
    fetch = consumer.sub.fetch
    timed_out = 0

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal timed_out
        try:
            return await fetch(*args, **kwargs)
        except TimeoutError:
            timed_out += 1
            raise

    consumer.sub.fetch = counted
    await until(lambda: timed_out >= 6, "several fetches timed out empty")
    await consumer_bus.drain()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], [r.getMessage() for r in warnings]


async def test_a_batch_consumer_fetches_its_next_batch_while_one_is_handled_and_gives_it_back(
    nats_url: str, bus: Bus
) -> None:
    """Working through a backlog, the next batch is fetched while the current one is handled
    (no round trip between batches), yet handled only after it; stopped meanwhile, what was
    fetched ahead goes back to the server at once, not after the ack wait."""
    uow = UnitOfWork()
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(event: events_pb2.ContactCreated) -> None:
        await release.wait()
        handled.append(event.contact.contact_id)
        uow.write(event.contact.contact_id)

    await bus.publish_many([created(f"c{i}") for i in range(10)])
    options = ConsumerOptions(batch=4, batch_scope=uow.batch, ack_wait=30.0, fetch_ahead=True)
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe("ahead", events_pb2.ContactCreated, handler, options)
    await consumer_bus.start()

    async def fetched_ahead() -> bool:
        info = await bus.js.consumer_info("EVENTS", "ahead")
        return info.num_ack_pending == 8  # the batch held in the handler, and the next one

    await eventually(fetched_ahead, "the next batch fetched while the first is handled")
    draining = asyncio.create_task(consumer_bus.drain())
    await asyncio.sleep(0.2)
    release.set()
    await draining
    assert handled == [f"c{i}" for i in range(4)]

    # The next process takes the rest at once (well within the 30 s ack wait), in order.
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    consumer_bus.subscribe("ahead", events_pb2.ContactCreated, handler, options)
    await consumer_bus.start()
    try:
        await until(lambda: len(handled) == 10, "the rest handled", seconds=10)
        assert handled == [f"c{i}" for i in range(10)]
        assert uow.committed == handled
    finally:
        await consumer_bus.drain()


async def test_a_consumer_with_slow_handlers_leaves_what_it_is_not_handling_to_other_replicas(
    nats_url: str, bus: Bus
) -> None:
    """Without `fetch_ahead` (a fax's OCR, a mail's processing: one at a time), a replica busy
    with one event fetches no other, so a second replica takes the next at once."""
    release = asyncio.Event()
    taken: dict[str, str] = {}

    def handler_of(replica: str) -> Any:
        async def handler(event: events_pb2.ContactCreated) -> None:
            taken[event.contact.contact_id] = replica
            await release.wait()

        return handler

    options = ConsumerOptions(batch=1, ack_wait=30.0)
    first = await Bus.connect(nats_url, source="first")
    first.subscribe("slow", events_pb2.ContactCreated, handler_of("first"), options)
    await first.start()
    second: Bus | None = None
    try:
        await bus.publish_many([created("c0"), created("c1")])
        await until(lambda: "c0" in taken, "the first replica busy with c0")
        second = await Bus.connect(nats_url, source="second")
        second.subscribe("slow", events_pb2.ContactCreated, handler_of("second"), options)
        await second.start()
        await until(lambda: taken.get("c1") == "second", "the second replica given c1", seconds=10)
        assert taken == {"c0": "first", "c1": "second"}
    finally:
        release.set()
        await first.drain()
        if second is not None:
            await second.drain()

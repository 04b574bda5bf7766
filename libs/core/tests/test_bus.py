"""The bus against a real nats-server: de-duplication, redelivery, termination, decoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from switchboard.core import events
from switchboard.core.bus import Bus, ConsumerOptions
from switchboard.core.errors import InvalidArgument, Retry
from switchboard.v1 import contact_pb2, events_pb2


def created(cid: str) -> events_pb2.ContactCreated:
    return events_pb2.ContactCreated(
        meta=events.new_meta("acme", contact_pb2.CHANNEL_CHAT, "test"),
        contact=contact_pb2.Contact(
            contact_id=cid, tenant="acme", channel=contact_pb2.CHANNEL_CHAT
        ),
    )


async def until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")


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


async def test_handler_that_keeps_failing_is_terminated_after_max_deliver(
    nats_url: str, bus: Bus
) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    attempts: list[str] = []
    seen: list[str] = []

    async def broken(event: events_pb2.ContactCreated) -> None:
        if event.contact.contact_id == "poison":
            attempts.append("poison")
            raise Retry("never ready")
        seen.append(event.contact.contact_id)

    consumer_bus.subscribe(
        "broken", events_pb2.ContactCreated, broken, ConsumerOptions(max_deliver=3)
    )
    await consumer_bus.start()
    await bus.publish(created("poison"))
    await bus.publish(created("after"))
    await until(lambda: consumer_bus.stats()["broken"]["terminated"] == 1, "poison terminated")
    await until(lambda: seen == ["after"], "the next event handled")
    assert attempts == ["poison"] * 3
    await consumer_bus.drain()


async def test_invalid_event_is_terminated_at_once(nats_url: str, bus: Bus) -> None:
    consumer_bus = await Bus.connect(nats_url, source="consumer")
    calls = 0

    async def strict(event: events_pb2.ContactCreated) -> None:
        nonlocal calls
        calls += 1
        raise InvalidArgument("contact.language", "is not a BCP 47 tag")

    consumer_bus.subscribe("strict", events_pb2.ContactCreated, strict)
    await consumer_bus.start()
    await bus.publish(created("c1"))
    await until(lambda: consumer_bus.stats()["strict"]["terminated"] == 1, "terminated")
    assert calls == 1
    await consumer_bus.drain()


async def test_undecodable_messages_are_terminated_with_a_reason(
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
    await consumer_bus.drain()


async def test_publishing_an_invalid_event_is_refused(bus: Bus) -> None:
    with pytest.raises(InvalidArgument, match="meta"):
        await bus.publish(events_pb2.ContactCreated())


class UnitOfWork:
    """A fake transaction: what handlers stage inside a batch is committed only on a clean exit."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.staged: list[str] | None = None
        self.commits = 0

    @contextlib.asynccontextmanager
    async def batch(self) -> AsyncIterator[None]:
        self.staged = []
        try:
            yield
            self.committed += self.staged
            self.commits += 1
        finally:
            self.staged = None

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

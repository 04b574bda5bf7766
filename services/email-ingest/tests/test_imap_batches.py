"""What a batch of mail costs, counted on a real Dovecot and a real nats-server: IMAP commands
and JetStream look-ups per batch, not per mail; and a batch re-read after a crash between its
seen-set record and its flags publishes nothing again."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import ClassVar

import nats
import pytest

from switchboard.core import bus as core_bus
from switchboard.core import stores
from switchboard.core.acks import AckPublisher
from switchboard.email_ingest.adapters import jetstream
from switchboard.email_ingest.adapters.jetstream import SEEN, THREADS, EmailState
from switchboard.email_ingest.domain import threads
from switchboard.email_ingest.entrypoints import imap
from switchboard.testing.waiting import until
from switchboard.v1 import email_pb2, events_pb2


class CountingClient(imap._Client):
    """The watcher's IMAP client, counting the commands it sends."""

    sent: ClassVar[Counter[str]] = Counter()

    async def uid(self, command: str, *criteria: str):  # type: ignore[override]
        kind = command.upper()
        if kind == "FETCH":
            kind += " BODY" if "BODY" in criteria[-1] else " SIZES"
        CountingClient.sent[kind] += 1
        return await super().uid(command, *criteria)


@contextlib.asynccontextmanager
async def api_requests(nats_url: str) -> AsyncIterator[list[str]]:
    """The subject of every JetStream API request made meanwhile, as the server receives it."""
    spy = await nats.connect(nats_url)
    requests: list[str] = []

    async def seen_request(msg) -> None:
        requests.append(msg.subject)

    await spy.subscribe("$JS.API.>", cb=seen_request)
    try:
        yield requests
        await spy.flush()
    finally:
        await spy.close()


async def test_a_batch_costs_a_bounded_number_of_imap_commands_and_lookups(
    dovecot, make_app, make_config, make_mail, nats_url, monkeypatch
):
    total, batch = 60, 30
    await dovecot.append(
        [
            make_mail(f"Question {i}", f"Body {i}", message_id=f"<count-{i}@example.com>")
            for i in range(total)
        ]
    )
    CountingClient.sent = Counter()
    monkeypatch.setattr(imap, "_Client", CountingClient)
    async with api_requests(nats_url) as requests:
        app = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=batch)
        await until(lambda: app.watchers[0].status.last_uid == total, seconds=60)
    batches = total // batch
    # IMAP: one body FETCH and one STORE per batch, whatever the number of mails in it.
    assert CountingClient.sent["FETCH BODY"] == batches
    assert CountingClient.sent["STORE"] == batches
    assert CountingClient.sent["FETCH SIZES"] <= 3  # one per catch-up pass
    # JetStream: the seen set and the object store are each asked once per batch.
    seen = [s for s in requests if f"KV_{SEEN}" in s and ".GET." in s]
    objects = [s for s in requests if "OBJ_email" in s and ".GET." in s]
    assert seen == [f"$JS.API.DIRECT.GET.KV_{SEEN}"] * batches, seen
    assert objects == ["$JS.API.DIRECT.GET.OBJ_email"] * batches, objects


async def test_replies_in_a_batch_find_their_threads_with_one_lookup(
    dovecot, make_app, make_config, make_mail, nats_url, collector
):
    """Replies to earlier mail (another batch's, already in the thread index) are threaded
    with one thread-index request per batch, not one per reply."""
    first, batch = 30, 10
    await dovecot.append(
        [
            make_mail(f"Order {i}", f"Where is order {i}?", message_id=f"<order-{i}@example.com>")
            for i in range(first)
        ]
    )
    app = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=batch)
    await until(lambda: app.watchers[0].status.last_uid == first, seconds=60)
    await until(lambda: len(collector.of(events_pb2.ContactCreated)) == first)
    original = {e.contact.subject: e.contact for e in collector.of(events_pb2.ContactCreated)}

    async with api_requests(nats_url) as requests:
        await dovecot.append(
            [
                make_mail(
                    f"Re: Order {i}",
                    f"Any news about order {i}?",
                    message_id=f"<reply-{i}@example.com>",
                    **{
                        "In-Reply-To": f"<order-{i}@example.com>",
                        "References": f"<order-{i}@example.com>",
                    },
                )
                for i in range(first)
            ]
        )
        app.watchers[0].wake()
        await until(lambda: app.watchers[0].status.last_uid == 2 * first, seconds=60)
    await until(lambda: len(collector.of(events_pb2.ContactCreated)) == 2 * first)
    replies = [
        e.contact for e in collector.of(events_pb2.ContactCreated) if e.contact.subject[:3] == "Re:"
    ]
    assert len(replies) == first
    for reply in replies:
        # Each reply is in the conversation of the mail it answers.
        assert reply.conversation_id == original[reply.subject[4:]].conversation_id
    threads = [s for s in requests if "KV_email_threads" in s and ".GET." in s]
    assert threads == ["$JS.API.DIRECT.GET.KV_email_threads"] * (first // batch), threads


async def test_survey_answers_in_a_batch_find_their_surveys_with_one_lookup(
    dovecot, make_app, make_config, make_mail, nats_url, collector
):
    """Bare ratings answering surveys (sent earlier, in the thread index) are known as answers
    with the batch's one thread-index request, not one more per rating."""
    answers, batch = 30, 10
    await dovecot.append([make_mail("Hello", "A question", message_id="<first@example.com>")])
    app = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=batch)
    await until(lambda: len(collector.of(events_pb2.ContactCreated)) == 1, seconds=60)
    tenant = collector.of(events_pb2.ContactCreated)[0].meta.tenant
    for i in range(answers):  # what sending each case's survey put in the index
        survey = email_pb2.ThreadEntry(
            tenant=tenant, conversation_id=f"case-C-{i}", case_id=f"case-{i}"
        )
        mid = f"survey-{i}@example.com"
        await app.state.put_threads(
            [threads.key("mid", tenant, mid), threads.key("survey", tenant, mid)], survey
        )

    async with api_requests(nats_url) as requests:
        await dovecot.append(
            [
                make_mail(
                    "Re: How did we do?",
                    "4\n\n-- \nKim",
                    message_id=f"<rating-{i}@example.com>",
                    **{"In-Reply-To": f"<survey-{i}@example.com>"},
                )
                for i in range(answers)
            ]
        )
        app.watchers[0].wake()
        await until(lambda: app.watchers[0].status.last_uid == 1 + answers, seconds=60)
    await until(lambda: len(collector.of(events_pb2.ContactCreated)) == 1 + answers)
    ratings = {
        e.contact.case_id: e.contact.survey_answer
        for e in collector.of(events_pb2.ContactCreated)[1:]
    }
    assert ratings == {f"case-{i}": 4 for i in range(answers)}
    lookups = [s for s in requests if "KV_email_threads" in s and ".GET." in s]
    assert lookups == ["$JS.API.DIRECT.GET.KV_email_threads"] * (answers // batch), lookups


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs."""


class CountingAcks(AckPublisher):
    """The bus's ack publisher (which the seen set, the thread index, the object store and the
    events all write through), counting the acks its callers wait for: one per `publish`, one
    per `publish_all` batch. With `kill_after` (a subject prefix), the first batch written to
    it is stored and then the process dies."""

    waits: ClassVar[Counter[str]] = Counter()
    kill_after: ClassVar[str] = ""

    @staticmethod
    def _kind(subject: str) -> str:
        parts = subject.split(".")  # $KV.<bucket>.<key>, $O.<bucket>.<C|M>.<name>, contact.…
        return ".".join(parts[:2] if parts[0] == "$KV" else parts[:3])

    async def publish(self, subject, data, headers=None, timeout=None):  # type: ignore[override]
        CountingAcks.waits[self._kind(subject)] += 1
        return await super().publish(subject, data, headers, timeout)

    async def publish_all(self, messages, timeout=None):  # type: ignore[override]
        kind = self._kind(messages[0][0]) if messages else ""
        CountingAcks.waits[kind] += 1
        acks = await super().publish_all(messages, timeout)
        if CountingAcks.kill_after and kind.startswith(CountingAcks.kill_after):
            CountingAcks.kill_after = ""
            raise Killed()
        return acks


async def test_a_batch_waits_for_a_bounded_number_of_jetstream_acks(
    dovecot, make_app, make_config, make_mail, monkeypatch
):
    total, batch = 60, 30
    await dovecot.append(
        [
            make_mail(f"Question {i}", f"Body {i}", message_id=f"<acks-{i}@example.com>")
            for i in range(total)
        ]
    )
    CountingAcks.waits, CountingAcks.kill_after = Counter(), ""
    monkeypatch.setattr(core_bus, "AckPublisher", CountingAcks)
    app = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=batch)
    await until(lambda: app.watchers[0].status.last_uid == total, seconds=60)
    batches = total // batch
    # About nine writes per mail (its two events, its raw message's chunk and metadata, its
    # thread-index keys, its seen-set entry), awaited as one batch per kind of write: the
    # event loop keeps one future and one deadline per batch, not one per write.
    assert CountingAcks.waits["$O.email.C"] == batches, CountingAcks.waits  # object chunks
    assert CountingAcks.waits["$O.email.M"] == batches, CountingAcks.waits  # their metadata
    assert CountingAcks.waits["$KV.email_threads"] == batches, CountingAcks.waits
    assert CountingAcks.waits["$KV.email_seen"] == batches, CountingAcks.waits
    assert CountingAcks.waits["contact.demo.email"] == batches, CountingAcks.waits
    assert sum(CountingAcks.waits.values()) == 5 * batches, CountingAcks.waits


@pytest.mark.parametrize(
    "kill_after", ["$O.email.C", "$O.email.M", "$KV.email_threads", "$KV.email_seen"]
)
async def test_killed_after_any_batched_write_then_each_mail_exactly_once(
    kill_after, bus, dovecot, make_app, make_config, make_mail, collector, monkeypatch
):
    await dovecot.append(
        [
            make_mail(f"Order {i}", f"Body {i}", message_id=f"<batched-{i}@example.com>")
            for i in range(25)
        ]
    )
    CountingAcks.waits, CountingAcks.kill_after = Counter(), kill_after
    monkeypatch.setattr(core_bus, "AckPublisher", CountingAcks)
    first = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=10)
    task = first.watchers[0].task
    await until(lambda: task.done())
    assert isinstance(task.exception(), Killed)
    await first.stop()
    # Died with its first batch's write stored: nothing flagged, nothing checkpointed.
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == []
    checkpoint = await (await EmailState.open(bus.js)).checkpoint("support")
    assert checkpoint is None or checkpoint.last_uid == 0

    second = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=10)
    await until(lambda: second.watchers[0].status.last_uid == 25)
    await asyncio.sleep(0.3)  # let any stray duplicate arrive before counting
    subjects = [e.contact.subject for e in collector.of(events_pb2.ContactCreated)]
    assert sorted(subjects) == sorted(f"Order {i}" for i in range(25))
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == list(range(1, 26))
    # Every mail's raw message is stored and readable.
    for received in collector.of(email_pb2.EmailReceived):
        assert await second.objects.get(received.raw.object_name)


class CountingPublisher:
    """Wraps the bus the notifier publishes through, counting the contacts it publishes."""

    created: ClassVar[list[str]] = []

    def __init__(self, bus):
        self.bus = bus

    def __getattr__(self, name):
        return getattr(self.bus, name)

    async def publish_many(self, batch):
        CountingPublisher.created += [
            e.contact.subject for e in batch if isinstance(e, events_pb2.ContactCreated)
        ]
        return await self.bus.publish_many(batch)


async def test_killed_after_the_seen_record_before_the_flags_publishes_nothing_twice(
    dovecot, make_app, make_config, make_mail, collector, monkeypatch
):
    await dovecot.append(
        [
            make_mail(f"Order {i}", f"Body {i}", message_id=f"<flagless-{i}@example.com>")
            for i in range(25)
        ]
    )
    acknowledge = imap.MailboxWatcher._acknowledge

    async def dies_before_flagging(self, client, done, quarantined):
        raise Killed()

    monkeypatch.setattr(imap.MailboxWatcher, "_acknowledge", dies_before_flagging)
    first = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=10)
    task = first.watchers[0].task
    await until(lambda: task.done())
    assert isinstance(task.exception(), Killed)
    await first.stop()
    # The first batch is in JetStream and in the seen set; nothing is flagged or checkpointed.
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == []
    assert len(collector.of(events_pb2.ContactCreated)) == 10

    monkeypatch.setattr(imap.MailboxWatcher, "_acknowledge", acknowledge)
    CountingPublisher.created = []
    second = await make_app(make_config(dovecot), CountingPublisher, EMAIL_FETCH_BATCH=10)
    await until(lambda: second.watchers[0].status.last_uid == 25)
    # The re-read batch is recognised in the seen set: not one of its mails is published again
    # (not even as a duplicate JetStream would drop).
    assert sorted(CountingPublisher.created) == sorted(f"Order {i}" for i in range(10, 25))
    await asyncio.sleep(0.3)  # let any stray duplicate arrive before counting
    subjects = [e.contact.subject for e in collector.of(events_pb2.ContactCreated)]
    assert sorted(subjects) == sorted(f"Order {i}" for i in range(25))
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == list(range(1, 26))


async def without_direct_gets(bus, bucket: str) -> jetstream.LastValues:
    """A bucket whose stream answers no direct gets (an older server's or operator's choice),
    and a batch lookup on it: the batch get is refused, and the keys are looked up one at a
    time with the same answers."""
    info = await bus.js.stream_info(f"KV_{bucket}")
    info.config.allow_direct = False
    await bus.js.update_stream(info.config)
    return jetstream.LastValues(bus.nc, f"KV_{bucket}", timeout=2)


@pytest.mark.parametrize("direct", [True, False], ids=["batch-get", "one-at-a-time"])
async def test_seen_lookups_of_a_batch_read_present_missing_and_deleted_keys(bus, direct):
    state = await EmailState.open(bus.js)
    if not direct:
        state.seen_lookup = await without_direct_gets(bus, SEEN)
    await state.seen.put("present", b"contact-1")
    await state.seen.put("quarantined", b"q:mail-2")
    await state.seen.put("gone", b"contact-3")
    await state.seen.delete("gone")
    keys = ["missing", "present", "gone", "quarantined"] + [f"k{i}" for i in range(300)]
    assert await state.seen_ids(keys) == ["", "contact-1", "", "q:mail-2"] + [""] * 300
    assert (state.seen_lookup is not None and state.seen_lookup.available) is direct
    assert await stores.value(state.seen, "present") == b"contact-1"


@pytest.mark.parametrize("direct", [True, False], ids=["batch-get", "one-at-a-time"])
async def test_thread_lookups_of_a_batch_read_present_missing_and_purged_keys(bus, direct):
    state = await EmailState.open(bus.js)
    if not direct:
        state.threads_lookup = await without_direct_gets(bus, THREADS)
    entry = email_pb2.ThreadEntry(tenant="demo", conversation_id="conv-1", contact_id="c-1")
    await state.put_threads(["present", "gone", "erased"], entry)
    await state.threads.delete("gone")
    await state.threads.purge("erased")  # as erasure does
    keys = ["missing", "present", "gone", "erased"] + [f"k{i}" for i in range(300)]
    found = await state.threads_of(keys)
    assert list(found) == keys
    assert found["present"] is not None and found["present"].conversation_id == "conv-1"
    assert [k for k, v in found.items() if v is not None] == ["present"]
    assert (state.threads_lookup is not None and state.threads_lookup.available) is direct

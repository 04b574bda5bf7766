"""IMAP ingest against a real Dovecot started on a free port."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.core import grpc as sb_grpc
from switchboard.core.acks import AckUnknown
from switchboard.core.auth import mint
from switchboard.email_ingest.adapters.jetstream import EmailState
from switchboard.testing.waiting import until
from switchboard.v1 import email_pb2, email_pb2_grpc, events_pb2


async def test_idle_delivers_new_mail_and_is_renewed(
    dovecot, make_app, make_config, make_mail, collector, bus
):
    app = await make_app(make_config(dovecot), EMAIL_IDLE_RENEW_SECONDS=0.3)
    watcher = app.watchers[0]
    # IDLE is re-issued on schedule, and mail still arrives afterwards.
    # Each renewal is followed by a catch-up sync (FETCHING), then IDLE again.
    await until(
        lambda: (
            watcher.status.idle_renewals >= 2
            and watcher.status.state == email_pb2.MAILBOX_STATE_IDLE
        )
    )
    await dovecot.append(
        [
            make_mail(
                "Printer error", "The printer shows error 42.", message_id="<idle-1@example.com>"
            )
        ]
    )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 1)
    created = collector.of(events_pb2.ContactCreated)[0]
    assert created.contact.subject == "Printer error"
    assert created.contact.content[0].text == "The printer shows error 42."
    assert created.contact.identities[0].value == "customer@example.com"
    assert created.contact.queue == "email" and "technical" in created.contact.skills
    assert created.contact.language == "en"
    received = collector.of(email_pb2.EmailReceived)[0]
    assert received.message_id == "idle-1@example.com" and received.origin.uid == 1
    # Flagged on the server, and the checkpoint moved, only after the events were stored.
    await until(lambda: app.watchers[0].status.last_uid == 1)
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == [1]
    checkpoint = await EmailState(*(await _kv(bus))).checkpoint("support")
    assert checkpoint is not None and checkpoint.last_uid == 1 and checkpoint.uidvalidity > 0


async def test_a_mailbox_stopped_in_idle_leaves_no_wait_running(dovecot, make_app, make_config):
    """Stopping the service while a mailbox is in IDLE ends its wait for the server's push too: a
    wait left running would time out later with nobody to take its outcome ("Task exception was
    never retrieved")."""
    app = await make_app(make_config(dovecot), EMAIL_IDLE_RENEW_SECONDS=600)
    await until(lambda: app.watchers[0].status.state == email_pb2.MAILBOX_STATE_IDLE)
    await asyncio.sleep(0.2)  # in the wait for the server's push

    def waiting() -> list[asyncio.Task[Any]]:
        return [
            t
            for t in asyncio.all_tasks()
            if not t.done() and "wait_server_push" in repr(t.get_coro())
        ]

    assert waiting()
    await asyncio.wait_for(app.stop(), 30)
    await asyncio.sleep(0)
    assert waiting() == []


async def _kv(bus):
    state = await EmailState.open(bus.js)
    return state.checkpoints, state.threads, state.seen, state.sent


class Killed(BaseException):
    """Stands for the process dying: nothing after it runs (no flag, no checkpoint)."""


class PassThrough:
    """Wraps the bus the notifier publishes through: what a test does not override goes to it."""

    def __init__(self, bus):
        self.bus = bus

    def __getattr__(self, name):
        return getattr(self.bus, name)


def crashing(after_publish: bool, on_call: int):
    class Wrapper(PassThrough):
        def __init__(self, bus):
            super().__init__(bus)
            self.calls = 0

        async def publish_many(self, batch):
            self.calls += 1
            if self.calls == on_call:
                if after_publish:
                    await self.bus.publish_many(batch)
                raise Killed()
            return await self.bus.publish_many(batch)

    return Wrapper


@pytest.mark.parametrize(
    "after_publish", [False, True], ids=["between-fetch-and-publish", "between-publish-and-flag"]
)
async def test_killed_mid_batch_then_each_mail_exactly_once(
    after_publish, bus, dovecot, make_app, make_config, make_mail, collector
):
    await dovecot.append(
        [
            make_mail(f"Question {i}", f"Body {i}", message_id=f"<kill-{i}@example.com>")
            for i in range(20)
        ]
    )
    first = await make_app(
        make_config(dovecot), crashing(after_publish, on_call=2), EMAIL_FETCH_BATCH=6
    )
    task = first.watchers[0].task
    await until(lambda: task.done())
    assert isinstance(task.exception(), Killed)
    await first.stop()
    published = len(collector.of(events_pb2.ContactCreated))
    assert published == (12 if after_publish else 6)
    # The crashed batch was never flagged nor checkpointed, nor the one fetched ahead while it
    # was published.
    assert len(await dovecot.uids(criteria="KEYWORD $Switchboard")) == 6
    checkpoint = await EmailState(*(await _kv(bus))).checkpoint("support")
    assert checkpoint is not None and checkpoint.last_uid == 6

    second = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=6)
    await until(lambda: second.watchers[0].status.last_uid == 20)
    await asyncio.sleep(0.3)  # let any stray duplicate arrive before counting
    subjects = [e.contact.subject for e in collector.of(events_pb2.ContactCreated)]
    assert sorted(subjects) == sorted(f"Question {i}" for i in range(20))
    assert len(await dovecot.uids(criteria="KEYWORD $Switchboard")) == 20


async def test_500_mails_arriving_while_down_are_all_ingested(
    dovecot, make_app, make_config, make_mail, collector
):
    await dovecot.append(
        [
            make_mail(f"Order {i}", f"Where is order {i}?", message_id=f"<down-{i}@example.com>")
            for i in range(500)
        ]
    )
    app = await make_app(make_config(dovecot))
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 500, timeout=90)
    assert len({e.contact.contact_id for e in collector.of(events_pb2.ContactCreated)}) == 500
    await until(lambda: app.watchers[0].status.last_uid == 500)
    assert len(await dovecot.uids(criteria="KEYWORD $Switchboard")) == 500


async def test_uidvalidity_reset_resyncs_without_duplicates(
    dovecot, make_app, make_config, make_mail, collector, bus
):
    await dovecot.append(
        [make_mail(f"Before {i}", "text", message_id=f"<before-{i}@example.com>") for i in range(5)]
    )
    app = await make_app(make_config(dovecot, after_ingest="none"))
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 5)
    await until(lambda: app.watchers[0].status.last_uid == 5)
    old_validity = app.watchers[0].status.uidvalidity
    await app.stop()

    await asyncio.to_thread(dovecot.reset_uidvalidity)
    await dovecot.append(
        [make_mail(f"After {i}", "text", message_id=f"<after-{i}@example.com>") for i in range(2)]
    )
    app2 = await make_app(make_config(dovecot, after_ingest="none"))
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) >= 7)
    await until(lambda: app2.watchers[0].status.last_uid == 7)
    await asyncio.sleep(0.3)
    subjects = sorted(e.contact.subject for e in collector.of(events_pb2.ContactCreated))
    assert subjects == sorted([f"Before {i}" for i in range(5)] + [f"After {i}" for i in range(2)])
    state = await EmailState.open(bus.js)
    checkpoint = await state.checkpoint("support")
    assert (
        checkpoint.uidvalidity != old_validity and checkpoint.previous_uidvalidity == old_validity
    )
    assert checkpoint.last_uid == 7


async def test_reply_threads_into_its_case(dovecot, make_app, make_config, make_mail, collector):
    await make_app(make_config(dovecot))
    await dovecot.append(
        [
            make_mail(
                "My invoice is wrong [#C-7K3M9Q]",
                "Please fix it.",
                message_id="<first@example.com>",
            )
        ]
    )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 1)
    first = collector.of(events_pb2.ContactCreated)[0].contact
    assert first.case_id == "C-7K3M9Q"
    # A reply with a changed subject still threads by its headers.
    await dovecot.append(
        [
            make_mail(
                "Another thing entirely",
                "Also my address changed.\n\nOn Mon, 1 Jan 2024, Support wrote:\n> Please fix it.",
                message_id="<second@example.com>",
                In_Reply_To="<first@example.com>",
                References="<first@example.com>",
            )
        ]
    )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 2)
    second = collector.of(events_pb2.ContactCreated)[1].contact
    received = collector.of(email_pb2.EmailReceived)[1]
    assert second.conversation_id == first.conversation_id and second.case_id == "C-7K3M9Q"
    assert received.threaded_by == "in-reply-to"
    assert second.content[0].text == "Also my address changed."
    assert "> Please fix it." in received.quoted
    # A mail to the plus-address joins the case with no threading headers at all.
    await dovecot.append(
        [
            make_mail(
                "new topic",
                "hi again",
                to="support+C-7K3M9Q@demo.example",
                message_id="<third@example.com>",
            )
        ]
    )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 3)
    third = collector.of(events_pb2.ContactCreated)[2].contact
    assert third.case_id == "C-7K3M9Q" and third.conversation_id == first.conversation_id
    assert collector.of(email_pb2.EmailReceived)[2].threaded_by == "plus-address"
    # Last resort: same sender, same normalised subject, presented as a reply.
    await dovecot.append(
        [make_mail("RE: 回复: My invoice is wrong", "one more", message_id="<fourth@example.com>")]
    )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 4)
    fourth = collector.of(events_pb2.ContactCreated)[3].contact
    assert fourth.conversation_id == first.conversation_id
    assert collector.of(email_pb2.EmailReceived)[3].threaded_by == "subject"


async def test_oversize_mail_over_imap_is_quarantined_with_its_reason(
    dovecot, make_app, make_config, make_mail, collector
):
    big = make_mail("Scan", "x" * 200_000, message_id="<big@example.com>")
    await dovecot.append([big, make_mail("Small", "fine", message_id="<small@example.com>")])
    app = await make_app(make_config(dovecot), EMAIL_MAX_MESSAGE_BYTES=100_000)
    await collector.wait(
        lambda c: c.of(email_pb2.EmailQuarantined) and c.of(events_pb2.ContactCreated)
    )
    q = collector.of(email_pb2.EmailQuarantined)[0]
    assert f"message of {len(big)} bytes exceeds the limit of 100000 bytes" in q.reason
    assert q.message_id == "big@example.com" and q.origin.uid == 1 and q.size_bytes == len(big)
    assert [e.contact.subject for e in collector.of(events_pb2.ContactCreated)] == ["Small"]
    # The original stays on the server, marked, not taken as done.
    await until(lambda: app.watchers[0].status.last_uid == 2)
    assert await dovecot.uids(criteria="KEYWORD $SwitchboardQuarantined") == [1]
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == [2]


async def test_stalled_mailbox_turns_health_not_serving_and_says_why(
    dovecot, make_app, make_config, make_mail, collector
):
    app = await make_app(
        make_config(dovecot), EMAIL_STALL_SECONDS=1.0, EMAIL_IDLE_RENEW_SECONDS=0.3
    )
    await until(lambda: app.watchers[0].status.state == email_pb2.MAILBOX_STATE_IDLE)
    target = f"127.0.0.1:{app.grpc_port}"

    async def health() -> str:
        return await sb_grpc.check_health(target)

    await until(lambda: app.readiness is not None and app.readiness.serving)
    assert await health() == "SERVING"
    await asyncio.to_thread(dovecot.kill)
    await until(lambda: app.readiness is not None and not app.readiness.serving, seconds=20)
    assert await health() == "NOT_SERVING"
    # It keeps trying (with back-off), and says what the latest attempt met.
    await until(lambda: "refused" in app.watchers[0].snapshot().reason, seconds=20)
    token = mint(app.settings.auth_secret, "demo", "ops", ["admin"])
    async with sb_grpc.channel(target, token) as ch:
        reply = await email_pb2_grpc.EmailServiceStub(ch).ListMailboxes(
            email_pb2.ListMailboxesRequest()
        )
    assert not reply.serving
    status = reply.mailboxes[0]
    assert not status.healthy and status.state == email_pb2.MAILBOX_STATE_STALLED
    assert "support" in status.reason and "stalled" in status.reason and "refused" in status.reason
    # The server comes back: the watcher reconnects, health recovers, and mail flows again.
    await asyncio.to_thread(dovecot.start)
    await until(lambda: app.readiness is not None and app.readiness.serving, seconds=20)
    await dovecot.append([make_mail("Back", "after the outage")])
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 1)


async def test_polling_when_the_server_has_no_idle(make_app, make_config, make_mail, collector):
    from switchboard.email_ingest.devtools.dovecot import Dovecot

    server = Dovecot(extra_config="imap_capability = IMAP4rev1 LITERAL+ UIDPLUS MOVE").start()
    try:
        app = await make_app(make_config(server))
        await until(lambda: app.watchers[0].status.state == email_pb2.MAILBOX_STATE_POLLING)
        await server.append([make_mail("Polled", "found by polling")])
        await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 1)
        assert "IDLE" not in app.watchers[0]._client.protocol.capabilities
        assert app.watchers[0].status.idle_renewals == 0
    finally:
        server.close()


async def test_a_reply_fetched_in_the_same_batch_as_its_original_threads_by_headers(
    dovecot, make_app, make_config, make_mail, collector
):
    await dovecot.append(
        [
            make_mail("주문 문의", "주문이 안 왔어요.", message_id="<orig-1@example.kr>"),
            make_mail(
                "전혀 다른 제목",  # a changed subject: only the headers can thread it
                "추가로 여쭤봅니다.",
                message_id="<reply-1@example.kr>",
                In_Reply_To="<orig-1@example.kr>",
                References="<orig-1@example.kr>",
            ),
        ]
    )
    await make_app(make_config(dovecot))  # both arrive in the first fetch
    await collector.wait(lambda c: len(c.of(email_pb2.EmailReceived)) == 2)
    original, reply = collector.of(email_pb2.EmailReceived)
    assert original.message_id == "orig-1@example.kr"
    assert reply.threaded_by == "in-reply-to"
    assert reply.conversation_id == original.conversation_id


async def test_mail_announced_during_another_command_is_fetched_without_waiting_for_idle(
    dovecot, make_app, make_config, make_mail, collector, monkeypatch
):
    """Dovecot announces new mail in the response of whatever command runs next. aioimaplib drops
    an untagged EXISTS that comes with a FETCH (and IDLE will not repeat it), so the watcher counts
    EXISTS itself: a mail announced that way is fetched at once, not at the next IDLE renewal."""
    from switchboard.email_ingest.entrypoints.imap import MailboxWatcher

    original = MailboxWatcher.sync
    passes = 0

    async def sync(self: MailboxWatcher, client: Any, uidvalidity: int) -> int:
        nonlocal passes
        passes += 1
        new = await original(self, client, uidvalidity)
        if passes == 1:
            await dovecot.append([make_mail("Arrived mid-sync", message_id="<mid@example.com>")])
            response = await client.uid("fetch", "1:*", "(UID)")
            assert not any(b"EXISTS" in bytes(line) for line in response.lines)  # dropped
        return new

    monkeypatch.setattr(MailboxWatcher, "sync", sync)
    await make_app(make_config(dovecot), EMAIL_IDLE_RENEW_SECONDS=600)
    await collector.wait(lambda c: c.of(events_pb2.ContactCreated), timeout=20)
    assert collector.of(email_pb2.EmailReceived)[0].message_id == "mid@example.com"
    assert passes >= 2


async def test_the_same_mail_twice_in_one_batch_is_one_contact(
    dovecot, make_app, make_config, make_mail, collector
):
    """A mail delivered twice (a forwarding loop, a client's retry) is one contact; both copies
    are marked done."""
    twice = make_mail("Refund", "Please refund order 7.", message_id="<twice@example.com>")
    other = make_mail("Invoice", "The invoice is wrong.", message_id="<other@example.com>")
    await dovecot.append([twice, other, twice])
    app = await make_app(make_config(dovecot))
    await until(lambda: app.watchers[0].status.last_uid == 3)
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == [1, 2, 3]
    await collector.wait(lambda c: len(c.of(email_pb2.EmailReceived)) >= 2)
    created = collector.of(events_pb2.ContactCreated)
    assert sorted(e.contact.subject for e in created) == ["Invoice", "Refund"]
    assert [e.message_id for e in collector.of(email_pb2.EmailReceived)].count(
        "twice@example.com"
    ) == 1
    assert app.watchers[0].status.ingested == 2


async def test_move_after_ingest_takes_mail_out_of_the_inbox_only_once_stored(
    dovecot, make_app, make_config, make_mail, collector
):
    await dovecot.append(
        [
            make_mail(f"Move {i}", f"Mail {i}", message_id=f"<move-{i}@example.com>")
            for i in range(3)
        ]
    )
    app = await make_app(make_config(dovecot, after_ingest="move", move_to="Done"))
    await until(lambda: app.watchers[0].status.last_uid == 3)
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 3)
    assert await dovecot.uids() == []
    assert len(await dovecot.uids(folder="Done")) == 3
    # A new mail after the move is still picked up (the checkpoint, not the folder, says where).
    await dovecot.append([make_mail("Later", "One more", message_id="<move-later@example.com>")])
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 4)
    await until(lambda: app.watchers[0].status.last_uid == 4)
    assert len(await dovecot.uids(folder="Done")) == 4


async def test_a_malformed_mail_in_the_middle_of_a_batch_does_not_stop_the_others(
    dovecot, make_app, make_config, make_mail, collector
):
    good = [
        make_mail(f"Ticket {i}", f"Body {i}", message_id=f"<mid-{i}@example.com>") for i in range(4)
    ]
    junk = b"X-Broken: \xff\xfe\x00\r\nContent-Type: multipart/mixed\r\n\r\n"  # no sender, no text
    await dovecot.append([good[0], good[1], junk, good[2], good[3]])
    app = await make_app(make_config(dovecot), EMAIL_FETCH_BATCH=5)
    await collector.wait(
        lambda c: len(c.of(events_pb2.ContactCreated)) == 4 and c.of(email_pb2.EmailQuarantined)
    )
    await until(lambda: app.watchers[0].status.last_uid == 5)
    subjects = sorted(e.contact.subject for e in collector.of(events_pb2.ContactCreated))
    assert subjects == [f"Ticket {i}" for i in range(4)]
    (quarantined,) = collector.of(email_pb2.EmailQuarantined)
    assert quarantined.origin.uid == 3 and quarantined.reason
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == [1, 2, 4, 5]
    assert await dovecot.uids(criteria="KEYWORD $SwitchboardQuarantined") == [3]


def losing_one_ack(subject: str):
    """A publisher whose first batch holding `subject` is stored but one ack never arrives."""

    class Wrapper(PassThrough):
        def __init__(self, bus):
            super().__init__(bus)
            self.failed: list[list[str]] = []  # the subjects of each batch that failed

        async def publish_many(self, batch):
            acks = await self.bus.publish_many(batch)
            subjects = [
                e.contact.subject for e in batch if isinstance(e, events_pb2.ContactCreated)
            ]
            if subject in subjects and not self.failed:
                self.failed.append(subjects)
                raise AckUnknown(f"contact.{subject}", 0.0)
            return acks

    return Wrapper


async def test_a_batch_with_a_lost_ack_is_not_acknowledged_at_the_source_and_is_fetched_again(
    dovecot, make_app, make_config, make_mail, collector
):
    await dovecot.append(
        [
            make_mail(f"Order {i}", f"Body {i}", message_id=f"<ack-{i}@example.com>")
            for i in range(12)
        ]
    )
    flagged_before_retry: list[list[int]] = []
    app = await make_app(make_config(dovecot), losing_one_ack("Order 7"), EMAIL_FETCH_BATCH=4)
    wrapper = app.notifier.bus

    async def watch_flags() -> None:
        await until(lambda: wrapper.failed)
        flagged_before_retry.append(await dovecot.uids(criteria="KEYWORD $Switchboard"))

    watching = asyncio.create_task(watch_flags())
    await until(lambda: app.watchers[0].status.last_uid == 12, seconds=60)
    await watching
    assert wrapper.failed == [["Order 4", "Order 5", "Order 6", "Order 7"]]
    # When the ack was lost, only the batch before it was flagged; that batch's mails were not.
    assert flagged_before_retry[0] == [1, 2, 3, 4]
    assert app.watchers[0].status.failures == 0 and app.watchers[0].status.reason == ""
    await asyncio.sleep(0.3)  # let any stray duplicate arrive before counting
    subjects = [e.contact.subject for e in collector.of(events_pb2.ContactCreated)]
    assert sorted(subjects) == sorted(f"Order {i}" for i in range(12))
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == list(range(1, 13))

"""Mailbox leases in one process, against a real Dovecot and nats-server: a watcher fenced out
by another replica's lease stops before it fetches; a replica hands mailboxes over to one that
joins; a replica that stops gives its leases up at once. Rounds of the lease loop are run by
the test (`leases.balance()`), with a TTL long enough that nothing expires meanwhile."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from switchboard.core import stores
from switchboard.core.bus import Bus
from switchboard.email_ingest import config as email_config
from switchboard.email_ingest.devtools.dovecot import Dovecot
from switchboard.email_ingest.leasing import BUCKET, lease_key
from switchboard.testing.secured_nats import SecuredNats
from switchboard.testing.streams import EventCollector
from switchboard.testing.waiting import eventually, until
from switchboard.v1 import email_pb2, events_pb2

from .conftest import BOXES, four_mailboxes, lease_holders

LONG_TTL = 60.0  # the lease loop's own rounds (every 20s) never come during a test


async def test_a_watcher_fenced_out_stops_before_fetching_and_reads_again_once_the_lease_is_free(
    dovecot: Dovecot,
    make_app: Callable[..., Any],
    make_config: Callable[..., email_config.EmailConfig],
    make_mail: Callable[..., bytes],
    collector: EventCollector,
    bus: Bus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = await make_app(
        make_config(dovecot), SWITCHBOARD_REPLICA_ID="replica-a", EMAIL_LEASE_TTL_SECONDS=LONG_TTL
    )
    watcher = app.watchers[0]
    await until(lambda: watcher.status.state == email_pb2.MAILBOX_STATE_IDLE)
    key = lease_key("demo", "support")
    kv = await bus.js.key_value(BUCKET)
    assert await stores.value(kv, key) == b"replica-a"

    # Another replica takes the lease (as it would once this one's renewals had stalled past
    # the TTL); this replica has not renewed since, so only the fence can tell it.
    await kv.put(key, b"replica-b")
    caplog.set_level(logging.WARNING, "switchboard.email_ingest")
    await dovecot.append([make_mail("Fenced", message_id="<fenced@example.com>")])
    assert watcher.task is not None
    task = watcher.task
    await until(task.done, "the watcher stopped")
    assert "is no longer ours; no longer reading it" in caplog.text
    assert not watcher.reading and watcher.snapshot().healthy
    # Nothing was fetched, published, flagged or checkpointed by the replica fenced out.
    assert collector.of(events_pb2.ContactCreated) == []
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == []
    assert (await app.state.checkpoint("support")).last_uid == 0

    # The next round finds the lease lost, and the mailbox read by replica-b.
    await app.leases.balance()
    assert app.leases.held == {}
    status = watcher.snapshot()
    assert status.state == email_pb2.MAILBOX_STATE_STANDBY and status.replica == "replica-b"

    # Once replica-b lets go, replica-a takes the lease again and reads the mail, once.
    await kv.delete(key)
    await app.leases.balance()
    assert list(app.leases.held) == [key] and watcher.reading
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 1)
    await until(lambda: watcher.status.last_uid == 1)
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == [1]
    assert [e.message_id for e in collector.of(email_pb2.EmailReceived)] == ["fenced@example.com"]


async def test_mailboxes_are_handed_over_to_a_replica_that_joins_and_given_up_on_stop(
    four_boxes: Dovecot,
    make_app: Callable[..., Any],
    make_mail: Callable[..., bytes],
    collector: EventCollector,
    bus: Bus,
) -> None:
    ttl = {"EMAIL_LEASE_TTL_SECONDS": LONG_TTL}
    a = await make_app(
        email_config.parse(four_mailboxes(four_boxes)), SWITCHBOARD_REPLICA_ID="replica-a", **ttl
    )
    assert await lease_holders(bus) == dict.fromkeys(BOXES, "replica-a")  # alone: it reads all four

    b = await make_app(
        email_config.parse(four_mailboxes(four_boxes)), SWITCHBOARD_REPLICA_ID="replica-b", **ttl
    )
    assert b.leases.held == {}  # its share is still replica-a's
    assert {w.snapshot().replica for w in b.watchers} == {"replica-a"}
    await a.leases.balance()  # replica-a sees replica-b's heartbeat: it hands over b's share
    handed = {box for box, holder in (await lease_holders(bus)).items() if holder == "replica-a"}
    assert len(handed) == 2
    await b.leases.balance()
    holders = await lease_holders(bus)
    assert sorted(holders.values()) == ["replica-a"] * 2 + ["replica-b"] * 2
    assert {w.mailbox.name for w in a.watchers if w.reading} == handed
    assert {w.mailbox.name for w in b.watchers if w.reading} == set(BOXES) - handed

    for box in BOXES:
        await four_boxes.append(
            [make_mail(f"{box} {i}", message_id=f"<{box}-{i}@example.com>") for i in range(2)],
            user=box,
        )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 8)

    # Stopping, replica-a gives its leases up: replica-b takes them on its next round, not
    # after the TTL.
    await a.stop()
    assert set((await lease_holders(bus)).values()) == {"replica-b"}
    await b.leases.balance()
    assert await lease_holders(bus) == dict.fromkeys(BOXES, "replica-b")
    for box in BOXES:
        await four_boxes.append(
            [make_mail(f"{box} late", message_id=f"<{box}-late@example.com>")], user=box
        )
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 12)

    async def all_read() -> bool:
        flagged = [await four_boxes.uids(user=b, criteria="KEYWORD $Switchboard") for b in BOXES]
        return flagged == [[1, 2, 3]] * len(BOXES)

    await eventually(all_read, "every mail flagged")
    ids = [e.message_id for e in collector.of(email_pb2.EmailReceived)]
    assert len(ids) == len(set(ids)) == 12


async def test_the_leases_work_under_email_ingests_own_nats_user(
    dovecot: Dovecot,
    make_app: Callable[..., Any],
    make_config: Callable[..., email_config.EmailConfig],
    secured_nats: SecuredNats,
) -> None:
    """The bucket email_leases is in email-ingest's grant: heartbeat, listing, taking, renewing
    and releasing draw no permission violation."""
    app = await make_app(
        make_config(dovecot),
        **secured_nats.env("email-ingest"),
        EMAIL_LEASE_TTL_SECONDS=LONG_TTL,
    )
    assert list(app.leases.held) == [lease_key("demo", "support")]
    await app.leases.balance()
    assert app.watchers[0].reading
    await app.stop()  # releases the lease and the heartbeat
    assert secured_nats.violations() == []


async def test_a_watcher_that_stopped_for_a_stale_lease_reads_again_once_the_lease_is_renewed(
    dovecot: Dovecot,
    make_app: Callable[..., Any],
    make_config: Callable[..., email_config.EmailConfig],
    make_mail: Callable[..., bytes],
    collector: EventCollector,
) -> None:
    app = await make_app(
        make_config(dovecot), SWITCHBOARD_REPLICA_ID="replica-a", EMAIL_LEASE_TTL_SECONDS=LONG_TTL
    )
    watcher = app.watchers[0]
    await until(lambda: watcher.status.state == email_pb2.MAILBOX_STATE_IDLE)
    assert watcher.lease is not None
    watcher.lease.written_at = 0.0  # as if its renewals had stalled past the TTL
    await dovecot.append([make_mail("Stale", message_id="<stale@example.com>")])
    assert watcher.task is not None
    await until(watcher.task.done, "the watcher stopped")
    assert not watcher.reading and collector.of(events_pb2.ContactCreated) == []

    await app.leases.balance()  # the renewal succeeds: nobody took the lease meanwhile
    assert watcher.reading
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 1)
    await until(lambda: watcher.status.last_uid == 1)
    assert await dovecot.uids(criteria="KEYWORD $Switchboard") == [1]

"""A fetched batch that a case service committed and was killed (SIGKILL) before acknowledging is
redelivered whole to the next one, and changes nothing: the same rows, audit entries, SLA timers
and outbox events, and each case event published once.

The service runs as a real process connected through a proxy that withholds its acks
(switchboard.testing.nats_proxy): it commits the batch, its acks never reach the server, and it
is killed once the commit is in the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.js import api as js_api
from sqlalchemy import select

from switchboard.case.adapters import database
from switchboard.case.adapters.orm import Base, OutboxEvent, ProcessedEvent
from switchboard.case.knowledge import orm as _kb_orm  # noqa: F401  (registers its tables)
from switchboard.case.reports import orm as _reports_orm  # noqa: F401  (registers its tables)
from switchboard.core import deadletter, events
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.nats_proxy import NatsProxy
from switchboard.testing.processes import ServiceProcess
from switchboard.v1 import contact_pb2, events_pb2

CHAT = contact_pb2.CHANNEL_CHAT
ACK_WAIT = 4.0
CONTACTS = 6
POLICY = """
sla_policies:
  - name: acme-chat
    tenant: acme
    first_response: 1h
    next_response: 2h
    resolution: 1d
    escalation:
      - {at: 75, kind: functional, level: second_line, actions: [event]}
"""


def case_env(policy: Path) -> dict[str, str]:
    return {
        "CASE_CONSUMER_ACK_WAIT_SECONDS": str(ACK_WAIT),
        "CASE_POLICY_FILE": str(policy),
        "CASE_SCHEDULER_INTERVAL_SECONDS": "3600",
        "SWITCHBOARD_AUTH_SECRET": "case-redelivery-secret",
    }


def meta() -> Any:
    return events.new_meta("acme", CHAT, "test")


def batch() -> list[Any]:
    """Contacts of three customers (so contacts join open cases), each queued, assigned,
    answered by the agent, answered by the customer, and ended."""
    out: list[Any] = []
    for n in range(CONTACTS):
        cid = f"chat-{n}"
        out.append(
            events_pb2.ContactCreated(
                meta=meta(),
                contact=contact_pb2.Contact(
                    contact_id=cid,
                    tenant="acme",
                    channel=CHAT,
                    identities=[
                        contact_pb2.CustomerIdentity(
                            kind=contact_pb2.IDENTITY_KIND_EMAIL, value=f"c{n % 3}@example.com"
                        )
                    ],
                    content=[contact_pb2.ContentPart(content_type="text/plain", text="Hello")],
                ),
            )
        )
        out.append(events_pb2.ContactQueued(meta=meta(), contact_id=cid, queue="general"))
        out.append(
            events_pb2.ContactAssigned(
                meta=meta(), contact_id=cid, agent_id=f"agent-{n % 2}", queue="general"
            )
        )
        for mid, author in ((f"{cid}-a", contact_pb2.AUTHOR_AGENT), (f"{cid}-c", 0)):
            out.append(
                events_pb2.MessageAdded(
                    meta=meta(),
                    message=contact_pb2.Message(
                        message_id=mid,
                        contact_id=cid,
                        author=author or contact_pb2.AUTHOR_CUSTOMER,
                        agent_id=f"agent-{n % 2}" if author else "",
                        parts=[contact_pb2.ContentPart(text="…")],
                    ),
                )
            )
        out.append(events_pb2.ContactEnded(meta=meta(), contact_id=cid, agent_id=f"agent-{n % 2}"))
    return out


async def snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the case store, in primary-key order."""
    engine = database.create_engine(database_url)
    try:
        async with engine.connect() as conn:
            out = {}
            for table in Base.metadata.sorted_tables:
                rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
                out[table.name] = [tuple(r) for r in rows]
            return out
    finally:
        await engine.dispose()


async def processed(database_url: str) -> int:
    engine = database.create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return len(list(await conn.execute(select(ProcessedEvent.event_id))))
    except Exception:  # not migrated yet
        return 0
    finally:
        await engine.dispose()


async def case_event_ids(bus: Bus) -> list[str]:
    """The event id of every case event on the bus."""
    sub = await bus.js.pull_subscribe(
        "case.>",
        stream="EVENTS",
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
    )
    ids: list[str] = []
    while True:
        try:
            msgs = await sub.fetch(200, timeout=0.5)
        except TimeoutError:
            break
        for m in msgs:
            spec = events.spec_by_name((m.headers or {})[events.TYPE_HEADER])
            assert spec is not None
            ids.append(spec.type.FromString(m.data).meta.event_id)
    await sub.unsubscribe()
    return ids


async def test_a_batch_committed_and_redelivered_whole_after_a_kill_changes_nothing(
    nats_server: NatsServer,
    bus: Bus,
    database_url: str,
    tmp_path: Path,
    case_process: Callable[..., ServiceProcess],
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    events_ = batch()
    assert len(events_) < 64  # one fetch
    await bus.publish_many(events_)

    proxy = await NatsProxy(nats_server.host, nats_server.port).start()
    try:
        proxy.hold_acks = True
        first = case_process(proxy.url, database_url, tmp_path / "case-1.log", **case_env(policy))
        await first.start()
        for _ in range(600):
            if await processed(database_url) == len(events_):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the batch was never committed:\n" + first.log.read_text())
        # The service acks right after its commit: kill it once those acks are held, so that
        # they never reach the server (on a busy machine the commit is seen first).
        for _ in range(600):
            if proxy.held >= len(events_):
                break
            await asyncio.sleep(0.05)
        first.kill()
        killed_at = time.monotonic()
    finally:
        await proxy.stop()
    info = await bus.js.consumer_info("EVENTS", "case")
    # Committed, delivered once, settled never: the state a kill between commit and ack leaves.
    assert proxy.held >= len(events_)
    assert info.delivered.consumer_seq == len(events_)
    assert info.num_ack_pending == len(events_) and info.num_redelivered == 0
    before = await snapshot(database_url)
    assert len(before["contacts"]) == CONTACTS and before["audit_entries"] and before["sla_timers"]
    staged = {row[0] for row in before["outbox"]}
    published_before = set(await case_event_ids(bus))

    # Past the ack wait, the whole batch is due again; the next service fetches it at once.
    await asyncio.sleep(max(0.0, ACK_WAIT - (time.monotonic() - killed_at)))
    second = case_process(
        nats_server.url, database_url, tmp_path / "case-2.log", **case_env(policy)
    )
    await second.start()
    for _ in range(600):
        info = await bus.js.consumer_info("EVENTS", "case")
        outbox = await snapshot(database_url)
        if info.num_ack_pending == 0 and not outbox["outbox"]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the redelivered batch was never settled:\n" + second.log.read_text())
    assert info.delivered.consumer_seq == 2 * len(events_)
    assert info.ack_floor.consumer_seq == 2 * len(events_)
    assert await deadletter.parked(bus.js) == []

    after = await snapshot(database_url)
    for table, rows in before.items():
        if table != OutboxEvent.__tablename__:
            assert after[table] == rows, table
    # Each case event the commit staged (published before the kill or after) is on the bus once,
    # and the redelivery staged none.
    published = await case_event_ids(bus)
    assert len(published) == len(set(published))
    assert set(published) == staged | published_before
    assert len(published) >= 2 * 3 and not after["outbox"]  # cases created, assigned…

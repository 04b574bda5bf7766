"""Two case services on one PostgreSQL store, consuming the same durable JetStream consumer
together (the replicas deploy/k8s runs): each event is applied once, by one of them, and every
case's audit chain verifies, also when one of them is killed with SIGKILL halfway through."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from switchboard.core.bus import Bus
from switchboard.testing.contacts import assigned_conversations
from switchboard.testing.databases import POSTGRES_ENV, postgres_database
from switchboard.testing.processes import ServiceProcess, run_command

from ..conftest import case_process

pytestmark = pytest.mark.timeout(420)

CONTACTS = 1000  # 3000 events
CUSTOMERS = 250  # four contacts each: they join one case, so the replicas contend for it
ACK_WAIT = "5"  # the killed replica's unacked batch comes back after this


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"{POSTGRES_ENV} is unset: two case services need a shared PostgreSQL")
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def pair(nats_url: str, postgres_url: str, tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    replicas = [
        case_process(
            nats_url,
            postgres_url,
            tmp_path / f"case-{n}.log",
            CASE_CONSUMER_ACK_WAIT_SECONDS=ACK_WAIT,
            SWITCHBOARD_REPLICA_ID=f"case-{n}",
        )
        for n in (1, 2)
    ]
    yield replicas
    for replica in replicas:
        replica.stop()


async def scalar(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def applied(engine: AsyncEngine) -> int:
    return await scalar(engine, "SELECT count(*) FROM processed_events WHERE consumer = 'case'")


async def wait_applied(
    engine: AsyncEngine, events: int, replicas: list[ServiceProcess], timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while (done := await applied(engine)) < events:
        if time.monotonic() > deadline:
            logs = "\n".join(r.log.read_text()[-3000:] for r in replicas)
            raise AssertionError(f"{done} of {events} events applied\n{logs}")
        await asyncio.sleep(0.5)


async def publish(bus: Bus) -> None:
    batch = assigned_conversations(CONTACTS, CUSTOMERS)
    for k in range(0, len(batch), 200):
        await bus.publish_many(batch[k : k + 200])


def recorded_by(replica: ServiceProcess) -> int:
    return replica.log.read_text().count("recorded in case")


async def assert_applied_once(engine: AsyncEngine, database_url: str, tmp_path: Path) -> None:
    events = 3 * CONTACTS
    assert await applied(engine) == events
    assert await scalar(engine, "SELECT count(*) FROM contacts") == CONTACTS
    assert await scalar(engine, "SELECT count(*) FROM contacts WHERE status = 'assigned'") == (
        CONTACTS
    )
    # The customer's first message of each contact, and the agent's reply.
    assert await scalar(engine, "SELECT count(*) FROM messages") == 2 * CONTACTS
    assert await scalar(engine, "SELECT count(*) FROM customers") == CUSTOMERS
    assert await scalar(engine, "SELECT count(*) FROM customer_identities") == CUSTOMERS
    # One case per customer: no replica opened a second one beside the other's.
    assert await scalar(engine, "SELECT count(*) FROM cases") == CUSTOMERS
    assert await scalar(engine, "SELECT count(DISTINCT customer_id) FROM cases") == CUSTOMERS
    audited = {
        action: await scalar(
            engine,
            f"SELECT count(*) FROM audit_entries WHERE entity = 'case' AND action = '{action}'",
        )
        for action in ("contact_added", "message_added", "created")
    }
    assert audited == {"contact_added": CONTACTS, "message_added": CONTACTS, "created": CUSTOMERS}
    # Each case's chain is gap-free: seq runs 1..n.
    assert (
        await scalar(
            engine,
            "SELECT count(*) FROM (SELECT entity, entity_id FROM audit_entries"
            " GROUP BY entity, entity_id HAVING max(seq) <> count(*) OR min(seq) <> 1) AS gaps",
        )
        == 0
    )
    code, out = await run_command(
        [sys.executable, "-m", "switchboard.cli", "case", "verify", "--database-url", database_url],
        dict(os.environ),
        tmp_path,
    )
    assert code == 0, out
    assert "audit trail intact" in out, out


async def test_two_case_services_apply_each_event_once_between_them(
    bus: Bus,
    pair: list[ServiceProcess],
    store: AsyncEngine,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    for replica in pair:
        await replica.start()
    await publish(bus)
    await wait_applied(store, 3 * CONTACTS, pair)

    await assert_applied_once(store, postgres_url, tmp_path)
    # Both took part (a log line is written before its transaction commits, so a batch undone
    # and redelivered counts twice there: the store is what counts, above).
    assert all(recorded_by(r) > 0 for r in pair), [recorded_by(r) for r in pair]


async def test_a_case_service_killed_mid_run_leaves_the_other_to_apply_the_rest_once(
    bus: Bus,
    pair: list[ServiceProcess],
    store: AsyncEngine,
    postgres_url: str,
    tmp_path: Path,
) -> None:
    for replica in pair:
        await replica.start()
    publishing = asyncio.create_task(publish(bus))
    victim, survivor = pair
    deadline = time.monotonic() + 120
    while await applied(store) < CONTACTS or recorded_by(victim) == 0:
        assert time.monotonic() < deadline, "the pair never got a third of the way"
        await asyncio.sleep(0.05)
    victim.kill()
    killed_at = await applied(store)
    await publishing
    await wait_applied(store, 3 * CONTACTS, [survivor])

    assert killed_at < 3 * CONTACTS, "the kill came after the last event"
    assert not victim.alive and survivor.alive
    await assert_applied_once(store, postgres_url, tmp_path)

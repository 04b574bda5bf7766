"""About 5,000 contact events of every kind, through the real consumer on a real nats-server, in
fetched batches (some events overtaking the contact they refer to): every contact is recorded,
nothing is parked, and `switchboard case verify`, run as a command against the database, finds
every audit chain intact."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import func, select

from switchboard.case.adapters import orm
from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.core import deadletter, events
from switchboard.core.bus import Bus
from switchboard.v1 import contact_pb2, events_pb2

CHAT = contact_pb2.CHANNEL_CHAT
CONTACTS = 600
CUSTOMERS = 180


def meta() -> Any:
    return events.new_meta("demo", CHAT, "test")


def seconds(n: int) -> Duration:
    d = Duration()
    d.FromSeconds(n)
    return d


def contact_events(n: int) -> list[Any]:
    """One contact's life: created, queued, offered, assigned, a message each way, held and
    resumed, transferred (every 5th), then ended, or abandoned in the queue (every 7th)."""
    cid = f"chat-{n}"
    agent = f"agent-{n % 12}"
    created = events_pb2.ContactCreated(
        meta=meta(),
        contact=contact_pb2.Contact(
            contact_id=cid,
            tenant="demo",
            channel=CHAT,
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL, value=f"customer-{n % CUSTOMERS}@ex.com"
                )
            ],
            content=[contact_pb2.ContentPart(content_type="text/plain", text=f"Question {n}")],
        ),
    )
    queued = events_pb2.ContactQueued(meta=meta(), contact_id=cid, queue="general")
    if n % 7 == 0:
        return [
            created,
            queued,
            events_pb2.ContactAbandoned(
                meta=meta(), contact_id=cid, queue="general", waited=seconds(40)
            ),
        ]

    def message(mid: str, author: int, agent_id: str = "") -> events_pb2.MessageAdded:
        return events_pb2.MessageAdded(
            meta=meta(),
            message=contact_pb2.Message(
                message_id=f"{cid}-{mid}",
                contact_id=cid,
                author=author,  # type: ignore[arg-type]
                agent_id=agent_id,
                parts=[contact_pb2.ContentPart(content_type="text/plain", text=mid)],
            ),
        )

    out = [
        created,
        queued,
        events_pb2.ContactOffered(meta=meta(), contact_id=cid, agent_id=agent),
        events_pb2.ContactAssigned(
            meta=meta(), contact_id=cid, agent_id=agent, queue="general", waited=seconds(12)
        ),
        message("a", contact_pb2.AUTHOR_AGENT, agent),
        message("c", contact_pb2.AUTHOR_CUSTOMER),
        events_pb2.ContactHeld(meta=meta(), contact_id=cid, agent_id=agent, held=True),
        events_pb2.ContactHeld(meta=meta(), contact_id=cid, agent_id=agent, held=False),
    ]
    if n % 5 == 0:
        out.append(
            events_pb2.ContactTransferred(
                meta=meta(), contact_id=cid, from_agent_id=agent, to_queue="billing"
            )
        )
    out.append(
        events_pb2.ContactEnded(
            meta=meta(), contact_id=cid, agent_id=agent, wait=seconds(12), talk=seconds(90)
        )
    )
    if n % 60 == 1:  # the router's decision published before the channel's ContactCreated
        out[0], out[1] = out[1], out[0]
    return out


def interleaved() -> list[Any]:
    """The contacts' events mixed as they would arrive: 40 conversations at a time, each in order."""
    lives = [contact_events(n) for n in range(CONTACTS)]
    out: list[Any] = []
    for start in range(0, CONTACTS, 40):
        group = lives[start : start + 40]
        for step in range(max(len(life) for life in group)):
            out += [life[step] for life in group if step < len(life)]
    return out


@pytest.fixture
async def app(nats_url: str, database_url: str) -> AsyncIterator[CaseApp]:
    settings = CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET="case-audit-run-secret",
        SHUTDOWN_GRACE_SECONDS=1.0,
    )
    service = bootstrap(settings, run_scheduler=False)
    yield service
    await service.stop()


def verify(database_url: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "switchboard"
    return subprocess.run(
        [str(cli), "case", "verify", "--database-url", database_url],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_audit_chains_of_a_5000_event_run_verify_with_the_cli(
    app: CaseApp, bus: Bus, database_url: str
) -> None:
    batch = interleaved()
    assert 4900 <= len(batch) <= 5100
    for start in range(0, len(batch), 500):
        await bus.publish_many(batch[start : start + 500])
    await app.start()

    for _ in range(2400):
        info = await bus.js.consumer_info("EVENTS", "case")
        if info.num_pending == 0 and info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"the run never settled: {info}")
    assert await deadletter.parked(bus.js) == []

    assert app.sessions is not None
    async with app.sessions() as session:
        contacts = {
            status: n
            for status, n in await session.execute(
                select(orm.Contact.status, func.count()).group_by(orm.Contact.status)
            )
        }
        claimed = await session.scalar(select(func.count()).select_from(orm.ProcessedEvent))
        chains = await session.scalar(
            select(func.count()).select_from(
                select(orm.AuditEntry.entity, orm.AuditEntry.entity_id).distinct().subquery()
            )
        )
        cases = await session.scalar(select(func.count()).select_from(orm.Case))
    abandoned = len(range(0, CONTACTS, 7))
    assert contacts == {"ended": CONTACTS - abandoned, "abandoned": abandoned}
    assert claimed == len(batch)
    assert cases is not None and CUSTOMERS <= cases

    result = await asyncio.to_thread(verify, database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"audit trail intact: {chains} chains verified" in result.stdout

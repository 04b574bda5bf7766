"""A case service killed with SIGKILL while it holds a fetched, unacked ContactCreated loses none of
the routing events that follow: they wait out the ack wait that brings the contact back."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from nats.js.errors import NotFoundError

from switchboard.core import auth, deadletter, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.contacts import contact_created
from switchboard.testing.processes import ServiceProcess
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

SECRET = "case-kill-secret"
CHAT = contact_pb2.CHANNEL_CHAT
# Longer than the 11.3 s the old fixed retry schedule allowed, short enough for a test.
ACK_WAIT = 18


def case_env() -> dict[str, str]:
    return {"CASE_CONSUMER_ACK_WAIT_SECONDS": str(ACK_WAIT), "SWITCHBOARD_AUTH_SECRET": SECRET}


def meta() -> events_pb2.EventMeta:
    return events.new_meta("acme", CHAT, "test")


def contacts_recorded(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM contacts").fetchone()[0])


async def ack_pending(bus: Bus, durable: str) -> int:
    try:
        return (await bus.js.consumer_info("EVENTS", durable)).num_ack_pending
    except NotFoundError:
        return 0


async def test_a_case_service_killed_with_a_fetched_but_unacked_contact_created_loses_none_of_the_later_events(
    nats_url: str, bus: Bus, tmp_path: Path, case_process: Callable[..., ServiceProcess]
) -> None:
    database = tmp_path / "case.db"
    url = f"sqlite+aiosqlite:///{database}"
    first = case_process(nats_url, url, tmp_path / "case-1.log", **case_env())
    await first.start()

    # Hold the store's write lock, so the service's handler stops inside its transaction with the
    # ContactCreated fetched and not acked; then kill it right there.
    lock = sqlite3.connect(database, timeout=30, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(lock.execute, "BEGIN IMMEDIATE")
    contact = contact_created(
        "c-1", email="ana@example.com", name="Ana", text="My invoice", meta=meta()
    )
    await bus.publish(contact)
    for _ in range(200):
        if await ack_pending(bus, "case") == 1:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the case service never fetched the ContactCreated")
    first.kill()
    killed_at = time.monotonic()
    await asyncio.to_thread(lock.execute, "ROLLBACK")
    lock.close()
    assert contacts_recorded(database) == 0

    # The router's decisions about the contact follow, as they would.
    await bus.publish(events_pb2.ContactQueued(meta=meta(), contact_id="c-1", queue="general"))
    await bus.publish(
        events_pb2.ContactAssigned(
            meta=meta(), contact_id="c-1", agent_id="agent-7", queue="general"
        )
    )
    second = case_process(nats_url, url, tmp_path / "case-2.log", **case_env())
    await second.start()

    token = auth.mint(SECRET, "acme", "partner-1", ["partner"], scopes=["cases:read"])
    async with sb_grpc.channel(second.target, token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        case: case_pb2.Case | None = None
        deadline = time.monotonic() + 3 * ACK_WAIT
        while time.monotonic() < deadline:
            listed = await stub.ListCases(case_pb2.ListCasesRequest(page_size=10))
            if listed.cases:
                case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))
                if case.contacts and case.contacts[0].status == "assigned":
                    break
            await asyncio.sleep(0.2)
        log = (tmp_path / "case-2.log").read_text()
        assert case is not None and case.contacts, f"the contact was never recorded:\n{log}"
        [recorded] = case.contacts
        assert recorded.status == "assigned", log
        assert recorded.agent_id == "agent-7"
        assert recorded.queue == "general"
        assert case.assigned_agent_id == "agent-7"
        assert case.status == case_pb2.CASE_STATUS_ASSIGNED
    # It took the ack wait to get the contact back: the later events waited at least that long.
    assert time.monotonic() - killed_at > ACK_WAIT - 2
    assert await deadletter.parked(bus.js) == []

"""The agent-states report end to end: the router's AgentStateChanged events on a real
nats-server, recorded by the case service's consumer in a real database, reported over real gRPC
(CaseService.GetReport, REPORT_KIND_AGENT_STATES) as rows and CSV."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.entrypoints import nats_consumer
from switchboard.case.entrypoints.kb_reports_rpc import KnowledgeReportRpcs, build_kb_reports
from switchboard.case.handlers import CaseHandlers
from switchboard.case.reports.orm import AgentStateChange
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2, router_pb2

SECRET = "agent-states-secret"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class Servicer(KnowledgeReportRpcs, case_pb2_grpc.CaseServiceServicer):
    pass


@pytest.fixture
async def served(
    sessions: async_sessionmaker[AsyncSession], nats_url: str
) -> AsyncIterator[tuple[int, Bus]]:
    bus = await Bus.connect(nats_url, source="case")
    nats_consumer.subscribe(bus, CaseHandlers(sessions, "case"), "case")
    servicer = Servicer()
    servicer.kb_reports = build_kb_reports(sessions, bus, "case")
    service = case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name
    server, port, _ = await sb_grpc.start_server(
        [(case_pb2_grpc.add_CaseServiceServicer_to_server, servicer, service)],
        "127.0.0.1", 0, SECRET, frozenset({"acme"}), bus=bus,
    )  # fmt: skip
    await bus.start()
    try:
        yield port, bus
    finally:
        await server.stop(0.5)
        await bus.drain()


def changed(
    n: int, agent_id: str, presence: int, minutes: int, reason: str = "", by: str = ""
) -> events_pb2.AgentStateChanged:
    meta = events.new_meta(
        "acme",
        contact_pb2.CHANNEL_UNSPECIFIED,
        "router",
        f"agent-state-{n}",
        (T0 + minutes * MINUTE).timestamp(),
    )
    return events_pb2.AgentStateChanged(
        meta=meta, agent_id=agent_id, presence=presence, reason=reason, changed_by=by
    )


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


async def test_agents_time_in_each_state_from_the_routers_events(
    served: tuple[int, Bus], sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two agents' morning: ko-1 available before 09:00, put on a lunch break by a supervisor,
    back, wrap-up, signed out at 10:20; ko-2 signs in at 09:05, is set not responding by the
    router, and a supervisor signs it out. A malformed event among them is refused on its own."""
    port, bus = served
    p = router_pb2
    timeline = [
        changed(1, "ko-1", p.PRESENCE_AVAILABLE, -10),
        changed(2, "ko-2", p.PRESENCE_AVAILABLE, 5),
        changed(3, "ko-1", p.PRESENCE_BREAK, 10, "lunch", by="sup-1"),
        changed(4, "ko-2", p.PRESENCE_NOT_RESPONDING, 20, "missed 3 offers in a row"),
        changed(5, "ko-2", 99, 25),  # no such presence: parked, the rest recorded
        changed(6, "ko-2", p.PRESENCE_OFFLINE, 30, "signed out", by="sup-1"),
        changed(7, "ko-1", p.PRESENCE_AVAILABLE, 40),
        changed(8, "ko-1", p.PRESENCE_WRAP_UP, 50, "after-contact work"),
        changed(9, "ko-1", p.PRESENCE_AVAILABLE, 55),
        changed(10, "ko-1", p.PRESENCE_OFFLINE, 80, "signed out"),
    ]
    for event in timeline:
        await bus.publish(event)

    async def recorded() -> bool:
        async with sessions() as session:
            count = await session.scalar(select(func.count()).select_from(AgentStateChange))
        return count == len(timeline) - 1

    await eventually(recorded, "the agents' state changes recorded")

    channel = sb_grpc.channel(
        f"127.0.0.1:{port}", auth.mint(SECRET, "acme", "sup-1", ["supervisor"])
    )
    async with channel:
        stub = case_pb2_grpc.CaseServiceStub(channel)
        request = case_pb2.GetReportRequest(
            kind=case_pb2.REPORT_KIND_AGENT_STATES,
            interval="hour",
            to=ts(T0 + 90 * MINUTE),
            group_by=["agent"],
        )
        getattr(request, "from").CopyFrom(ts(T0))
        report = await stub.GetReport(request, timeout=10)

    def values(row: Any) -> dict[str, float | None]:
        return {v.name: v.value if v.defined else None for v in row.values}

    rows = {(r.interval_start.ToDatetime(UTC), r.agent_id): values(r) for r in report.rows}
    assert sorted(rows) == [
        (T0, "ko-1"),
        (T0, "ko-2"),
        (T0 + 60 * MINUTE, "ko-1"),
        (T0 + 60 * MINUTE, "ko-2"),
    ]
    first = rows[(T0, "ko-1")]
    assert (first["signed_in_s"], first["available_s"], first["break_s"]) == (3600, 1500, 1800)
    assert (first["wrap_up_s"], first["breaks"], first["changed_by_others"]) == (300, 1, 1)
    assert first["availability"] == pytest.approx(1500 / 3600)
    ko_2 = rows[(T0, "ko-2")]
    assert (ko_2["signed_in_s"], ko_2["available_s"], ko_2["not_responding_s"]) == (1500, 900, 600)
    assert (ko_2["not_responding"], ko_2["changed_by_others"]) == (1, 1)  # signed out by sup-1
    assert rows[(T0 + 60 * MINUTE, "ko-1")]["available_s"] == 1200  # until signed out, 10:20
    later = rows[(T0 + 60 * MINUTE, "ko-2")]
    assert later["signed_in_s"] == 0 and later["availability"] is None  # undefined, not 0
    lines = report.csv.splitlines()
    assert lines[0] == (
        "interval_start,interval_end,agent,signed_in_s,available_s,busy_s,wrap_up_s,break_s,"
        "not_responding_s,breaks,not_responding,changed_by_others,availability"
    )
    assert lines[1] == (
        "2025-03-03T09:00:00+00:00,2025-03-03T10:00:00+00:00,ko-1,3600,1500,0,300,1800,0,1,0,1,"
        "0.4167"
    )

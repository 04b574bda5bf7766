"""`switchboard report` against CaseService over real gRPC, a real database and a real
nats-server: CSV and a table, grouped by queue, and a wrong secret refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import orm
from switchboard.case.entrypoints.kb_reports_rpc import (
    KnowledgeReportRpcs,
    build_kb_reports,
    subscribe_kb_reports,
)
from switchboard.cli.__main__ import parser
from switchboard.cli.endpoints import Endpoints
from switchboard.cli.report import run
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

SECRET = "kb-reports-secret"
T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
VOICE, EMAIL = contact_pb2.CHANNEL_VOICE, contact_pb2.CHANNEL_EMAIL


class Servicer(KnowledgeReportRpcs, case_pb2_grpc.CaseServiceServicer):
    pass


async def seed(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Two customers; four voice calls between 09:00 and 10:00 and one email."""
    async with sessions.begin() as s:
        s.add_all(
            [
                orm.Customer(id="k1", tenant="acme", display_name="Ana", created_at=T0),
                orm.Customer(id="k2", tenant="acme", display_name="Bo", created_at=T0),
            ]
        )
        await s.flush()
        s.add(orm.CustomerIdentity(tenant="acme", kind=contact_pb2.IDENTITY_KIND_EMAIL,
                                   value="ana@example.com", customer_id="k1"))  # fmt: skip
        for case_id, customer, ref in (("case1", "k1", "C-AAAAAA"), ("case2", "k2", "C-BBBBBB")):
            s.add(
                orm.Case(id=case_id, tenant="acme", customer_id=customer, reference=ref,
                         status=case_pb2.CASE_STATUS_IN_PROGRESS, subject="refund",
                         assigned_agent_id="a1", created_at=T0, updated_at=T0)
            )  # fmt: skip
        await s.flush()

        def contact(cid: str, case: str, channel: int, at: datetime, **kw: Any) -> orm.Contact:
            return orm.Contact(contact_id=cid, tenant="acme", case_id=case, channel=channel,
                               language="ko", skills=[], queue=kw.pop("queue", "billing"),
                               subject="", agent_id=kw.pop("agent_id", ""), status="ended",
                               created_at=at, queued_at=at, **kw)  # fmt: skip

        s.add_all(
            [
                contact("v1", "case1", VOICE, T0 + timedelta(minutes=1), agent_id="a1",
                        assigned_at=T0 + timedelta(minutes=1, seconds=10), wait_ms=10_000,
                        ended_at=T0 + timedelta(minutes=6), talk_ms=290_000, hold_ms=30_000,
                        wrap_up_ms=10_000),
                contact("v2", "case2", VOICE, T0 + timedelta(minutes=20), agent_id="a2",
                        assigned_at=T0 + timedelta(minutes=20, seconds=40), wait_ms=40_000,
                        ended_at=T0 + timedelta(minutes=25), talk_ms=260_000, hold_ms=0,
                        wrap_up_ms=40_000, queue="tech"),
                contact("v3", "case2", VOICE, T0 + timedelta(minutes=30),
                        abandoned_at=T0 + timedelta(minutes=30, seconds=5)),
                contact("v4", "case2", VOICE, T0 + timedelta(minutes=40),
                        abandoned_at=T0 + timedelta(minutes=41)),
                contact("e1", "case1", EMAIL, T0 + timedelta(minutes=50), agent_id="a1",
                        first_agent_response_at=T0 + timedelta(hours=3)),
            ]
        )  # fmt: skip
        await s.flush()
        s.add(orm.Message(message_id="m1", contact_id="e1", tenant="acme",
                          author=contact_pb2.AUTHOR_CUSTOMER, agent_id="",
                          text="결제한 상품 환불요청 드립니다", content_type="text/plain",
                          sent_at=T0 + timedelta(minutes=50)))  # fmt: skip


@pytest.fixture
async def served(
    sessions: async_sessionmaker[AsyncSession], nats_url: str
) -> AsyncIterator[tuple[int, Bus, Any]]:
    bus = await Bus.connect(nats_url, source="case")
    kb_reports = build_kb_reports(sessions, bus, "case", qa_rate=0.5, qa_seed="s1")
    subscribe_kb_reports(bus, kb_reports, "case")
    servicer = Servicer()
    servicer.kb_reports = kb_reports
    service = case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name
    server, port, _ = await sb_grpc.start_server(
        [(case_pb2_grpc.add_CaseServiceServicer_to_server, servicer, service)],
        "127.0.0.1", 0, SECRET, frozenset({"acme", "globex"}), bus=bus,
    )  # fmt: skip
    await bus.start()
    try:
        yield port, bus, kb_reports
    finally:
        await server.stop(0.5)
        await bus.drain()


async def test_switchboard_report_command(
    served: tuple[int, Bus, Any],
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(sessions)
    port, _, _ = served
    Endpoints(nats_url="nats://unused", grpc={"case": f"127.0.0.1:{port}"}, tenant="acme").save(
        tmp_path / "endpoints.json"
    )
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", SECRET)
    argv = ["report", "--kind", "service_level", "--interval", "hour", "--from", "2025-03-03",
            "--to", "2025-03-03T11:00:00+00:00"]  # fmt: skip
    assert await run(tmp_path, parser().parse_args([*argv, "--csv"])) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0].startswith("interval_start,interval_end,offered,answered")
    assert len(csv_out) == 1 + 11  # 00:00 .. 10:00
    assert csv_out[10].startswith("2025-03-03T09:00:00+00:00,2025-03-03T10:00:00+00:00,4,2,")
    assert await run(tmp_path, parser().parse_args([*argv, "--group-by", "queue"])) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["interval", "queue", "offered"]
    billing = next(line for line in table if line.startswith("2025-03-03 09:00  billing"))
    assert "33.3%" in billing  # billing: v1 in 10 s, v3 and v4 abandoned -> 1 of 3
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", "wrong-secret")
    assert await run(tmp_path, parser().parse_args(argv)) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().out

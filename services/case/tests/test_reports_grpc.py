"""Knowledge base, reports, QA and CSAT through CaseService over real gRPC, a real database and a
real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.devtools.report_sample import EMAIL, T0, VOICE, seed
from switchboard.case.entrypoints.kb_reports_rpc import (
    KnowledgeReportRpcs,
    build_kb_reports,
    subscribe_kb_reports,
)
from switchboard.case.reports.orm import CsatRating, CsatSurvey
from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, case_pb2, case_pb2_grpc, events_pb2

SECRET = "kb-reports-secret"


class Servicer(KnowledgeReportRpcs, case_pb2_grpc.CaseServiceServicer):
    pass


def ts(value: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


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


def stub_for(port: int, role: str, tenant: str = "acme") -> Any:
    token = auth.mint(SECRET, tenant, f"{role}-1", [role])
    ch = sb_grpc.channel(f"127.0.0.1:{port}", token)
    return ch, case_pb2_grpc.CaseServiceStub(ch)


async def test_report_over_grpc_with_csv(
    served: tuple[int, Bus, Any], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    port, _, _ = served
    ch, stub = stub_for(port, "supervisor")
    async with ch:
        request = case_pb2.GetReportRequest(
            kind=case_pb2.REPORT_KIND_SERVICE_LEVEL, interval="hour", to=ts(T0 + timedelta(hours=2))
        )
        getattr(request, "from").CopyFrom(ts(T0))
        report = await stub.GetReport(request, timeout=10)
        first = {v.name: v for v in report.rows[0].values}
        # Answered in 10 s and 40 s; abandoned after 5 s (short) and 60 s.
        assert first["offered"].value == 4 and first["answered"].value == 2
        assert first["service_level"].value == pytest.approx(1 / 4)
        assert first["service_level_2"].value == pytest.approx(1 / 3)
        assert first["asa_s"].value == pytest.approx(25)
        second = {v.name: v for v in report.rows[1].values}
        assert second["offered"].value == 0 and not second["service_level"].defined
        lines = report.csv.splitlines()
        assert lines[0].startswith("interval_start,interval_end,offered,")
        assert lines[1].startswith("2025-03-03T09:00:00+00:00,2025-03-03T10:00:00+00:00,4,2,")
        assert ",," in lines[2]  # an undefined service level is an empty cell

        request.kind = case_pb2.REPORT_KIND_SUMMARY
        request.group_by.append("queue")
        by_queue = await stub.GetReport(request, timeout=10)
        assert "queue" in by_queue.columns
        billing = next(r for r in by_queue.rows if r.queue == "billing")
        values = {v.name: v.value for v in billing.values}
        assert values["aht_s"] == pytest.approx(300)  # 290 s talk (hold included) + 10 s wrap-up
        assert values["email_service_level"] == 1.0  # answered in 2 h 10 min

        bad = case_pb2.GetReportRequest(interval="fortnight", to=ts(T0 + timedelta(hours=1)))
        getattr(bad, "from").CopyFrom(ts(T0))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetReport(bad, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "interval" in (err.value.details() or "")
    ch, agent = stub_for(port, "agent")
    async with ch:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await agent.GetReport(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_knowledge_base_over_grpc(
    served: tuple[int, Bus, Any], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    port, _, _ = served
    ch, editor = stub_for(port, "agent")
    ch2, lead = stub_for(port, "supervisor")
    ch3, other = stub_for(port, "supervisor", "globex")
    async with ch, ch2, ch3:
        a = await editor.CreateArticle(
            case_pb2.CreateArticleRequest(title="환불 안내", body="환불요청을 하시면 3일 안에 처리됩니다.", language="ko"),
            timeout=10,
        )  # fmt: skip
        assert a.state == case_pb2.ARTICLE_STATE_DRAFT and a.version == 1
        await editor.SetArticleState(
            case_pb2.SetArticleStateRequest(article_id=a.article_id, state=case_pb2.ARTICLE_STATE_REVIEW),
            timeout=10,
        )  # fmt: skip
        publish = case_pb2.SetArticleStateRequest(
            article_id=a.article_id, state=case_pb2.ARTICLE_STATE_PUBLISHED
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await editor.SetArticleState(publish, timeout=10)  # agents draft, leads publish
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await lead.SetArticleState(publish, timeout=10)
        found = await editor.SearchKnowledge(
            case_pb2.SearchKnowledgeRequest(query="환불"), timeout=10
        )
        assert [h.article.article_id for h in found.hits] == [a.article_id]
        suggested = await editor.SuggestArticles(
            case_pb2.SuggestArticlesRequest(case_id="case1"), timeout=10
        )
        assert suggested.hits[0].article.article_id == a.article_id
        voted = await editor.VoteArticle(
            case_pb2.VoteArticleRequest(article_id=a.article_id, helpful=True), timeout=10
        )
        assert voted.helpful_votes == 1
        nothing = await other.SearchKnowledge(
            case_pb2.SearchKnowledgeRequest(query="환불"), timeout=10
        )
        assert list(nothing.hits) == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await other.GetArticle(case_pb2.GetArticleRequest(article_id=a.article_id), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await editor.SetArticleState(publish, timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_qa_sampling_and_scoring(
    served: tuple[int, Bus, Any], sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    port, _, _ = served
    ch, lead = stub_for(port, "supervisor")
    async with ch:
        req = case_pb2.ListQaSamplesRequest(to=ts(T0 + timedelta(days=1)), min_per_agent=1)
        getattr(req, "from").CopyFrom(ts(T0))
        first = await lead.ListQaSamples(req, timeout=10)
        again = await lead.ListQaSamples(req, timeout=10)
        assert [s.contact_id for s in first.samples] == [s.contact_id for s in again.samples]
        assert {s.agent_id for s in first.samples} == {"a1", "a2"}  # every agent sampled
        assert not {s.contact_id for s in first.samples} & {"v3", "v4"}  # abandoned: not handled
        items = [
            case_pb2.QaItemResult(item_id=i, passed=i != "compliance")
            for i in ("identity_verified", "correct_information", "compliance", "greeting",
                      "understood_need", "tone", "hold_etiquette", "documented", "closing")
        ]  # fmt: skip
        scored = await lead.SubmitQaScore(
            case_pb2.SubmitQaScoreRequest(contact_id="v1", items=items), timeout=10
        )
        assert scored.fatal_errors == 1 and scored.score == 0 and scored.agent_id == "a1"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await lead.SubmitQaScore(
                case_pb2.SubmitQaScoreRequest(contact_id="v2", items=items[:3]), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "unanswered" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await lead.SubmitQaScore(
                case_pb2.SubmitQaScoreRequest(contact_id="v3", items=items), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_csat_survey_and_ratings_through_nats(
    served: tuple[int, Bus, Any], sessions: async_sessionmaker[AsyncSession], nats_url: str
) -> None:
    await seed(sessions)
    port, _, _ = served
    publisher = await Bus.connect(nats_url, source="test")
    surveys: list[events_pb2.OutboundEmail] = []

    async def on_email(e: events_pb2.OutboundEmail) -> None:
        surveys.append(e)

    publisher.subscribe("email-test", events_pb2.OutboundEmail, on_email)
    await publisher.start()
    try:
        resolved = case_events_pb2.CaseStatusChanged(
            meta=events.new_meta("acme", 0, "case"), case_id="case1",
            from_status=case_pb2.CASE_STATUS_IN_PROGRESS, to_status=case_pb2.CASE_STATUS_RESOLVED,
        )  # fmt: skip
        await publisher.publish(resolved)
        again = case_events_pb2.CaseStatusChanged()
        again.CopyFrom(resolved)
        again.meta.event_id = "another-delivery"
        await publisher.publish(again)
        rated = events_pb2.SatisfactionRated(
            meta=events.new_meta("acme", EMAIL, "email"), contact_id="e1", case_id="case1", score=5
        )
        await publisher.publish(rated)
        await publisher.publish(rated)  # the same event again: de-duplicated
        low = events_pb2.SatisfactionRated(
            meta=events.new_meta("acme", VOICE, "voice"), contact_id="v2", score=2
        )
        await publisher.publish(low)
        bad = events_pb2.SatisfactionRated(
            meta=events.new_meta("acme", VOICE, "voice"), contact_id="v2", score=9
        )
        await publisher.publish(bad)  # terminated by the bus, never stored

        async def ratings() -> list[CsatRating] | None:
            async with sessions() as s:
                from sqlalchemy import select

                rows = list(await s.scalars(select(CsatRating)))
                surveyed = await s.get(CsatSurvey, ("acme", "case1"))
            return rows if len(rows) == 2 and surveyed is not None else None

        rows = await eventually(ratings)
        assert sorted(r.score for r in rows) == [2, 5]
        assert {r.agent_id for r in rows} == {"a1", "a2"}
        await eventually(lambda: asyncio.sleep(0, result=len(surveys) >= 1))
        await asyncio.sleep(0.3)
        assert len(surveys) == 1  # one survey per case, however often it is resolved
        survey = surveys[0]
        assert survey.kind == "survey" and list(survey.to) == ["ana@example.com"]
        assert survey.case_reference == "C-AAAAAA" and "C-AAAAAA" in survey.subject

        ch, lead = stub_for(port, "supervisor")
        async with ch:
            now = datetime.now(UTC)
            req = case_pb2.GetReportRequest(
                kind=case_pb2.REPORT_KIND_CSAT, interval="day", to=ts(now + timedelta(days=1)),
                group_by=["agent"],
            )  # fmt: skip
            getattr(req, "from").CopyFrom(ts(now - timedelta(days=1)))
            report = await lead.GetReport(req, timeout=10)
            by_agent = {
                r.agent_id: {v.name: v.value for v in r.values}
                for r in report.rows
                if any(v.name == "csat_responses" and v.value for v in r.values)
            }
            assert by_agent["a1"]["csat"] == 1.0 and by_agent["a2"]["csat"] == 0.0
    finally:
        await publisher.drain()

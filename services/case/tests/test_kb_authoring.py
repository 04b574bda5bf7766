"""Writing the knowledge base through CaseService over real gRPC, a real database and a real
nats-server's object store: the review workflow (who may publish or send back, with the
reviewer's comment), versions, categories, attachments, drafts from resolved cases, and that
another tenant sees none of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case import customers
from switchboard.case.adapters import backfill, keyring, orm
from switchboard.case.adapters.crypto import ERASED
from switchboard.case.devtools.report_sample import T0, seed
from switchboard.case.entrypoints.kb_reports_rpc import KnowledgeReportRpcs, build_kb_reports
from switchboard.core import auth, stores
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

SECRET = "kb-authoring-secret"
DRAFT, REVIEW, PUBLISHED = (
    case_pb2.ARTICLE_STATE_DRAFT,
    case_pb2.ARTICLE_STATE_REVIEW,
    case_pb2.ARTICLE_STATE_PUBLISHED,
)


class Servicer(KnowledgeReportRpcs, case_pb2_grpc.CaseServiceServicer):
    pass


@pytest.fixture
async def port(sessions: async_sessionmaker[AsyncSession], nats_url: str) -> AsyncIterator[int]:
    bus = await Bus.connect(nats_url, source="case")
    servicer = Servicer()
    servicer.kb_reports = build_kb_reports(
        sessions, bus, "case", objects=stores.ObjectStores(bus.js)
    )
    service = case_pb2.DESCRIPTOR.services_by_name["CaseService"].full_name
    server, port, _ = await sb_grpc.start_server(
        [(case_pb2_grpc.add_CaseServiceServicer_to_server, servicer, service)],
        "127.0.0.1", 0, SECRET, frozenset({"acme", "globex"}), bus=bus,
    )  # fmt: skip
    await bus.start()
    try:
        yield port
    finally:
        await server.stop(0.5)
        await bus.drain()


def stub_for(port: int, role: str, tenant: str = "acme") -> tuple[Any, Any]:
    token = auth.mint(SECRET, tenant, f"{role}-1", [role])
    ch = sb_grpc.channel(f"127.0.0.1:{port}", token)
    return ch, case_pb2_grpc.CaseServiceStub(ch)


def move(article_id: str, state: int, comment: str = "", version: int = 0) -> Any:
    return case_pb2.SetArticleStateRequest(
        article_id=article_id, state=state, comment=comment, version=version
    )  # type: ignore[arg-type]


async def denied(call: Any, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code
    return err.value.details() or ""


async def test_review_workflow_versions_and_categories(port: int) -> None:
    ch, agent = stub_for(port, "agent")
    ch2, lead = stub_for(port, "supervisor")
    ch3, tl = stub_for(port, "team_lead")
    async with ch, ch2, ch3:
        a = await agent.CreateArticle(
            case_pb2.CreateArticleRequest(
                title="환불 안내", body="환불요청은 3일 안에 처리됩니다.", language="ko",
                category="결제", tags=["환불"],
            ),
            timeout=10,
        )  # fmt: skip
        assert a.category == "결제" and a.state == DRAFT
        await agent.SetArticleState(move(a.article_id, REVIEW), timeout=10)
        # An agent (or a team lead) may not review: neither publish nor send back.
        await denied(agent.SetArticleState(move(a.article_id, PUBLISHED), timeout=10))
        await denied(agent.SetArticleState(move(a.article_id, DRAFT, "mine"), timeout=10))
        await denied(tl.SetArticleState(move(a.article_id, PUBLISHED), timeout=10))
        # Sending back needs the reviewer's comment, which stays with the version.
        details = await denied(
            lead.SetArticleState(move(a.article_id, DRAFT), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert "comment" in details
        back = await lead.SetArticleState(
            move(a.article_id, DRAFT, "카드 결제는 더 걸린다고 적어 주세요"), timeout=10
        )
        assert back.state == DRAFT and back.review_comment.startswith("카드 결제")
        assert back.state_changed_by == "supervisor-1"
        v2 = await agent.UpdateArticle(
            case_pb2.UpdateArticleRequest(
                article_id=a.article_id, title="환불 안내", language="ko", category="결제",
                body="환불요청은 3일 안에 처리됩니다. 카드 결제는 카드사에 따라 더 걸립니다.",
            ),
            timeout=10,
        )  # fmt: skip
        assert v2.version == 2 and v2.review_comment == ""
        await agent.SetArticleState(move(a.article_id, REVIEW), timeout=10)
        listed = await lead.ListArticles(case_pb2.ListArticlesRequest(state=REVIEW), timeout=10)
        assert [(x.article_id, x.version) for x in listed.articles] == [(a.article_id, 2)]
        published = await lead.SetArticleState(move(a.article_id, PUBLISHED), timeout=10)
        assert published.published_version == 2

        other = await agent.CreateArticle(
            case_pb2.CreateArticleRequest(
                title="Shipping", body="Parcels leave within a day.", language="en",
                category="Delivery",
            ),
            timeout=10,
        )  # fmt: skip
        everything = await agent.ListArticles(case_pb2.ListArticlesRequest(), timeout=10)
        assert {x.article_id for x in everything.articles} == {a.article_id, other.article_id}
        assert list(everything.categories) == ["Delivery", "결제"]
        ko = await agent.ListArticles(case_pb2.ListArticlesRequest(language="ko"), timeout=10)
        assert [x.article_id for x in ko.articles] == [a.article_id]
        delivery = await agent.ListArticles(
            case_pb2.ListArticlesRequest(category="Delivery", state=DRAFT), timeout=10
        )
        assert [x.article_id for x in delivery.articles] == [other.article_id]

        history = await agent.ListArticleVersions(
            case_pb2.GetArticleRequest(article_id=a.article_id), timeout=10
        )
        assert [(v.version, v.state) for v in history.articles] == [(2, PUBLISHED), (1, DRAFT)]
        assert history.articles[1].review_comment.startswith("카드 결제")
        hits = await agent.SearchKnowledge(
            case_pb2.SearchKnowledgeRequest(query="카드사"), timeout=10
        )
        assert [h.article.article_id for h in hits.hits] == [a.article_id]


async def test_attachments_are_stored_and_tenant_scoped(port: int) -> None:
    ch, agent = stub_for(port, "agent")
    ch2, stranger = stub_for(port, "supervisor", "globex")
    async with ch, ch2:
        a = await agent.CreateArticle(
            case_pb2.CreateArticleRequest(title="Router reset", body="Hold the button.", language="en"),
            timeout=10,
        )  # fmt: skip
        pdf = b"%PDF-1.4 manual " * 100
        with_file = await agent.AddArticleAttachment(
            case_pb2.AddArticleAttachmentRequest(
                article_id=a.article_id, filename="C:\\docs\\manual.pdf",
                content_type="application/pdf", data=pdf,
            ),
            timeout=10,
        )  # fmt: skip
        [att] = with_file.attachments
        assert att.filename == "manual.pdf" and att.size_bytes == len(pdf)
        assert att.added_by == "agent-1"
        # A new version still links the file.
        v2 = await agent.UpdateArticle(
            case_pb2.UpdateArticleRequest(
                article_id=a.article_id, title="Router reset", body="Hold it 10 s.", language="en"
            ),
            timeout=10,
        )
        assert [x.attachment_id for x in v2.attachments] == [att.attachment_id]
        got = await agent.GetArticleAttachment(
            case_pb2.GetArticleAttachmentRequest(
                article_id=a.article_id, attachment_id=att.attachment_id
            ),
            timeout=10,
        )
        assert got.data == pdf and got.attachment.content_type == "application/pdf"
        await denied(
            agent.AddArticleAttachment(
                case_pb2.AddArticleAttachmentRequest(article_id=a.article_id, filename="x.txt"),
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        # Another tenant finds neither the article, its versions, nor its file.
        not_found = grpc.StatusCode.NOT_FOUND
        await denied(
            stranger.GetArticleAttachment(
                case_pb2.GetArticleAttachmentRequest(
                    article_id=a.article_id, attachment_id=att.attachment_id
                ),
                timeout=10,
            ),
            not_found,
        )
        await denied(
            stranger.AddArticleAttachment(
                case_pb2.AddArticleAttachmentRequest(
                    article_id=a.article_id, filename="x.txt", data=b"x"
                ),
                timeout=10,
            ),
            not_found,
        )
        await denied(
            stranger.ListArticleVersions(
                case_pb2.GetArticleRequest(article_id=a.article_id), timeout=10
            ),
            not_found,
        )
        await denied(stranger.SetArticleState(move(a.article_id, REVIEW), timeout=10), not_found)
        theirs = await stranger.ListArticles(case_pb2.ListArticlesRequest(), timeout=10)
        assert list(theirs.articles) == [] and list(theirs.categories) == []


async def test_draft_from_a_resolved_case(
    port: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    async with sessions.begin() as s:
        keys = keyring.of(s)
        s.add(
            orm.Message(
                message_id="m2", contact_id="e1", tenant="acme",
                author=contact_pb2.AUTHOR_AGENT, agent_id="a1",
                text=keys.seal(s, "acme", "k1", "환불은 영업일 3일 안에 처리됩니다."),
                content_type="text/plain", sent_at=T0 + timedelta(hours=3),
            )
        )  # fmt: skip
    ch, agent = stub_for(port, "agent")
    ch2, stranger = stub_for(port, "agent", "globex")
    async with ch, ch2:
        by_ref = case_pb2.DraftArticleFromCaseRequest(reference="c-aaaaaa", language="ko")
        details = await denied(
            agent.DraftArticleFromCase(by_ref, timeout=10), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert "not resolved" in details
        async with sessions.begin() as s:
            case = await s.get(orm.Case, "case1")
            assert case is not None
            case.status = case_pb2.CASE_STATUS_RESOLVED
        a = await agent.DraftArticleFromCase(by_ref, timeout=10)
        assert a.state == DRAFT and a.source_case_id == "case1" and a.language == "ko"
        assert a.source_case_reference == "C-AAAAAA"
        assert a.title == "refund"
        # The agents' replies, not the customer's messages.
        assert a.body == "환불은 영업일 3일 안에 처리됩니다."
        await denied(stranger.DraftArticleFromCase(by_ref, timeout=10), grpc.StatusCode.NOT_FOUND)


async def test_drafts_are_sealed_at_rest_and_published_text_stays_searchable(
    port: int, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await seed(sessions)
    reply = "환불 계좌는 신한 110-123-456 으로 보냈습니다."
    async with sessions.begin() as s:
        keys = keyring.of(s)
        s.add(
            orm.Message(
                message_id="m2", contact_id="e1", tenant="acme",
                author=contact_pb2.AUTHOR_AGENT, agent_id="a1",
                text=keys.seal(s, "acme", "k1", reply),
                content_type="text/plain", sent_at=T0 + timedelta(hours=3),
            )
        )  # fmt: skip
        case = await s.get(orm.Case, "case1")
        assert case is not None
        case.status = case_pb2.CASE_STATUS_RESOLVED

    async def raw(article_id: str) -> list[tuple[str, str, str]]:
        async with sessions() as s:
            rows = await s.execute(
                text(
                    "SELECT title, body, review_comment FROM kb_article_versions "
                    "WHERE article_id = :a ORDER BY version"
                ),
                {"a": article_id},
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]

    ch, agent = stub_for(port, "agent")
    ch2, lead = stub_for(port, "supervisor")
    async with ch, ch2:
        by_ref = case_pb2.DraftArticleFromCaseRequest(reference="c-aaaaaa", language="ko")
        drafted = await agent.DraftArticleFromCase(by_ref, timeout=10)
        await agent.SetArticleState(move(drafted.article_id, REVIEW), timeout=10)
        await lead.SetArticleState(
            move(drafted.article_id, DRAFT, "110-123-456 지워 주세요"), timeout=10
        )
        [(title, body, comment)] = await raw(drafted.article_id)
        for stored in (title, body, comment):
            assert stored.startswith("sb1e:")
        assert "110-123-456" not in body + comment and "refund" not in title
        back = await agent.GetArticle(
            case_pb2.GetArticleRequest(article_id=drafted.article_id), timeout=10
        )
        assert (back.title, back.body, back.review_comment) == (
            "refund", reply, "110-123-456 지워 주세요"
        )  # fmt: skip

        # Written before sealing: read as it is.
        async with sessions.begin() as s:
            await s.execute(
                text(
                    "UPDATE kb_article_versions SET body = 'clear old body' WHERE article_id = :a"
                ),
                {"a": drafted.article_id},
            )
        back = await agent.GetArticle(
            case_pb2.GetArticleRequest(article_id=drafted.article_id), timeout=10
        )
        assert back.body == "clear old body" and back.title == "refund"
        # The service seals it as it starts, with the key of the case's customer.
        await backfill.seal_existing(sessions)
        [(_, body, _)] = await raw(drafted.article_id)
        assert body.startswith("sb1e:") and "clear old body" not in body

        # A published article is public: sealed with the tenant's key, found by CJK search,
        # and not erased with the customer whose case it came from.
        public = await agent.DraftArticleFromCase(by_ref, timeout=10)
        await agent.SetArticleState(move(public.article_id, REVIEW), timeout=10)
        await lead.SetArticleState(move(public.article_id, PUBLISHED), timeout=10)
        [(title, body, _)] = await raw(public.article_id)
        assert body.startswith("sb1e:") and "환불" not in body
        found = await agent.SearchKnowledge(
            case_pb2.SearchKnowledgeRequest(query="계좌"), timeout=10
        )
        assert [h.article.article_id for h in found.hits] == [public.article_id]

        async with sessions.begin() as s:
            await customers.erase(s, "acme", "k1", "admin-1", orm.utc_now())
        gone = await agent.GetArticle(
            case_pb2.GetArticleRequest(article_id=drafted.article_id), timeout=10
        )
        assert (gone.title, gone.body, gone.review_comment) == (ERASED, ERASED, ERASED)
        kept = await agent.GetArticle(
            case_pb2.GetArticleRequest(article_id=public.article_id), timeout=10
        )
        assert (kept.title, kept.body) == ("refund", reply)

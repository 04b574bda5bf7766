"""The demo knowledge base `switchboard run` seeds, against the case service over real gRPC:
published articles in Korean, Chinese, English and Japanese that a search in each language
finds, created once however often the platform starts."""

from __future__ import annotations

from switchboard.case.bootstrap import CaseApp
from switchboard.cli.demo import DEMO_ARTICLES, seed_knowledge
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc


async def test_the_demo_articles_are_published_in_four_languages_once(
    case_service: CaseApp, case_secret: str
) -> None:
    target = f"127.0.0.1:{case_service.grpc_port}"
    assert {a.language for a in DEMO_ARTICLES} >= {"ko", "zh", "en", "ja"}
    assert await seed_knowledge(target, case_secret, "acme") == len(DEMO_ARTICLES)
    assert await seed_knowledge(target, case_secret, "acme") == 0  # the next start
    token = auth.mint(case_secret, "acme", "agent-1", ["agent"])
    async with sb_grpc.channel(target, token) as channel:
        stub = case_pb2_grpc.CaseServiceStub(channel)
        for query, language in (("환불", "ko"), ("退款", "zh"), ("refund", "en"), ("返金", "ja")):
            found = await stub.SearchKnowledge(
                case_pb2.SearchKnowledgeRequest(query=query, language=language)
            )
            assert len(found.hits) == 1, (query, found)
            article = found.hits[0].article
            assert article.language == language
            assert article.state == case_pb2.ARTICLE_STATE_PUBLISHED
        # another tenant's knowledge base is its own
        other = auth.mint(case_secret, "globex", "agent-1", ["agent"])
    async with sb_grpc.channel(target, other) as channel:
        stub = case_pb2_grpc.CaseServiceStub(channel)
        found = await stub.SearchKnowledge(case_pb2.SearchKnowledgeRequest(query="refund"))
        assert list(found.hits) == []

"""The knowledge base on the real database (SQLite FTS5; PostgreSQL tsvector when configured):
the workflow, votes, and search that finds Korean, Chinese and Japanese words inside text."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.knowledge import tokens
from switchboard.case.knowledge.service import Draft, KnowledgeBase
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound

REFUND_KO = Draft(
    "환불 안내",
    "고객님께서 환불요청을 하시면 영업일 기준 3일 안에 처리해 드립니다. 카드 결제는 카드사 "
    "사정에 따라 더 걸릴 수 있습니다.",
    "ko",
    ["결제"],
)
DELIVERY_KO = Draft(
    "배송 조회", "주문하신 상품의 배송 상태는 마이페이지에서 확인하실 수 있습니다.", "ko"
)
REFUND_ZH = Draft("退款说明", "如果您申请退款，我们会在三个工作日内处理完毕。", "zh-Hans")
PASSWORD_ZH = Draft("重置密码", "忘记密码时，请点击登录页面上的链接。", "zh-Hans")
RESET_JA = Draft(
    "パスワードの再設定",
    "パスワードをリセットするには、ログイン画面のリンクを押してください。",
    "ja",
)
RESET_EN = Draft(
    "Resetting your password", "Open the sign-in page and choose Forgot password.", "en"
)


async def published(kb: KnowledgeBase, draft: Draft, tenant: str = "acme") -> str:
    a = await kb.create(tenant, "editor-1", draft)
    await kb.set_state(tenant, "editor-1", a.article_id, 1, "review")
    await kb.set_state(tenant, "lead-1", a.article_id, 1, "published")
    return a.article_id


def test_cjk_runs_become_bigrams_and_words_stay_words() -> None:
    assert tokens.document("환불요청을 Refund!") == "환불 불요 요청 청을 refund"
    assert tokens.query_terms("退款") == [["退款"]]
    assert tokens.query_terms("ＡＢＣ 环境问题") == [["abc"], ["环境", "境问", "问题"]]


async def test_search_finds_cjk_words_inside_longer_text(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kb = KnowledgeBase(sessions)
    refund_ko = await published(kb, REFUND_KO)
    delivery_ko = await published(kb, DELIVERY_KO)
    refund_zh = await published(kb, REFUND_ZH)
    password_zh = await published(kb, PASSWORD_ZH)
    reset_ja = await published(kb, RESET_JA)
    reset_en = await published(kb, RESET_EN)

    async def found(query: str) -> list[str]:
        return [r.article.article_id for r in await kb.search("acme", query)]

    # A Korean word inside a longer phrase: the body has "환불요청을", with its particle.
    assert await found("환불") == [refund_ko]
    assert await found("환불요청") == [refund_ko]
    assert await found("배송") == [delivery_ko]
    # A two-character Chinese word inside a sentence.
    assert await found("退款") == [refund_zh]
    assert await found("密码") == [password_zh]
    assert await found("处理") == [refund_zh]
    assert await found("リセット") == [reset_ja]
    assert set(await found("password")) == {reset_en}
    assert await found("PASSWORD reset") == []  # every word must occur: "reset" does not
    assert await found("解约") == []
    # Words of a phrase must be in order: 요청환불 is not in any article.
    assert await found("요청환불") == []
    hit = (await kb.search("acme", "退款"))[0]
    assert "退款" in hit.snippet and hit.article.title == "退款说明"


async def test_search_is_tenant_scoped_and_finds_only_published_versions(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kb = KnowledgeBase(sessions)
    draft = await kb.create("acme", "editor-1", REFUND_KO)
    assert await kb.search("acme", "환불") == []  # a draft is not found
    await kb.set_state("acme", "editor-1", draft.article_id, 1, "review")
    assert await kb.search("acme", "환불") == []
    await kb.set_state("acme", "lead-1", draft.article_id, 1, "published")
    assert len(await kb.search("acme", "환불")) == 1
    assert await kb.search("globex", "환불") == []
    with pytest.raises(NotFound):
        await kb.get("globex", draft.article_id)

    # A new version is a draft; the published one stays live until the new one is published.
    v2 = await kb.update(
        "acme", "editor-2", draft.article_id, Draft("반품 안내", "반품신청은 7일 이내", "ko")
    )
    assert (v2.version, v2.state, v2.published_version) == (2, "draft", 1)
    assert len(await kb.search("acme", "환불")) == 1 and await kb.search("acme", "반품") == []
    await kb.set_state("acme", "editor-2", draft.article_id, 2, "review")
    done = await kb.set_state("acme", "lead-1", draft.article_id, 2, "published")
    assert done.published_version == 2
    assert await kb.search("acme", "환불") == []
    assert [r.article.version for r in await kb.search("acme", "반품")] == [2]
    assert (await kb.get("acme", draft.article_id, 1)).state == "retired"
    await kb.set_state("acme", "lead-1", draft.article_id, 2, "retired")
    assert await kb.search("acme", "반품") == []


async def test_workflow_rejects_skipping_review(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kb = KnowledgeBase(sessions)
    a = await kb.create("acme", "editor-1", RESET_EN)
    with pytest.raises(FailedPrecondition, match="draft -> published is not allowed"):
        await kb.set_state("acme", "lead-1", a.article_id, 1, "published")
    with pytest.raises(InvalidArgument, match="state"):
        await kb.set_state("acme", "lead-1", a.article_id, 1, "approved")
    with pytest.raises(InvalidArgument, match="title"):
        await kb.create("acme", "editor-1", Draft(" ", "body"))
    with pytest.raises(InvalidArgument, match="query"):
        await kb.search("acme", "  ")


async def test_votes_count_once_per_voter(sessions: async_sessionmaker[AsyncSession]) -> None:
    kb = KnowledgeBase(sessions)
    draft = await kb.create("acme", "editor-1", RESET_EN)
    with pytest.raises(FailedPrecondition, match="not published"):
        await kb.vote("acme", "agent-1", draft.article_id, True)
    article_id = await published(kb, RESET_JA)
    await kb.vote("acme", "agent-1", article_id, True)
    await kb.vote("acme", "agent-1", article_id, True)
    v = await kb.vote("acme", "agent-2", article_id, False)
    assert (v.helpful, v.not_helpful) == (1, 1)
    v = await kb.vote("acme", "agent-2", article_id, True)  # changed their mind
    assert (v.helpful, v.not_helpful) == (2, 0)
    with pytest.raises(NotFound):
        await kb.vote("globex", "agent-3", article_id, True)


async def test_articles_suggested_from_a_case_text(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    kb = KnowledgeBase(sessions)
    refund_ko = await published(kb, REFUND_KO)
    await published(kb, DELIVERY_KO)
    reset_en = await published(kb, RESET_EN)
    await published(kb, REFUND_ZH)
    ko = await kb.suggest("acme", "안녕하세요. 어제 카드로 결제했는데 환불받고 싶습니다.")
    assert ko[0].article.article_id == refund_ko
    en = await kb.suggest("acme", "Hi, I forgot my password and cannot sign in")
    assert en[0].article.article_id == reset_en

"""Knowledge-base authoring in chromium on the real platform: an agent writes an article with an
attachment and proposes it; a supervisor sends it back with a comment, the agent revises it, the
supervisor publishes it; a customer then finds it in the portal and the agent in the inbox's
knowledge search. A resolved case becomes a draft from the inbox's case panel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from playwright.async_api import expect

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

from .conftest import SECRET, Platform
from .test_inbox_browser import sign_in, start_chat

TITLE = "해외 카드 결제 환불 기간"
BODY = "해외 카드로 결제하신 경우 환불은 영업일 기준 7일 안에 처리됩니다."
MORE = " 카드사 사정에 따라 더 걸릴 수 있습니다."
COMMENT = "카드사 사정으로 더 걸릴 수 있다고 덧붙여 주세요"
PDF = b"%PDF-1.4\n% refund form\n" + b"0" * 2048


async def test_write_review_publish_and_find_it(platform: Platform, pages: Any) -> None:
    # The agent writes a draft with a category, tags and a file, and proposes it for review.
    agent = await pages.new(f"{platform.url}/kb")
    await sign_in(agent, "ko-1", "demo-ko-1")
    await expect(agent.get_by_test_id("me")).to_contain_text("상담원")
    await agent.get_by_test_id("kb-new").click()
    await agent.get_by_test_id("ed-title").fill(TITLE)
    await agent.get_by_test_id("ed-language").select_option("ko")
    await agent.get_by_test_id("ed-category").fill("결제")
    await agent.get_by_test_id("ed-tags").fill("환불, 해외")
    await agent.get_by_test_id("ed-body").fill(BODY)
    await agent.get_by_test_id("kb-save").click()
    await expect(agent.get_by_test_id("kb-result")).to_have_text("저장했습니다 (버전 1).")
    await expect(agent.get_by_test_id("ed-state")).to_have_attribute("data-state", "draft")
    await agent.get_by_test_id("kb-file").set_input_files(
        {"name": "환불신청서.pdf", "mimeType": "application/pdf", "buffer": PDF}
    )
    await agent.get_by_test_id("kb-upload").click()
    await expect(agent.get_by_test_id("kb-file-item")).to_contain_text("환불신청서.pdf")
    async with agent.expect_download() as download:
        await agent.get_by_test_id("kb-file-link").click()
    got = await download.value
    assert got.suggested_filename == "환불신청서.pdf"
    assert await asyncio.to_thread(Path(await got.path()).read_bytes) == PDF
    await agent.get_by_test_id("kb-propose").click()
    await expect(agent.get_by_test_id("ed-state")).to_have_attribute("data-state", "review")
    await expect(agent.get_by_test_id("kb-review")).to_be_hidden()  # agents do not review
    await pages.shot(agent, "kb-agent-proposed")

    # The supervisor finds it among the articles in review and sends it back with a comment.
    lead = await pages.new(f"{platform.url}/kb")
    await sign_in(lead, "sup-1", "demo-sup-1")
    await lead.get_by_test_id("f-state").select_option("review")
    in_review = lead.get_by_test_id("kb-article")
    await expect(in_review).to_have_count(1)
    await in_review.click()
    await expect(lead.get_by_test_id("ed-body")).to_have_value(BODY)
    await lead.get_by_test_id("kb-send-back").click()
    await expect(lead.get_by_test_id("kb-error")).to_have_text(
        "반려하려면 검토 의견을 적어 주세요."
    )
    await lead.get_by_test_id("review-comment").fill(COMMENT)
    await pages.shot(lead, "kb-review-send-back")
    await lead.get_by_test_id("kb-send-back").click()
    await expect(lead.get_by_test_id("ed-state")).to_have_attribute("data-state", "draft")
    await expect(in_review).to_have_count(0)

    # The agent reads the comment, revises (version 2) and proposes again.
    await agent.reload()
    await agent.get_by_test_id("kb-article").click()
    await expect(agent.get_by_test_id("ed-comment")).to_contain_text(COMMENT)
    await expect(agent.get_by_test_id("ed-comment")).to_contain_text("sup-1")
    await agent.get_by_test_id("ed-body").fill(BODY + MORE)
    await agent.get_by_test_id("kb-save").click()
    await expect(agent.get_by_test_id("kb-result")).to_have_text("저장했습니다 (버전 2).")
    await expect(agent.get_by_test_id("ed-comment")).to_be_hidden()
    await agent.get_by_test_id("kb-propose").click()
    await expect(agent.get_by_test_id("ed-state")).to_have_attribute("data-state", "review")

    # The supervisor publishes version 2; the history keeps version 1 with its comment.
    await lead.get_by_test_id("f-state").select_option("")
    await lead.get_by_test_id("f-state").select_option("review")
    await expect(in_review).to_have_count(1)
    await in_review.click()
    await expect(lead.get_by_test_id("ed-version")).to_have_text("버전 2")
    await lead.get_by_test_id("kb-publish").click()
    await expect(lead.get_by_test_id("ed-state")).to_have_attribute("data-state", "published")
    versions = lead.get_by_test_id("kb-version")
    await expect(versions).to_have_count(2)
    await expect(versions.first).to_have_attribute("data-state", "published")
    await expect(versions.nth(1).get_by_test_id("kb-version-comment")).to_have_text(COMMENT)
    await expect(lead.get_by_test_id("f-category").locator("option[value=결제]")).to_have_count(1)
    await lead.get_by_test_id("f-category").select_option("결제")
    await lead.get_by_test_id("f-state").select_option("published")
    await expect(lead.get_by_test_id("kb-article")).to_have_count(1)
    await pages.shot(lead, "kb-published-history")
    # The screen in Japanese and Chinese as well.
    await lead.locator("header select.kb-lang").select_option("ja")
    await expect(lead.get_by_test_id("kb-retire")).to_have_text("公開終了")
    await expect(lead.get_by_test_id("ed-state")).to_have_text("公開中")
    await pages.shot(lead, "kb-published-ja")
    await lead.locator("header select.kb-lang").select_option("zh")
    await expect(lead.get_by_test_id("ed-state")).to_have_text("已发布")
    await expect(versions.nth(1).get_by_test_id("state")).to_have_text("草稿")

    # A customer finds it in the portal; the agent in the inbox's knowledge search.
    customer = await pages.new(f"{platform.url}/portal?tenant=demo")
    await customer.get_by_test_id("kb-query").fill("해외 카드")
    await customer.get_by_test_id("kb-search").click()
    hit = customer.get_by_test_id("kb-hit")
    await expect(hit).to_have_count(1)
    await expect(hit).to_contain_text("7일 안에")
    await expect(hit).to_contain_text("카드사 사정에 따라")
    await pages.shot(customer, "kb-portal-found")

    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    await inbox.get_by_test_id("kb-query").fill("해외 카드")
    await inbox.get_by_test_id("kb-query").press("Enter")
    found = inbox.get_by_test_id("kb-hit")
    await expect(found).to_have_count(1)
    await expect(found).to_contain_text(TITLE)
    await pages.shot(inbox, "kb-inbox-found")
    assert pages.errors == []


async def resolved_with_reply(platform: Platform, case_id: str, reply: str) -> None:
    """The case service has the case resolved and the agent's reply recorded."""
    token = auth.mint(SECRET, "demo", "test-lead", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        for _ in range(150):
            c = await stub.GetCase(case_pb2.GetCaseRequest(case_id=case_id))
            replies = [
                "".join(p.text for p in m.parts)
                for k in c.contacts
                for m in k.messages
                if m.author == contact_pb2.AUTHOR_AGENT
            ]
            if c.status == case_pb2.CASE_STATUS_RESOLVED and reply in replies:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"case {case_id} is not resolved with the reply: {c}")


async def test_a_resolved_case_becomes_a_draft(platform: Platform, pages: Any) -> None:
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "비밀번호를 잊었어요")
    await expect(inbox.get_by_test_id("offer")).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("김민지")
    reply = "로그인 화면의 '비밀번호 찾기'를 누르면 재설정 메일이 갑니다."
    box = inbox.get_by_test_id("reply-text")
    await box.fill(reply)
    await box.press("Control+Enter")
    await expect(inbox.get_by_test_id("thread").locator("[data-author=agent]")).to_contain_text(
        reply
    )
    to_kb = inbox.get_by_test_id("case-to-kb")
    await expect(inbox.get_by_test_id("case-ref")).not_to_be_empty()
    await expect(to_kb).to_be_hidden()  # only a resolved case
    await inbox.get_by_test_id("case-status").select_option("resolved")
    await expect(to_kb).to_be_visible()
    await expect(to_kb).to_have_text("지식 베이스 문서로 만들기")
    href = await to_kb.get_attribute("href") or ""
    await resolved_with_reply(platform, unquote(href.split("#case=", 1)[1]), reply)
    await pages.shot(inbox, "kb-case-panel-link")

    async with inbox.expect_popup() as popup:
        await to_kb.click()
    kb = await popup.value
    await expect(kb.get_by_test_id("ed-state")).to_have_attribute("data-state", "draft")
    await expect(kb.get_by_test_id("ed-body")).to_have_value(reply)
    reference = await inbox.get_by_test_id("case-ref").text_content()
    await expect(kb.get_by_test_id("ed-source")).to_have_text(f"케이스 {reference}에서 만든 초안")
    await expect(kb.get_by_test_id("ed-title")).not_to_have_value("")
    await expect(kb.get_by_test_id("kb-propose")).to_be_visible()
    await pages.shot(kb, "kb-draft-from-case")
    assert pages.errors == []

"""The agent inbox in chromium as an agent meets it in the first hour: drafts per conversation,
shortcuts that never type into the reply, offers that leave when they expire or the customer
leaves, a presence a supervisor sets, email delivery status, the rating's score, wrap-up resolving the case, a human and localised case panel, the
UI language's dates and strings, the email SLA of an offline chat message, and knowledge search
across languages."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from playwright.async_api import expect

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.contacts import contact_created
from switchboard.v1 import (
    case_pb2,
    case_pb2_grpc,
    contact_pb2,
    events_pb2,
    router_pb2,
    router_pb2_grpc,
)

from ..conftest import korean_email, running_platform
from .conftest import SECRET, Platform
from .test_inbox_browser import sign_in, start_chat


async def case_of(platform: Platform, contact_id: str) -> case_pb2.Case:
    token = auth.mint(SECRET, "demo", "test-supervisor", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
        return await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))


async def publish_article(platform: Platform, title: str, body: str, language: str) -> None:
    token = auth.mint(SECRET, "demo", "kb-admin", ["admin"])
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        article = await stub.CreateArticle(
            case_pb2.CreateArticleRequest(title=title, body=body, language=language)
        )
        for state in (case_pb2.ARTICLE_STATE_REVIEW, case_pb2.ARTICLE_STATE_PUBLISHED):
            await stub.SetArticleState(
                case_pb2.SetArticleStateRequest(article_id=article.article_id, state=state)
            )


async def agent(pages: Any, platform: Platform, locale: str = "ko-KR") -> Any:
    inbox = await pages.new(f"{platform.url}/inbox", locale=locale)
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    return inbox


async def test_drafts_shortcuts_and_the_rating(platform: Platform, pages: Any) -> None:
    inbox = await agent(pages, platform)
    first = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(first, "김민지", "요금이 두 번 청구되었어요")
    await expect(inbox.get_by_test_id("offer")).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    box = inbox.get_by_test_id("reply-text")
    # Accepting does not put the agent in the reply box: the next A is a shortcut again.
    await expect(box).not_to_be_focused()
    second = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(second, "이서연", "비밀번호를 잊었어요")
    await expect(inbox.get_by_test_id("offer")).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(2)
    await expect(box).to_have_value("")
    await expect(first.locator("#messages li.agent")).to_have_count(0)

    # A draft belongs to its conversation.
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("이서연")
    await box.fill("비밀번호 재설정 링크를 보내 드릴게요")
    await box.press("Escape")
    await inbox.keyboard.press("k")
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("김민지")
    await expect(box).to_have_value("")
    await box.fill("환불해 드릴게요")
    await box.press("Escape")
    await inbox.keyboard.press("j")
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("이서연")
    await expect(box).to_have_value("비밀번호 재설정 링크를 보내 드릴게요")
    await box.press("Control+Enter")
    # The agent's own thread shows the reply once the chat service took it (a refusal would
    # show in the reply error instead), then the customer has it.
    await expect(inbox.get_by_test_id("thread").locator("[data-author=agent]")).to_have_count(1)
    await expect(inbox.get_by_test_id("reply-error")).to_be_hidden()
    await expect(second.locator("#messages li.agent .text")).to_have_text(
        "비밀번호 재설정 링크를 보내 드릴게요"
    )
    await expect(box).to_have_value("")
    await box.press("Escape")
    await inbox.keyboard.press("k")
    await expect(box).to_have_value("환불해 드릴게요")
    await pages.shot(inbox, "inbox-drafts")

    # The customer ends the chat: the agent keeps it, ended and read-only, through wrap-up.
    # The rating shows its score, live and after a reload; the unsent draft stays readable.
    await first.locator("#end").click()
    state = inbox.get_by_test_id("conv-state")
    await expect(state).to_have_attribute("data-state", "ended")
    await expect(box).not_to_be_editable()
    await first.locator("#stars button[data-score='4']").click()
    rated = inbox.get_by_test_id("thread").locator("[data-author=system]")
    await expect(rated).to_contain_text("★★★★☆ 4/5")
    await inbox.reload()
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("김민지")
    await expect(state).to_have_attribute("data-state", "ended")
    await expect(rated).to_contain_text("★★★★☆ 4/5")
    await expect(inbox.get_by_test_id("thread").locator("[data-author=customer]")).to_have_count(1)
    await expect(box).to_have_value("환불해 드릴게요")
    await expect(box).not_to_be_editable()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(2)
    await pages.shot(inbox, "inbox-rated")
    assert pages.errors == []


async def test_expired_offers_leave_and_errors_are_human(platform: Platform, pages: Any) -> None:
    inbox = await agent(pages, platform)
    await inbox.clock.install()
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)

    # An offer left alone disappears when its time is up (30 s for chat); A then takes nothing.
    another = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(another, "이서연", "비밀번호를 잊었어요")
    await expect(offer).to_have_count(1)
    await inbox.clock.run_for(31_000)
    await expect(offer).to_have_count(0)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("desk-error")).to_be_hidden()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    await pages.shot(inbox, "inbox-offer-expired")

    # A refused action (a chat message over the size limit) is said in the UI's language,
    # without the server's internal wording, and goes away.
    box = inbox.get_by_test_id("reply-text")
    await box.fill("가" * 2000)
    await box.press("Control+Enter")
    problem = inbox.get_by_test_id("reply-error")
    await expect(problem).to_be_visible()
    text = await problem.text_content() or ""
    assert re.search(r"[가-힣]", text), text
    assert not re.search(r"[0-9a-f]{12,}|bytes|text", text), text
    await expect(box).to_have_value("가" * 2000)  # the draft is kept
    await pages.shot(inbox, "inbox-error")
    await inbox.clock.run_for(11_000)
    await expect(problem).to_be_hidden()
    assert pages.errors == []


async def test_an_offer_the_customer_left_goes_and_a_supervisors_break_shows(
    platform: Platform, pages: Any
) -> None:
    """What others change reaches the page at once: the customer ends the chat while it is
    offered (the offer leaves, long before its 30 s run out), a supervisor puts the agent on a
    break, then signs the agent out."""
    inbox = await agent(pages, platform)
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_count(1)
    await customer.locator("#end").click()
    await expect(offer).to_have_count(0)

    token = auth.mint(SECRET, "demo", "sup-1", ["supervisor"])
    presence = inbox.get_by_test_id("presence")
    async with sb_grpc.channel(platform.running.router_target, token) as ch:
        router = router_pb2_grpc.RouterServiceStub(ch)
        await router.SetPresence(
            router_pb2.SetPresenceRequest(
                agent_id="ko-1", presence=router_pb2.PRESENCE_BREAK, reason="training"
            )
        )
        await expect(presence).to_have_attribute("data-presence", "break")
        await expect(presence).to_have_value("break:training")
        await pages.shot(inbox, "inbox-break-by-supervisor")
        # Set by someone else, the agent is told who, in the page's language.
        notice = inbox.get_by_test_id("presence-notice")
        await expect(notice).to_contain_text("박지훈 님이 휴식으로 전환했습니다")
        await router.SignOut(router_pb2.SignOutRequest(agent_id="ko-1"))
        await expect(presence).to_have_attribute("data-presence", "offline")
        await expect(notice).to_contain_text("박지훈 님이 로그아웃시켰습니다")
    await presence.select_option("available")
    await expect(notice).to_be_hidden()
    assert pages.errors == []


async def test_an_agent_whose_offers_ran_out_is_told_why_no_more_come(
    nats_url: str, database_url: str, pages: Any
) -> None:
    """After offers in a row run out, the router stops offering the agent contacts (not
    responding); the page says why and how to take them again, in the agent's language."""
    async with running_platform(
        nats_url, database_url, SECRET, ROUTER_ACCEPT_TIMEOUT_SECONDS=1.0
    ) as made:
        bus = await Bus.connect(nats_url, source="test")
        try:
            inbox = await pages.new(f"{made.chat_url}/inbox")
            await sign_in(inbox, "ko-1", "demo-ko-1")
            presence = inbox.get_by_test_id("presence")
            await expect(presence).to_have_attribute("data-presence", "available")
            # Three waiting contacts, each offered to the agent in turn and run out (1 s): three
            # missed in a row (the demo tenant's autopause_after) and the router stops.
            for n in range(3):
                await bus.publish(
                    korean_email(
                        "demo", f"c{n}@example.com", "고객", "문의", "안녕하세요", f"<{n}@x>"
                    )
                )
            await expect(presence).to_have_attribute("data-presence", "not_responding")
            notice = inbox.get_by_test_id("presence-notice")
            await expect(notice).to_contain_text("대기 중")
            await pages.shot(inbox, "inbox-not-responding")
            await presence.select_option("available")
            await expect(notice).to_be_hidden()
        finally:
            await bus.drain()
    assert pages.errors == []


async def test_email_delivery_wrap_up_case_panel_and_language(
    platform: Platform, pages: Any
) -> None:
    # An agent whose browser is en-US works in Korean: dates follow the UI language.
    inbox = await agent(pages, platform, locale="en-US")
    email_id = await platform.email_contact("지난달 요금도 확인 부탁드립니다.")
    await inbox.get_by_test_id("offer-accept").click()
    item = inbox.locator(f"[data-testid=contact-item][data-contact-id='{email_id}']")
    await item.click()
    thread = inbox.get_by_test_id("thread")
    await expect(thread.get_by_test_id("msg").first.locator(".meta")).to_contain_text(
        re.compile("오전|오후")
    )

    # The reply is queued, then the email channel reports it failed: shown as failed, retried.
    box = inbox.get_by_test_id("reply-text")
    await box.fill("확인해 보겠습니다.")
    await inbox.get_by_test_id("reply-send").click()
    reply = thread.locator("[data-author=agent]")
    await expect(reply).to_have_attribute("data-delivery", "queued")
    [command] = await platform.read("outbound.email.send", "OUTBOUND", events_pb2.OutboundEmail)
    await platform.bus.publish(
        events_pb2.DeliveryStatus(
            meta=events.new_meta("demo", contact_pb2.CHANNEL_EMAIL, "email-ingest"),
            command_id=command.meta.event_id,
            contact_id=email_id,
            state=events_pb2.DELIVERY_STATE_FAILED,
            detail="550 5.1.1 mailbox unavailable",
            attempt=3,
        )
    )
    await expect(reply).to_have_attribute("data-delivery", "failed")
    await expect(reply.get_by_test_id("delivery")).to_contain_text("실패")
    await pages.shot(inbox, "inbox-email-failed")
    await reply.get_by_test_id("retry").click()
    await expect(thread.locator("[data-author=agent][data-delivery=queued]")).to_have_count(1)
    commands = await platform.read(
        "outbound.email.send", "OUTBOUND", events_pb2.OutboundEmail, count=2
    )
    assert [c.text for c in commands] == ["확인해 보겠습니다."] * 2
    assert commands[0].meta.event_id != commands[1].meta.event_id

    # The case panel in words, in the UI language.
    sla = inbox.locator("#case-sla li").first
    await expect(sla).to_contain_text(re.compile(r"첫 응답: \d.* / 4\s?시간"))
    assert "first_response" not in (await inbox.locator("#case-sla").text_content() or "")
    assert not re.search(r"\d:\d\d", await inbox.locator("#case-sla").text_content() or "")
    codes = inbox.get_by_test_id("wrapup-code")
    await expect(codes.locator("option[value=follow_up]")).to_have_text("후속 조치")
    await pages.shot(inbox, "inbox-case-ko")

    # Switching the language re-renders every string, in Japanese too.
    await inbox.locator("#desk select.ui-lang").select_option("ja")
    await expect(sla).to_contain_text(re.compile(r"初回応答: 4\s?時間 のうち \d"))
    await expect(codes.locator("option[value=follow_up]")).to_have_text("フォローアップ")
    await expect(inbox.get_by_test_id("conn")).to_have_text("接続済み")
    await expect(reply.get_by_test_id("delivery").first).to_contain_text("送信に失敗")
    await pages.shot(inbox, "inbox-case-ja")
    await inbox.locator("#desk select.ui-lang").select_option("en")
    await expect(sla).to_contain_text(re.compile(r"First response: \d.* of 4 hr"))
    await expect(codes.locator("option[value=follow_up]")).to_have_text("Follow-up")
    await expect(inbox.get_by_test_id("conn")).to_have_text("Connected")
    await expect(reply.get_by_test_id("delivery").first).to_contain_text("Failed")
    await expect(thread.get_by_test_id("msg").first.locator(".meta")).to_contain_text(
        re.compile("AM|PM")
    )
    await pages.shot(inbox, "inbox-case-en")

    # Wrap-up "resolved" resolves the case.
    await codes.select_option("resolved")
    await inbox.get_by_test_id("wrapup").click()
    await expect(item).to_have_count(0)
    for _ in range(100):
        found = await case_of(platform, email_id)
        if found.status == case_pb2.CASE_STATUS_RESOLVED:
            break
        await asyncio.sleep(0.1)
    assert found.status == case_pb2.CASE_STATUS_RESOLVED
    assert pages.errors == []


async def test_offline_message_gets_the_email_sla(platform: Platform, pages: Any) -> None:
    inbox = await agent(pages, platform)
    await inbox.clock.install()
    visitor = uuid.uuid4().hex
    event = contact_created(
        uuid.uuid4().hex,
        tenant="demo",
        channel=contact_pb2.CHANNEL_CHAT,
        email="minji@example.com",
        name="김민지",
        language="ko",
        skills=["billing"],
        subject="offline message",
        text="내일 연락 부탁드립니다",
        conversation_id=f"offline:{visitor}",
        at=datetime.now(UTC),
        source="chat",
    )
    await platform.bus.publish(event)
    await inbox.get_by_test_id("offer-accept").click()
    sla = inbox.get_by_test_id("contact-item").get_by_test_id("sla")
    await expect(inbox.get_by_test_id("reply-via")).to_contain_text("minji@example.com")
    await inbox.clock.run_for(120_000)
    # Two minutes on, the email's day is still running (23 hours and some minutes left).
    await expect(sla).to_contain_text(re.compile("23시간"))
    await expect(sla).not_to_have_class(re.compile(r"\bbad\b"))
    await pages.shot(inbox, "inbox-offline-sla")
    assert pages.errors == []


async def test_knowledge_search_across_languages(platform: Platform, pages: Any) -> None:
    await publish_article(platform, "Refund policy", "A refund takes three days.", "en")
    await publish_article(platform, "환불 안내 refund", "환불은 사흘 걸립니다.", "ko")
    inbox = await agent(pages, platform)
    await platform.email_contact("환불 문의드립니다.")
    await inbox.get_by_test_id("offer-accept").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    await inbox.get_by_test_id("kb-query").fill("refund")
    await inbox.get_by_test_id("kb-query").press("Enter")
    hits = inbox.get_by_test_id("kb-hit")
    await expect(hits).to_have_count(2)
    # The contact's language first, each hit labelled with its language.
    await expect(hits.nth(0)).to_have_attribute("data-language", "ko")
    await expect(hits.nth(1)).to_have_attribute("data-language", "en")
    language = inbox.get_by_test_id("kb-language")
    await expect(language).to_have_value("")
    await language.select_option("en")
    await expect(hits).to_have_count(1)
    await expect(hits.nth(0)).to_have_attribute("data-language", "en")
    await pages.shot(inbox, "inbox-kb")
    assert pages.errors == []

"""End to end in chromium: a Korean customer and the Korean-speaking agent, an email answered from
the same inbox, reloads on both sides, the wallboard's waiting count, and XSS attempts."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from switchboard.v1 import events_pb2

XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'


async def sign_in(page: Any, agent_id: str, password: str) -> None:
    await page.get_by_test_id("login-agent").fill(agent_id)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()


async def start_chat(page: Any, name: str, text: str) -> None:
    await page.locator("#language").select_option("ko")
    await page.locator("#name").fill(name)
    await page.locator("#email").fill("minji@example.com")
    await page.locator("#topic").select_option("billing")
    await page.locator("#prechat button[type=submit]").click()
    await page.locator("#text").fill(text)
    await page.locator("#text").press("Enter")


async def test_korean_chat_email_reload_and_wallboard(platform: Any, pages: Any) -> None:
    # The supervisor's wallboard.
    board = await pages.new(f"{platform.url}/wallboard")
    await pages.shot(board, "wallboard-login")
    await sign_in(board, "sup-1", "demo-sup-1")
    waiting = board.get_by_test_id("wb-waiting")
    await expect(waiting).to_have_text("0")

    # The Korean-speaking agent signs in (UI in Korean) and takes a lunch break.
    inbox = await pages.new(f"{platform.url}/inbox")
    await pages.shot(inbox, "inbox-login")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("me")).to_contain_text("이수진")
    await expect(inbox.locator("html")).to_have_attribute("lang", "ko")
    presence = inbox.get_by_test_id("presence")
    await expect(presence).to_have_attribute("data-presence", "available")
    await presence.select_option("break:lunch")
    await expect(presence).to_have_attribute("data-presence", "break")
    await expect(board.get_by_test_id("wb-state-break")).to_have_text("1")

    # A customer starts a chat in Korean: nobody is available, so it waits.
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    await expect(customer.locator("#messages li.customer .text")).to_have_text(
        "요금이 두 번 청구되었어요"
    )
    await expect(waiting).to_have_text("1")
    await pages.shot(board, "wallboard-waiting")

    # Back from lunch: the offer arrives with a countdown; A accepts it.
    await presence.select_option("available")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_attribute("data-channel", "chat")
    await expect(offer.get_by_test_id("offer-countdown")).to_contain_text("초 남음")
    await pages.shot(inbox, "inbox-offer")
    await inbox.keyboard.press("a")
    await expect(offer).to_have_count(0)
    await expect(waiting).to_have_text("0")
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    thread = inbox.get_by_test_id("thread")
    await expect(thread.locator("[data-author=customer]")).to_contain_text("요금이 두 번")
    await expect(customer.locator("#status")).to_contain_text("이수진")

    # Messages both ways; Ctrl+Enter sends.
    await inbox.get_by_test_id("reply-text").fill("안녕하세요, 확인해 드리겠습니다.")
    await inbox.get_by_test_id("reply-text").press("Control+Enter")
    await expect(customer.locator("#messages li.agent .text")).to_have_text(
        "안녕하세요, 확인해 드리겠습니다."
    )
    await customer.locator("#text").fill("감사합니다")
    await customer.locator("#text").press("Enter")
    await expect(thread.locator("[data-author=customer]")).to_have_count(2)
    await pages.shot(inbox, "inbox-chat")
    await pages.shot(customer, "customer-chat")

    # Reloads on both sides resume the conversation.
    await inbox.reload()
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("김민지")
    await expect(thread.get_by_test_id("msg")).to_have_count(3)
    await customer.reload()
    await expect(customer.locator("#messages li.message")).to_have_count(3)
    await inbox.get_by_test_id("reply-text").fill("환불 처리했습니다.")
    await inbox.get_by_test_id("reply-send").click()
    await expect(customer.locator("#messages li.agent .text").last).to_have_text(
        "환불 처리했습니다."
    )
    await customer.locator("#text").fill("네 확인했어요")
    await customer.locator("#text").press("Enter")
    await expect(thread.locator("[data-author=customer]").last).to_contain_text("네 확인했어요")

    # An email contact in the same inbox: quoted history folded, the reply by OutboundEmail.
    email_id = await platform.email_contact(
        "지난달 요금도 확인 부탁드립니다.\n\n2024년 5월 3일 (금) 고객센터 작성:\n> 문의해 주셔서 감사합니다."
    )
    email_offer = inbox.locator("[data-testid=offer][data-channel=email]")
    await email_offer.get_by_test_id("offer-accept").click()
    item = inbox.locator(f"[data-testid=contact-item][data-contact-id='{email_id}']")
    await expect(item).to_have_attribute("data-channel", "email")
    await expect(item.get_by_test_id("sla")).to_contain_text("SLA")
    await expect(thread).to_contain_text("지난달 요금도")
    quoted = thread.get_by_test_id("quoted")
    await expect(quoted).not_to_have_attribute("open", "")
    await expect(inbox.get_by_test_id("reply-via")).to_contain_text("seojun@example.com")
    await expect(inbox.get_by_test_id("case-ref")).to_have_text(re.compile(r"^C-"))
    # The answer comes from the knowledge base: "/" searches, Insert puts it in the composer.
    await platform.publish_article("요금 확인", "확인 결과 지난달 요금은 정상입니다.")
    await inbox.get_by_test_id("reply-text").press("Escape")
    await inbox.keyboard.press("/")
    await inbox.get_by_test_id("kb-query").fill("요금")
    await inbox.get_by_test_id("kb-query").press("Enter")
    await inbox.get_by_test_id("kb-insert").click()
    await expect(inbox.get_by_test_id("reply-text")).to_have_value(
        "확인 결과 지난달 요금은 정상입니다."
    )
    await inbox.get_by_test_id("reply-send").click()
    await expect(thread.locator("[data-author=agent]")).to_contain_text("지난달 요금은 정상")
    await pages.shot(inbox, "inbox-email")
    [command] = await platform.read("outbound.email.send", "OUTBOUND", events_pb2.OutboundEmail)
    assert list(command.to) == ["seojun@example.com"]
    assert command.contact_id == email_id and command.agent_id == "ko-1"
    assert command.text == "확인 결과 지난달 요금은 정상입니다."
    assert command.case_reference.startswith("C-")
    assert command.subject == "Re: 청구서 문의"

    # J/K move between contacts; the customer rates the chat; the agent wraps it up.
    await inbox.get_by_test_id("reply-text").press("Escape")
    await inbox.keyboard.press("k")
    await expect(inbox.get_by_test_id("conv-name")).to_have_text("김민지")
    await customer.locator("#end").click()
    await customer.locator("#stars button[data-score='5']").click()
    await expect(customer.locator("#rate-done")).to_be_visible()
    await expect(thread.locator("[data-author=system]")).to_contain_text("5/5")
    await pages.shot(customer, "customer-rated")
    [rated] = await platform.read("contact.demo.chat.rated", "EVENTS", events_pb2.SatisfactionRated)
    assert rated.score == 5
    await inbox.get_by_test_id("wrapup-code").select_option("resolved")
    await inbox.get_by_test_id("wrapup").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    # The customer's end (customer left), then the agent's wrap-up.
    left, ended = await platform.read(
        "contact.demo.chat.ended", "EVENTS", events_pb2.ContactEnded, count=2
    )
    assert left.reason == events_pb2.END_REASON_CUSTOMER_LEFT
    assert ended.wrap_up_code == "resolved" and ended.agent_id == "ko-1"
    await pages.shot(board, "wallboard")
    assert pages.errors == []


async def test_customer_script_is_shown_as_text(platform: Any, pages: Any) -> None:
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, XSS, XSS)

    await inbox.get_by_test_id("offer").get_by_test_id("offer-accept").click()
    text = inbox.get_by_test_id("thread").get_by_test_id("msg-text")
    await expect(text).to_have_text(XSS)
    await expect(inbox.get_by_test_id("conv-name")).to_have_text(XSS)
    await expect(inbox.get_by_test_id("contact-item").locator(".who")).to_have_text(XSS)
    await inbox.get_by_test_id("reply-text").fill(XSS)
    await inbox.get_by_test_id("reply-send").click()
    await expect(customer.locator("#messages li.agent .text")).to_have_text(XSS)
    await pages.shot(inbox, "inbox-xss")

    for page in (inbox, customer):
        assert await page.evaluate("window.__xss") is None
        assert await page.locator("#thread img, #messages img, #contact-list img").count() == 0
    response = await inbox.request.get(f"{platform.url}/inbox")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert pages.errors == []

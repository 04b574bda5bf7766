"""The customer's web-chat widget in chromium on the real platform: the offline form in every
language, the language kept across reloads, ending a chat (closed for the agent too), the rating
panel only after the end and once per chat, the file button, and the estimated wait."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from switchboard.v1 import events_pb2

from ..conftest import Customer


async def sign_in(page: Any, agent_id: str, password: str) -> None:
    await page.get_by_test_id("login-agent").fill(agent_id)
    await page.get_by_test_id("login-password").fill(password)
    await page.get_by_test_id("login-submit").click()


async def prechat(page: Any, language: str, name: str, email: str = "") -> None:
    await page.locator("#language").select_option(language)
    await page.locator("#name").fill(name)
    await page.locator("#email").fill(email)
    await page.locator("#prechat button[type=submit]").click()


async def say(page: Any, text: str) -> None:
    await page.locator("#text").fill(text)
    await page.locator("#text").press("Enter")


async def agent_on_break(platform: Any, pages: Any) -> Any:
    """The Korean-speaking agent, signed in and on a break (so chats wait in the queue)."""
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    presence = inbox.get_by_test_id("presence")
    await expect(presence).to_have_attribute("data-presence", "available")
    await presence.select_option("break:lunch")
    await expect(presence).to_have_attribute("data-presence", "break")
    return inbox


async def accept(inbox: Any) -> None:
    await inbox.get_by_test_id("presence").select_option("available")
    await inbox.get_by_test_id("offer").get_by_test_id("offer-accept").click()
    await expect(inbox.get_by_test_id("offer")).to_have_count(0)


OFFLINE_STRINGS = {
    "ko": ("이메일", "돌아가기", "남기실 메시지"),
    "zh": ("电子邮箱", "返回", "留言内容"),
    "en": ("Email", "Back", "Your message"),
    "ja": ("メールアドレス", "戻る", "メッセージ"),
}


async def test_offline_form_has_email_and_back_in_every_language(platform: Any, pages: Any) -> None:
    # Nobody is signed in: every language gets the offline form.
    customer = await pages.new(f"{platform.url}/?tenant=demo", locale="en-US")
    for language, (email, back, text) in OFFLINE_STRINGS.items():
        await prechat(customer, language, "김민지")
        offline = customer.locator("#offline")
        await expect(offline).to_be_visible()
        await expect(offline.locator("#offline-email")).to_be_visible()
        await expect(offline.get_by_text(email, exact=False).first).to_be_visible()
        await expect(offline.get_by_text(text, exact=False).first).to_be_visible()
        await pages.shot(customer, f"widget-offline-{language}")
        await offline.get_by_role("button", name=back).click()
        await expect(customer.locator("#prechat")).to_be_visible()
        await expect(offline).to_be_hidden()

    # Korean, no email before: the offline form asks for it in its own field.
    await prechat(customer, "ko", "김민지")
    offline = customer.locator("#offline")
    await offline.locator("#offline-text").fill("내일 연락 부탁드립니다")
    await offline.get_by_role("button", name="메시지 남기기").click()
    await expect(customer.locator("#offline-error")).to_have_text("이메일 주소를 입력해 주세요.")
    await offline.locator("#offline-email").fill("minji@example.com")
    await offline.get_by_role("button", name="메시지 남기기").click()
    await expect(offline).to_contain_text("감사합니다. 이메일로 답변드리겠습니다.")
    [created] = await platform.read(
        "contact.demo.chat.created", "EVENTS", events_pb2.ContactCreated
    )
    assert created.contact.subject == "offline message"
    assert "minji@example.com" in [i.value for i in created.contact.identities]
    await pages.shot(customer, "widget-offline-sent")
    assert pages.errors == []


async def test_language_is_kept_across_reloads(platform: Any, pages: Any) -> None:
    customer = await pages.new(f"{platform.url}/?tenant=demo", locale="en-US")
    await expect(customer.locator("html")).to_have_attribute("lang", "en")
    await customer.locator("#language").select_option("ko")
    await expect(customer.locator("#prechat button[type=submit]")).to_have_text("채팅 시작")
    await customer.reload()
    await expect(customer.locator("html")).to_have_attribute("lang", "ko")
    await expect(customer.locator("#language")).to_have_value("ko")
    await expect(customer.locator("#prechat button[type=submit]")).to_have_text("채팅 시작")
    # The address carries it too: a copied link opens in the same language.
    assert re.search(r"[?&]lang=ko\b", customer.url)
    # The offline form keeps it after a reload as well.
    await prechat(customer, "zh", "王芳")
    await expect(customer.locator("#offline")).to_be_visible()
    await customer.reload()
    await expect(customer.locator("html")).to_have_attribute("lang", "zh")
    await expect(customer.locator("#prechat button[type=submit]")).to_have_text("开始聊天")
    assert pages.errors == []


async def test_end_chat_closes_it_for_the_agent_and_each_chat_is_rated(
    platform: Any, pages: Any
) -> None:
    inbox = await agent_on_break(platform, pages)
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    closing = customer.locator("#closing")

    # Queued: no rating panel yet.
    await prechat(customer, "ko", "김민지", "minji@example.com")
    await say(customer, "요금이 두 번 청구되었어요")
    await expect(customer.locator("#status")).to_contain_text("대기 순서 1번째")
    await expect(customer.locator("#status")).not_to_contain_text("약")  # nothing answered yet
    await expect(closing).to_be_hidden()
    await pages.shot(customer, "widget-queued")

    # Assigned, then the customer ends the chat.
    await accept(inbox)
    await expect(customer.locator("#status")).to_contain_text("이수진")
    await expect(closing).to_be_hidden()
    state = inbox.get_by_test_id("conv-state")
    await expect(state).to_have_attribute("data-state", "active")
    await customer.get_by_role("button", name="상담 종료").click()

    # Ended on the server: the agent's inbox shows it, the bus has ContactEnded.
    await expect(state).to_have_attribute("data-state", "ended")
    [ended] = await platform.read("contact.demo.chat.ended", "EVENTS", events_pb2.ContactEnded)
    assert ended.reason == events_pb2.END_REASON_CUSTOMER_LEFT
    assert ended.agent_id == "ko-1"
    await pages.shot(inbox, "widget-ended-inbox")

    # The widget: the ended state and a compact rating panel.
    await expect(customer.locator("#status")).to_contain_text("상담이 종료되었습니다")
    await expect(closing).to_be_visible()
    await expect(customer.get_by_role("button", name="상담 종료")).to_be_hidden()
    panel = await closing.bounding_box()
    widget = await customer.locator("main.chat").bounding_box()
    assert panel is not None and widget is not None
    assert panel["height"] <= widget["height"] / 5, (panel, widget)
    await pages.shot(customer, "widget-ended")
    await closing.get_by_role("button", name="4").click()
    await expect(customer.locator("#rate-done")).to_be_visible()
    [rated] = await platform.read("contact.demo.chat.rated", "EVENTS", events_pb2.SatisfactionRated)
    assert rated.score == 4 and rated.contact_id == ended.contact_id
    await inbox.get_by_test_id("wrapup-code").select_option("resolved")
    await inbox.get_by_test_id("wrapup").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(0)

    # The next chat starts clean and can be rated in turn.
    await say(customer, "하나 더 여쭤볼게요")
    await expect(customer.locator("#status")).not_to_contain_text("종료")
    await expect(closing).to_be_hidden()
    await expect(customer.locator("#rate-done")).to_be_hidden()
    await inbox.get_by_test_id("offer").get_by_test_id("offer-accept").click()
    await expect(customer.locator("#status")).to_contain_text("이수진")
    await customer.get_by_role("button", name="상담 종료").click()
    await expect(closing).to_be_visible()
    await expect(customer.locator("#rate-done")).to_be_hidden()
    await closing.get_by_role("button", name="5").click()
    await expect(customer.locator("#rate-done")).to_be_visible()
    both = await platform.read(
        "contact.demo.chat.rated", "EVENTS", events_pb2.SatisfactionRated, count=2
    )
    assert [r.score for r in both] == [4, 5]
    assert both[1].contact_id != ended.contact_id
    await pages.shot(customer, "widget-rated-again")
    assert pages.errors == []


async def test_end_while_queued_withdraws_the_contact(platform: Any, pages: Any) -> None:
    await agent_on_break(platform, pages)
    board = await pages.new(f"{platform.url}/wallboard")
    await sign_in(board, "sup-1", "demo-sup-1")
    waiting = board.get_by_test_id("wb-waiting")
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await prechat(customer, "ko", "김민지")
    await say(customer, "기다리다가 그만둘게요")
    await expect(waiting).to_have_text("1")
    await customer.get_by_role("button", name="상담 종료").click()
    await expect(customer.locator("#status")).to_contain_text("상담이 종료되었습니다")
    await expect(waiting).to_have_text("0")
    [abandoned] = await platform.read(
        "contact.demo.chat.abandoned", "EVENTS", events_pb2.ContactAbandoned
    )
    assert abandoned.queue == "general"
    assert pages.errors == []


async def test_file_button_matches_the_widget(platform: Any, pages: Any, tmp_path: Path) -> None:
    await agent_on_break(platform, pages)
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await prechat(customer, "ko", "김민지")
    await say(customer, "영수증 사진을 보낼게요")
    await expect(customer.locator("#messages li.customer")).to_have_count(1)

    # A button like the widget's others, labelled in the customer's language.
    attach = customer.get_by_role("button", name="파일 첨부")
    await expect(attach).to_be_visible()
    send = customer.get_by_role("button", name="보내기")
    style = "e => { const s = getComputedStyle(e); return [s.backgroundColor, s.color, s.borderRadius]; }"
    assert await attach.evaluate(style) == await send.evaluate(style)
    box, send_box = await attach.bounding_box(), await send.bounding_box()
    assert box is not None and send_box is not None
    assert abs(box["height"] - send_box["height"]) <= 2, (box, send_box)
    await attach.focus()
    await expect(attach).to_be_focused()
    await pages.shot(customer, "widget-file-button")

    # It opens the file chooser, and the file is sent.
    receipt = tmp_path / "receipt.txt"
    receipt.write_text("영수증 2024-05\n", encoding="utf-8")
    async with customer.expect_file_chooser() as chooser:
        await attach.click()
    await (await chooser.value).set_files(str(receipt))
    await expect(customer.locator("#messages li.customer a")).to_have_text("receipt.txt")
    assert pages.errors == []


async def position_of(customer: Customer) -> dict[str, Any]:
    reply = await customer.sio.call("position", {}, namespace="/customer", timeout=15)
    assert reply["ok"], reply
    status: dict[str, Any] = reply["status"]
    return status


async def waiting_customer(platform: Any, name: str) -> Customer:
    customer = Customer()
    await customer.connect(platform.url, "demo", name=name, language="ko", topic="billing")
    await customer.say("기다릴게요")
    await customer.wait_status("queued")
    return customer


async def test_queue_position_and_estimated_wait(platform: Any, pages: Any) -> None:
    inbox = await agent_on_break(platform, pages)
    presence = inbox.get_by_test_id("presence")
    customers: list[Customer] = []

    # No chat answered yet: nothing measured, so the position alone.
    customers.append(await waiting_customer(platform, "손님 1"))
    status = await position_of(customers[0])
    assert status["position"] == 1 and "estimated_wait_seconds" not in status, status

    # One chat answered, but the only agent is on a break: the queue does not move, no estimate.
    await accept(inbox)
    await presence.select_option("break:lunch")
    await expect(presence).to_have_attribute("data-presence", "break")
    customers.append(await waiting_customer(platform, "손님 2"))
    status = await position_of(customers[1])
    assert status["position"] == 1 and "estimated_wait_seconds" not in status, status

    # The agent at work with a full desk (three chats): the measured speed gives an estimate.
    customers.append(await waiting_customer(platform, "손님 3"))
    await presence.select_option("available")
    offers, items = inbox.get_by_test_id("offer"), inbox.get_by_test_id("contact-item")
    for count in (2, 3):
        await offers.first.get_by_test_id("offer-accept").click()
        await expect(items).to_have_count(count)
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await prechat(customer, "ko", "김민지")
    await say(customer, "기다릴게요")
    await expect(customer.locator("#status")).to_contain_text(
        re.compile(r"대기 순서 1번째입니다 \(약 \d+분\)")
    )
    await pages.shot(customer, "widget-queue-wait")
    customers.append(await waiting_customer(platform, "손님 4"))
    status = await position_of(customers[-1])
    assert status["position"] == 2 and status["estimated_wait_seconds"] > 0, status
    for c in customers:
        await c.sio.disconnect()
    assert pages.errors == []

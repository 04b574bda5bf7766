"""The admin console in a real browser on the real platform: an administrator adds a Korean agent
with skills and a password (a mistake first, refused with the field and the reason); the new
agent signs in to the inbox at once and takes a Korean chat from a customer; the preview names
them; the change log says who did it. Screenshots: admin-*.png."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from .test_inbox_browser import sign_in, start_chat


async def test_an_admin_adds_a_korean_agent_who_then_takes_a_korean_chat(
    platform: Any, pages: Any
) -> None:
    admin = await pages.new(f"{platform.url}/admin")
    await pages.shot(admin, "admin-login")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await expect(admin.get_by_test_id("me")).to_contain_text("정다은")
    await expect(admin.locator("html")).to_have_attribute("lang", "ko")
    rows = admin.get_by_test_id("agent-rows")
    await expect(rows.locator("[data-agent=ko-1]")).to_contain_text("이수진")
    await expect(rows.locator("[data-agent=ko-2]")).to_have_count(0)

    # The new agent's form; a proficiency of 9 is refused as the agents file would refuse it.
    await admin.get_by_test_id("add-agent").click()
    form = admin.get_by_test_id("agent-form")
    await form.get_by_test_id("f-id").fill("ko-2")
    await form.get_by_test_id("f-name").fill("김하늘")
    await form.get_by_test_id("f-password").fill("hanul-pass-1")
    await form.get_by_test_id("f-ui").select_option("ko")
    await form.get_by_test_id("f-languages").fill("ko:9, en:2")
    await form.get_by_test_id("f-skills").fill("billing:4, technical:3")
    await form.get_by_test_id("f-capacity").fill("chat:2")
    await form.get_by_test_id("f-save").click()
    await expect(form.get_by_test_id("f-error")).to_have_text(
        re.compile(r"^tenants\.demo\.agents\[\d+\]\.languages\.ko: must be an integer from 1 to 5$")
    )
    await pages.shot(admin, "admin-agent-refused")
    await form.get_by_test_id("f-languages").fill("ko:5, en:2")
    await form.get_by_test_id("f-save").click()
    await expect(form).to_be_hidden()
    added = rows.locator("[data-agent=ko-2]")
    await expect(added).to_contain_text("김하늘")
    await expect(added).to_contain_text("billing:4, technical:3")
    await expect(added).to_contain_text("chat:2")
    await expect(admin.get_by_test_id("notice")).to_contain_text("ko-2")
    await pages.shot(admin, "admin-agent-added")

    # The new agent signs in to the inbox at once (no restart), in Korean.
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-2", "hanul-pass-1")
    await expect(inbox.get_by_test_id("me")).to_contain_text("김하늘")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")

    # The preview: a Korean billing chat would go to the new agent; the others say why not.
    await admin.get_by_test_id("tab-routing").click()
    await expect(admin.get_by_test_id("routing-yaml")).to_have_value(
        re.compile(r"- name: general\n")
    )
    await admin.get_by_test_id("p-language").fill("ko")
    await admin.get_by_test_id("p-skills").fill("billing")
    await admin.get_by_test_id("p-run").click()
    await expect(admin.get_by_test_id("preview-summary")).to_contain_text("ko-2")
    candidate = admin.get_by_test_id("preview-candidate").first
    await expect(candidate).to_have_attribute("data-agent", "ko-2")
    await pages.shot(admin, "admin-preview")

    # A customer's Korean chat is offered to the new agent, who takes it.
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_attribute("data-channel", "chat")
    await offer.get_by_test_id("offer-accept").click()
    thread = inbox.get_by_test_id("thread")
    await expect(thread.locator("[data-author=customer]")).to_contain_text("요금이 두 번")
    await expect(customer.locator("#status")).to_contain_text("김하늘")
    await inbox.get_by_test_id("reply-text").fill("안녕하세요, 김하늘입니다.")
    await inbox.get_by_test_id("reply-send").click()
    await expect(customer.locator("#messages li.agent .text")).to_have_text(
        "안녕하세요, 김하늘입니다."
    )
    await pages.shot(inbox, "admin-new-agent-chat")

    # A skill given to the signed-in agent reaches the router at once: no new sign-in.
    async def preview(skill: str) -> Any:
        await admin.get_by_test_id("p-skills").fill(skill)
        await admin.get_by_test_id("p-run").click()
        return admin.get_by_test_id("preview-rows").locator("[data-agent=ko-2]")

    ko2 = await preview("account")
    await expect(ko2).to_have_attribute("data-testid", "preview-excluded")
    await expect(ko2).to_contain_text("lacks skill account")
    await admin.get_by_test_id("tab-agents").click()
    await admin.get_by_test_id("edit-ko-2").click()
    await form.get_by_test_id("f-skills").fill("billing:4, technical:3, account:5")
    await form.get_by_test_id("f-save").click()
    await expect(added).to_contain_text("account:5")
    await admin.get_by_test_id("tab-routing").click()
    ko2 = await preview("account")
    await expect(ko2).to_have_attribute("data-testid", "preview-candidate")

    # The change log: who added whom; the console also speaks Japanese.
    await admin.get_by_test_id("tab-audit").click()
    entries = admin.get_by_test_id("audit-row")
    await expect(entries).to_have_count(2)
    await expect(entries.first).to_contain_text("상담원 편집")
    await expect(entries.first).to_contain_text("account:5")
    entry = entries.last
    await expect(entry).to_contain_text("admin-1")
    await expect(entry).to_contain_text("ko-2")
    await expect(entry).to_contain_text("상담원 추가")
    await admin.locator("header select.ui-lang").select_option("ja")
    await expect(entry).to_contain_text("オペレーター追加")
    await pages.shot(admin, "admin-audit-ja")

    # Disabled: signed out of the router (no more offers) and refused at sign-in.
    await admin.locator("header select.ui-lang").select_option("ko")
    await admin.get_by_test_id("tab-agents").click()
    await admin.get_by_test_id("toggle-ko-2").click()
    await expect(added.get_by_test_id("agent-status")).to_have_text("비활성")
    await admin.get_by_test_id("tab-routing").click()
    ko2 = await preview("billing")
    await expect(ko2).to_have_attribute("data-testid", "preview-excluded")
    again = await pages.new(f"{platform.url}/inbox")
    await sign_in(again, "ko-2", "hanul-pass-1")
    await expect(again.get_by_test_id("login-error")).to_be_visible()
    assert pages.errors == []


async def test_a_supervisor_sees_the_console_but_cannot_change_it(
    platform: Any, pages: Any
) -> None:
    page = await pages.new(f"{platform.url}/admin", locale="en-US")
    await sign_in(page, "sup-1", "demo-sup-1")
    await expect(page.get_by_test_id("read-only")).to_be_visible()
    await expect(page.get_by_test_id("agent-rows").locator("[data-agent=ko-1]")).to_be_visible()
    await expect(page.get_by_test_id("add-agent")).to_be_hidden()
    await expect(page.get_by_test_id("edit-ko-1")).to_have_count(0)
    await page.get_by_test_id("tab-routing").click()
    await expect(page.get_by_test_id("routing-apply")).to_be_hidden()
    await pages.shot(page, "admin-supervisor")

    agent = await pages.new(f"{platform.url}/admin", locale="en-US")
    await sign_in(agent, "ko-1", "demo-ko-1")
    await expect(agent.get_by_test_id("login-error")).to_be_visible()
    assert pages.errors == []

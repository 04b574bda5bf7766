"""The admin console's tenant settings in a real browser on the real platform: an administrator
adds a wrap-up code and a holiday; a policy with a mistake is refused with its line and field;
the agent's inbox offers the new code at its next sign-in and wraps a chat up with it; the case
service counts the holiday at once. Screenshots: admin-settings-*.png."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from playwright.async_api import expect

from switchboard.v1 import events_pb2

from .test_inbox_browser import sign_in, start_chat

CODES = "resolved, follow_up, escalated, no_answer, callback_promised"


async def test_an_admin_adds_a_wrap_up_code_and_a_holiday(platform: Any, pages: Any) -> None:
    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    codes = admin.get_by_test_id("codes")
    await expect(codes).to_have_value(re.compile(r"^resolved, "))

    # A code the agents file would refuse, then the new code.
    await codes.fill(CODES + ", Call Back")
    await admin.get_by_test_id("codes-save").click()
    await expect(admin.get_by_test_id("codes-error")).to_have_text(
        re.compile(r"^tenants\.demo\.wrap_up_codes\[5\]: ")
    )
    await codes.fill(CODES)
    await admin.get_by_test_id("codes-save").click()
    await expect(admin.get_by_test_id("notice")).to_have_text("처리 코드가 저장되었습니다.")
    await expect(codes).to_have_value(CODES)
    await pages.shot(admin, "admin-settings-codes")

    # A holiday in the tenant's business hours (the case service's policies).
    await admin.get_by_test_id("tab-policy").click()
    await expect(admin.get_by_test_id("h-timezone")).to_have_value("Asia/Seoul")
    await expect(admin.get_by_test_id("policy-version")).to_contain_text("0")
    await admin.get_by_test_id("h-new-holiday").fill("2026-10-09")
    await admin.get_by_test_id("h-add").click()
    await admin.get_by_test_id("h-save").click()
    await expect(admin.get_by_test_id("notice")).to_have_text("운영 시간이 저장되었습니다.")
    holidays = admin.get_by_test_id("h-holidays")
    await expect(holidays.locator("option[value='2026-10-09']")).to_have_count(1)
    await expect(admin.get_by_test_id("policy-yaml")).to_have_value(re.compile("2026-10-09"))
    case_policies = platform.running.case.policies
    calendar = case_policies.business_calendar("demo")
    assert calendar is not None and date(2026, 10, 9) in calendar.holidays
    await pages.shot(admin, "admin-settings-holiday")

    # The SLA policies as YAML: a mistake is refused with the line and the entry.
    editor = admin.get_by_test_id("policy-yaml")
    text = await editor.input_value()
    await editor.fill(text.replace("first_response: 4h", "first_response: soon", 1))
    await admin.get_by_test_id("policy-check").click()
    result = admin.get_by_test_id("policy-result")
    await expect(result).to_have_attribute("data-state", "bad")
    await expect(result).to_have_text(
        re.compile(r"^ApplyTenantPolicy:\d+: sla_policies\[1\]\.first_response: 'soon' is not")
    )
    await pages.shot(admin, "admin-settings-policy-refused")

    # The agent's inbox offers the new code; a chat is wrapped up with it.
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("me")).to_contain_text("이수진")
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_attribute("data-channel", "chat")
    await offer.get_by_test_id("offer-accept").click()
    thread = inbox.get_by_test_id("thread")
    await expect(thread.locator("[data-author=customer]")).to_contain_text("요금이 두 번")
    choice = inbox.get_by_test_id("wrapup-code")
    await expect(choice.locator("option[value=callback_promised]")).to_have_count(1)
    await customer.locator("#end").click()
    await choice.select_option("callback_promised")
    await pages.shot(inbox, "admin-settings-inbox-code")
    await inbox.get_by_test_id("wrapup").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(0)
    left, ended = await platform.read(
        "contact.demo.chat.ended", "EVENTS", events_pb2.ContactEnded, count=2
    )
    assert left.reason == events_pb2.END_REASON_CUSTOMER_LEFT
    assert ended.wrap_up_code == "callback_promised" and ended.agent_id == "ko-1"

    # The change log has both changes.
    await admin.get_by_test_id("tab-audit").click()
    entries = admin.get_by_test_id("audit-row")
    await expect(entries).to_have_count(2)
    await expect(entries.first).to_contain_text("운영 시간/SLA 변경")
    await expect(entries.first).to_contain_text("2026-10-09")
    await expect(entries.last).to_contain_text("처리 코드 변경")
    await expect(entries.last).to_contain_text("callback_promised")
    await pages.shot(admin, "admin-settings-audit")
    assert pages.errors == []


async def test_a_supervisor_sees_the_settings_but_cannot_change_them(
    platform: Any, pages: Any
) -> None:
    page = await pages.new(f"{platform.url}/admin", locale="en-US")
    await sign_in(page, "sup-1", "demo-sup-1")
    await expect(page.get_by_test_id("codes")).to_have_value(re.compile(r"^resolved, "))
    await expect(page.get_by_test_id("codes-save")).to_be_hidden()
    await page.get_by_test_id("tab-policy").click()
    await expect(page.get_by_test_id("h-timezone")).to_have_value("Asia/Seoul")
    await expect(page.get_by_test_id("policy-yaml")).to_have_value(re.compile("demo-standard"))
    for hidden in ("h-save", "h-add", "policy-check", "policy-apply"):
        await expect(page.get_by_test_id(hidden)).to_be_hidden()
    await page.get_by_test_id("tab-routing").click()
    await expect(page.get_by_test_id("languages")).to_have_value("ko, zh, en, ja")
    await expect(page.get_by_test_id("languages-save")).to_be_hidden()
    await page.get_by_test_id("tab-policy").click()
    # The server refuses it too, whatever the page shows.
    status = await page.evaluate(
        """async () => {
            const token = JSON.parse(sessionStorage.getItem("sb-admin")).token;
            const r = await fetch("api/admin/case-policy", {method: "POST",
                headers: {Authorization: "Bearer " + token, "Content-Type": "application/json"},
                body: JSON.stringify({yaml: "{}\\n"})});
            return r.status;
        }"""
    )
    assert status == 403
    await pages.shot(page, "admin-settings-supervisor")

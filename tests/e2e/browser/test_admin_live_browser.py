"""The admin console's changes reach a signed-in agent's inbox live, in a real browser on the real
platform: a wrap-up code added, and the agent's role and languages changed, show in the open desk
without a reload or a new sign-in. Screenshots: admin-live-*.png."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from .test_inbox_browser import sign_in

CODES = "resolved, follow_up, escalated, no_answer, callback_promised"


async def test_a_signed_in_agent_gets_new_codes_role_and_languages_live(
    platform: Any, pages: Any
) -> None:
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("me")).to_contain_text("이수진")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    choice = inbox.get_by_test_id("wrapup-code")
    await expect(choice.locator("option[value=resolved]")).to_have_count(1)
    await expect(choice.locator("option[value=callback_promised]")).to_have_count(0)
    profile = inbox.get_by_test_id("my-profile")
    await expect(profile).to_contain_text("상담원")
    await expect(profile).to_contain_text("ko:5")
    await expect(profile).not_to_contain_text("ja:2")

    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await admin.get_by_test_id("codes").fill(CODES)
    await admin.get_by_test_id("codes-save").click()
    await expect(admin.get_by_test_id("notice")).to_have_text("처리 코드가 저장되었습니다.")

    # The open desk offers the new code: no reload, no new sign-in.
    await expect(choice.locator("option[value=callback_promised]")).to_have_count(1)
    await pages.shot(inbox, "admin-live-code")

    # A new role and a new language show in the desk, which stays signed in.
    await admin.get_by_test_id("edit-ko-1").click()
    form = admin.get_by_test_id("agent-form")
    await form.get_by_test_id("f-role").select_option("team_lead")
    await form.get_by_test_id("f-languages").fill("ko:5, en:3, ja:2")
    await form.get_by_test_id("f-save").click()
    await expect(form).to_be_hidden()
    await expect(profile).to_contain_text("팀장")
    await expect(profile).to_contain_text("ja:2")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    await expect(choice.locator("option[value=callback_promised]")).to_have_count(1)
    await pages.shot(inbox, "admin-live-profile")

    # What the desk keeps for a reload is the new profile too.
    await inbox.reload()
    await expect(inbox.get_by_test_id("my-profile")).to_contain_text("팀장")
    await expect(
        inbox.get_by_test_id("wrapup-code").locator("option[value=callback_promised]")
    ).to_have_count(1)
    assert pages.errors == []

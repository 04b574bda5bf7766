"""QA forms in the admin console, in a real browser on the real platform: an administrator opens
the tenant's default form, changes an item's text and weight, makes one fatal, adds one (a
mistake first, refused with the field), saves it as version 2, looks back at version 1, and the
change log has it; a supervisor may change forms too; the console speaks Japanese there.
Screenshots: admin-qa-*.png."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from playwright.async_api import expect

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc

from .test_inbox_browser import sign_in


async def test_an_admin_edits_a_qa_form_as_a_form_and_saves_a_new_version(
    platform: Any, pages: Any
) -> None:
    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await admin.get_by_test_id("tab-qa").click()
    row = admin.get_by_test_id("qa-rows").locator("[data-form=default]")
    await expect(row.get_by_test_id("qa-row-version")).to_have_text("버전 1")
    await admin.get_by_test_id("open-qa-default").click()
    editor = admin.get_by_test_id("qa-editor")
    items = editor.get_by_test_id("qa-item")
    await expect(items).to_have_count(9)
    await expect(editor.get_by_test_id("qa-title")).to_have_value("Contact quality")

    await editor.get_by_test_id("qa-title").fill("상담 품질")
    greeting = items.nth(3)
    await expect(greeting.get_by_test_id("qa-item-id")).to_have_value("greeting")
    await greeting.get_by_test_id("qa-item-text").fill("첫인사와 자기소개")
    await greeting.get_by_test_id("qa-item-weight").fill("3")
    await items.nth(8).get_by_test_id("qa-item-fatal").check()
    await items.nth(7).get_by_test_id("qa-item-remove").click()
    await expect(items).to_have_count(8)
    await editor.get_by_test_id("qa-add-item").click()
    added = items.last
    await added.get_by_test_id("qa-item-id").fill("두번째 인사")  # not an item id
    await added.get_by_test_id("qa-item-text").fill("통화 종료 전 추가 문의 확인")
    await editor.get_by_test_id("qa-save").click()
    await expect(editor.get_by_test_id("qa-error")).to_have_text(re.compile(r"items\[8\]\.id"))
    await pages.shot(admin, "admin-qa-refused")
    await added.get_by_test_id("qa-item-id").fill("anything_else")
    await editor.get_by_test_id("qa-save").click()
    await expect(editor).to_be_hidden()
    await expect(admin.get_by_test_id("notice")).to_contain_text("default")
    await expect(row.get_by_test_id("qa-row-version")).to_have_text("버전 2")

    # The new version as saved, and the old one still there to look at.
    await admin.get_by_test_id("open-qa-default").click()
    await expect(items).to_have_count(9)
    await expect(items.nth(3).get_by_test_id("qa-item-text")).to_have_value("첫인사와 자기소개")
    await expect(items.nth(3).get_by_test_id("qa-item-weight")).to_have_value("3")
    await expect(items.nth(7).get_by_test_id("qa-item-fatal")).to_be_checked()
    await expect(items.nth(8).get_by_test_id("qa-item-id")).to_have_value("anything_else")
    await pages.shot(admin, "admin-qa-version-2")
    await editor.get_by_test_id("qa-version").select_option("1")
    await expect(editor.get_by_test_id("qa-title")).to_have_value("Contact quality")
    await expect(editor.get_by_test_id("qa-old")).to_be_visible()
    await expect(items.nth(3).get_by_test_id("qa-item-weight")).to_have_value("1")
    # The case service scores with it (what the QA screen offers).
    token = auth.mint(platform.running.secret, "demo", "qa-1", ["qa"])
    async with sb_grpc.channel(platform.running.case_target, token) as ch:
        form = await case_pb2_grpc.CaseServiceStub(ch).GetQaForm(
            case_pb2.GetQaFormRequest(form_id="default")
        )
    assert form.version == 2 and form.title == "상담 품질"
    assert [i.item_id for i in form.items if i.fatal][-1] == "closing"

    await admin.get_by_test_id("tab-audit").click()
    entry = admin.get_by_test_id("audit-row").first
    await expect(entry).to_contain_text("QA 평가표 변경")
    await expect(entry).to_contain_text("+title: 상담 품질")
    await admin.locator("header select.ui-lang").select_option("ja")
    await expect(entry).to_contain_text("QA評価フォーム変更")
    await admin.get_by_test_id("tab-qa").click()
    await expect(row.get_by_test_id("qa-row-version")).to_have_text(re.compile("2"))
    await expect(admin.get_by_test_id("new-qa-form")).to_have_text("新しいフォーム")
    await pages.shot(admin, "admin-qa-ja")
    assert pages.errors == []


async def test_a_supervisor_may_change_qa_forms_as_the_role_table_says(
    platform: Any, pages: Any
) -> None:
    page = await pages.new(f"{platform.url}/admin", locale="en-US")
    await sign_in(page, "sup-1", "demo-sup-1")
    await expect(page.get_by_test_id("read-only")).to_be_visible()  # agents and routing
    await page.get_by_test_id("tab-qa").click()
    await expect(page.get_by_test_id("new-qa-form")).to_be_visible()
    await page.get_by_test_id("new-qa-form").click()
    editor = page.get_by_test_id("qa-editor")
    await editor.get_by_test_id("qa-id").fill("email")
    await editor.get_by_test_id("qa-title").fill("Email quality")
    item = editor.get_by_test_id("qa-item").first
    await item.get_by_test_id("qa-item-id").fill("answered_all")
    await item.get_by_test_id("qa-item-text").fill("Answered every question asked")
    await editor.get_by_test_id("qa-save").click()
    await expect(editor).to_be_hidden()
    row = page.get_by_test_id("qa-rows").locator("[data-form=email]")
    await expect(row).to_contain_text("sup-1")
    await expect(row.get_by_test_id("qa-row-version")).to_have_text(
        "버전 1"
    )  # sup-1 works in Korean
    assert pages.errors == []


async def test_new_buttons_wait_until_the_console_knows_whether_the_user_may_change(
    platform: Any, pages: Any
) -> None:
    """A "new" button shown before its list (and the right to change it) has loaded opened an
    editor whose fields were read-only: the buttons stay hidden until the list says so."""
    page = await pages.new(f"{platform.url}/admin", locale="en-US")
    release = asyncio.Event()

    async def hold(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route(re.compile(r".*/(qa-forms|templates|sla-policies|recurring)(\?.*)?$"), hold)
    await sign_in(page, "sup-1", "demo-sup-1")
    await page.get_by_test_id("tab-policy").click()
    for button in ("new-template", "new-sla", "new-task"):
        await expect(page.get_by_test_id(button)).to_be_hidden()
    await page.get_by_test_id("tab-qa").click()
    await expect(page.get_by_test_id("new-qa-form")).to_be_hidden()
    release.set()
    await expect(page.get_by_test_id("new-qa-form")).to_be_visible()
    await page.get_by_test_id("new-qa-form").click()
    await expect(page.get_by_test_id("qa-editor").get_by_test_id("qa-title")).to_be_editable()

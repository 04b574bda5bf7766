"""Case templates as forms in the admin console, in a real browser on the real platform: an
administrator opens the billing-question request form, adds a required field with labels in
four languages and a choice field (a mistake first, refused naming the entry), saves it, and the
case service's catalogue has it at once; a new template is added the same way; a supervisor
only views. Screenshots: admin-templates-*.png."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect

from .test_inbox_browser import sign_in


async def test_an_admin_edits_a_request_form_field_by_field(platform: Any, pages: Any) -> None:
    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await admin.get_by_test_id("tab-policy").click()
    row = admin.get_by_test_id("tpl-rows").locator("[data-template=billing-question]")
    await expect(row).to_contain_text("요금 문의")
    await admin.get_by_test_id("edit-tpl-billing-question").click()
    editor = admin.get_by_test_id("tpl-editor")
    fields = editor.get_by_test_id("tpl-field")
    await expect(fields).to_have_count(2)
    await expect(fields.first.get_by_test_id("fld-label-ko")).to_have_value("청구서 번호")

    await editor.get_by_test_id("tpl-add-field").click()
    amount = fields.nth(2)
    await amount.get_by_test_id("fld-name").fill("Amount!")  # not a field name
    await amount.get_by_test_id("fld-required").check()
    for lang, text in (("ko", "금액"), ("zh", "金额"), ("en", "Amount"), ("ja", "金額")):
        await amount.get_by_test_id(f"fld-label-{lang}").fill(text)
    await editor.get_by_test_id("tpl-add-field").click()
    method = fields.nth(3)
    await method.get_by_test_id("fld-name").fill("method")
    await method.get_by_test_id("fld-kind").select_option("choice")
    await method.get_by_test_id("fld-label-en").fill("Payment method")
    await method.get_by_test_id("fld-label-ko").fill("결제 수단")
    await method.get_by_test_id("fld-choices").fill("card, transfer")
    await editor.get_by_test_id("tpl-save").click()
    await expect(editor.get_by_test_id("tpl-error")).to_have_text(
        re.compile(r"templates\[\d\]\.catalogue\.fields\[2\]\.name")
    )
    await pages.shot(admin, "admin-templates-refused")
    await amount.get_by_test_id("fld-name").fill("amount")
    await editor.get_by_test_id("tpl-save").click()
    await expect(editor).to_be_hidden()
    await expect(admin.get_by_test_id("notice")).to_contain_text("billing-question")
    await expect(row).to_contain_text("4")
    await expect(admin.get_by_test_id("policy-yaml")).to_have_value(re.compile("name: amount"))

    # Taken at once by the case service: the portal's catalogue offers the new fields.
    [form] = [
        t for t in platform.running.case.policies.catalogue("demo") if t.name == "billing-question"
    ]
    assert [f.name for f in form.catalogue.fields] == ["invoice", "question", "amount", "method"]
    assert form.catalogue.fields[2].required

    # A new template, a request form with one field.
    await admin.get_by_test_id("new-template").click()
    await editor.get_by_test_id("tpl-name").fill("vpn-access")
    await editor.get_by_test_id("tpl-subject").fill("VPN access")
    await editor.get_by_test_id("tpl-case-type").fill("service_request")
    await editor.get_by_test_id("tpl-cat-name-en").fill("VPN access")
    await editor.get_by_test_id("tpl-cat-name-ko").fill("VPN 신청")
    await editor.get_by_test_id("tpl-add-field").click()
    await fields.first.get_by_test_id("fld-name").fill("reason")
    await fields.first.get_by_test_id("fld-kind").select_option("multiline")
    await fields.first.get_by_test_id("fld-label-en").fill("Reason")
    await editor.get_by_test_id("tpl-save").click()
    await expect(editor).to_be_hidden()
    await expect(
        admin.get_by_test_id("tpl-rows").locator("[data-template=vpn-access]")
    ).to_contain_text("VPN 신청")
    await pages.shot(admin, "admin-templates-saved")
    assert pages.errors == []


async def test_a_supervisor_views_templates_only(platform: Any, pages: Any) -> None:
    page = await pages.new(f"{platform.url}/admin", locale="en-US")
    await sign_in(page, "sup-1", "demo-sup-1")
    await page.get_by_test_id("tab-policy").click()
    await expect(page.get_by_test_id("new-template")).to_be_hidden()
    await page.get_by_test_id("edit-tpl-billing-question").click()
    editor = page.get_by_test_id("tpl-editor")
    await expect(editor.get_by_test_id("tpl-field")).to_have_count(2)
    await expect(editor.get_by_test_id("tpl-save")).to_be_hidden()
    await expect(editor.get_by_test_id("tpl-add-field")).to_be_hidden()
    assert pages.errors == []

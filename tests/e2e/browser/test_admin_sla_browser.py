"""SLA policies and recurring tasks as forms in the admin console, in a real browser on the real
platform: an administrator changes the standard policy's targets and adds an escalation rule (a
wrong level first, refused naming the entry as the policy file's reader does), then adds a
monthly recurring task (a wrong time zone first); the case service takes both at once; a
supervisor only views. Screenshots: admin-sla-*.png."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from playwright.async_api import expect

from .test_inbox_browser import sign_in


async def test_an_admin_edits_sla_targets_escalations_and_a_recurring_task(
    platform: Any, pages: Any
) -> None:
    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await admin.get_by_test_id("tab-policy").click()
    row = admin.get_by_test_id("sla-rows").locator("[data-sla=demo-standard]")
    await expect(row).to_contain_text("seoul-office")
    await admin.get_by_test_id("edit-sla-demo-standard").click()
    editor = admin.get_by_test_id("sla-editor")
    rules = editor.get_by_test_id("sla-rule")
    await expect(rules).to_have_count(2)
    await expect(editor.get_by_test_id("sla-first_response")).to_have_value("4h")
    await expect(rules.first.get_by_test_id("esc-level")).to_have_value("second_line")

    await editor.get_by_test_id("sla-first_response").fill("2h")
    await editor.get_by_test_id("sla-add-rule").click()
    added = rules.nth(2)
    await added.get_by_test_id("esc-at").fill("150")
    await added.get_by_test_id("esc-kind").select_option("hierarchical")
    await added.get_by_test_id("esc-level").fill("chief")  # not a level
    await added.get_by_test_id("esc-actions").fill("event, email")
    await added.get_by_test_id("esc-notify").fill("director@example.com")
    await editor.get_by_test_id("sla-save").click()
    await expect(editor.get_by_test_id("sla-error")).to_have_text(
        re.compile(r"sla_policies\[\d\]\.escalation\[2\].*hierarchical level is one of")
    )
    await pages.shot(admin, "admin-sla-refused")
    await added.get_by_test_id("esc-level").fill("director")
    await editor.get_by_test_id("sla-save").click()
    await expect(editor).to_be_hidden()
    await expect(admin.get_by_test_id("notice")).to_contain_text("demo-standard")
    await expect(row).to_contain_text("2h")
    await expect(row).to_contain_text("3")

    # Taken at once by the case service.
    policies = platform.running.case.policies
    standard = next(p for p in policies.sla if p.name == "demo-standard")
    assert standard.targets["first_response"] == timedelta(hours=2)
    assert [(r.at, r.level, r.notify) for r in standard.escalations][-1] == (
        150,
        "director",
        ("director@example.com",),
    )

    # A recurring task: a wrong time zone is refused naming the entry, then it is saved.
    await admin.get_by_test_id("new-task").click()
    tasks = admin.get_by_test_id("task-editor")
    await tasks.get_by_test_id("task-name").fill("weekly-backup-check")
    await tasks.get_by_test_id("task-template").select_option("monthly-inspection")
    await tasks.get_by_test_id("task-every").select_option("weekly")
    await tasks.get_by_test_id("task-day").fill("4")
    await tasks.get_by_test_id("task-at").fill("10:30")
    await tasks.get_by_test_id("task-timezone").fill("Mars/Olympus")
    await tasks.get_by_test_id("task-save").click()
    await expect(tasks.get_by_test_id("task-error")).to_have_text(
        re.compile(r"recurring\[\d\]\.timezone: unknown time zone")
    )
    await tasks.get_by_test_id("task-timezone").fill("Asia/Seoul")
    await tasks.get_by_test_id("task-save").click()
    await expect(tasks).to_be_hidden()
    task_row = admin.get_by_test_id("task-rows").locator("[data-task=weekly-backup-check]")
    await expect(task_row).to_contain_text("매주")
    await expect(task_row).to_contain_text("10:30")
    made = next(t for t in platform.running.case.policies.tasks if t.name == "weekly-backup-check")
    assert (made.every, made.day, made.at.hour, made.at.minute) == ("weekly", 4, 10, 30)
    # The existing monthly task is listed with its start date as text.
    await admin.get_by_test_id("edit-task-monthly-inspection").click()
    await expect(tasks.get_by_test_id("task-start")).to_have_value("2026-01-01")
    await pages.shot(admin, "admin-sla-saved")
    assert pages.errors == []


async def test_a_supervisor_views_sla_policies_and_tasks_only(platform: Any, pages: Any) -> None:
    page = await pages.new(f"{platform.url}/admin", locale="en-US")
    await sign_in(page, "sup-1", "demo-sup-1")
    await page.get_by_test_id("tab-policy").click()
    await expect(page.get_by_test_id("new-sla")).to_be_hidden()
    await expect(page.get_by_test_id("new-task")).to_be_hidden()
    await page.get_by_test_id("edit-sla-demo-urgent").click()
    editor = page.get_by_test_id("sla-editor")
    await expect(editor.get_by_test_id("sla-rule")).to_have_count(2)
    await expect(editor.get_by_test_id("sla-save")).to_be_hidden()
    await expect(page.get_by_test_id("task-rows")).to_contain_text("monthly-inspection")
    await expect(page.get_by_test_id("edit-task-monthly-inspection")).to_be_visible()
    assert pages.errors == []

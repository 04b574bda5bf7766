"""Teams in a real browser on the real platform: an administrator adds a team lead, makes a team
led by them (a lead from no tenant refused with the field) and puts an agent in it; the lead
signs in to the wallboard and sees that agent under the team, and only the team, by default, and
may sign out its members only; a supervisor sees every team and picks one. Screenshots: teams-*.png."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from .test_inbox_browser import sign_in


async def test_a_team_lead_sees_the_team_an_admin_made_on_the_wallboard(
    platform: Any, pages: Any
) -> None:
    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    rows = admin.get_by_test_id("agent-rows")
    await expect(rows.locator("[data-agent=zh-1]")).to_contain_text("zh-1")

    # A team lead, then the team: a lead who is not an agent of the tenant is refused.
    await admin.get_by_test_id("add-agent").click()
    form = admin.get_by_test_id("agent-form")
    await form.get_by_test_id("f-id").fill("lead-1")
    await form.get_by_test_id("f-name").fill("팀장 박")
    await form.get_by_test_id("f-password").fill("lead-pass-1")
    await form.get_by_test_id("f-role").select_option("team_lead")
    await form.get_by_test_id("f-save").click()
    await expect(form).to_be_hidden()
    await admin.get_by_test_id("t-id").fill("zh-team")
    await admin.get_by_test_id("t-name").fill("中文组")
    await admin.get_by_test_id("t-leads").fill("lead-9")
    await admin.get_by_test_id("t-add").click()
    await expect(admin.get_by_test_id("teams-error")).to_have_text(
        "tenants.demo.teams[0].leads[0]: lead-9 is not an agent of demo"
    )
    await admin.get_by_test_id("t-leads").fill("lead-1")
    await admin.get_by_test_id("t-add").click()
    team = admin.get_by_test_id("team-rows").locator("[data-team=zh-team]")
    await expect(team).to_contain_text("zh-team")
    await expect(team.get_by_test_id("team-leads")).to_have_value("lead-1")
    await expect(admin.get_by_test_id("teams-error")).to_have_text("")

    # zh-1 joins it with the agent form's team picker.
    await admin.get_by_test_id("edit-zh-1").click()
    await form.get_by_test_id("f-team").select_option("zh-team")
    await form.get_by_test_id("f-save").click()
    await expect(form).to_be_hidden()
    await expect(rows.locator("[data-agent=zh-1]").get_by_test_id("agent-team")).to_have_text(
        "中文组"
    )
    await expect(team.get_by_test_id("team-members")).to_have_text("zh-1")
    await pages.shot(admin, "teams-admin")

    # zh-1 and en-1 (in no team) sign in to the inbox.
    for agent_id in ("zh-1", "en-1"):
        inbox = await pages.new(f"{platform.url}/inbox")
        await sign_in(inbox, agent_id, f"demo-{agent_id}")
        await expect(inbox.get_by_test_id("presence")).to_have_attribute(
            "data-presence", "available"
        )

    # The lead's wallboard: its own team by default, zh-1 under it, en-1 not on it.
    board = await pages.new(f"{platform.url}/wallboard")
    await sign_in(board, "lead-1", "lead-pass-1")
    agents = board.get_by_test_id("wb-agents")
    await expect(board.get_by_test_id("wb-team")).to_have_value("zh-team")
    await expect(agents.locator("tr.team-row[data-team=zh-team]")).to_have_text("中文组")
    member = agents.locator("tr[data-agent=zh-1]")
    await expect(member).to_have_attribute("data-team", "zh-team")
    await expect(member).to_contain_text("王")
    await expect(agents.locator("tr[data-agent=lead-1]")).to_have_count(0)  # leads no team
    await expect(agents.locator("tr[data-agent=en-1]")).to_have_count(0)
    await pages.shot(board, "teams-wallboard-lead")
    # The lead may sign out its own team's members, and no one else's.
    await expect(member.get_by_test_id("wb-agent-sign-out")).to_have_count(1)
    await board.get_by_test_id("wb-team").select_option("*")
    other = agents.locator("tr[data-agent=en-1]")
    await expect(other).to_be_visible()
    await expect(other.get_by_test_id("wb-agent-sign-out")).to_have_count(0)
    await member.get_by_test_id("wb-agent-sign-out").click()
    await expect(member.get_by_test_id("wb-agent-state")).to_have_attribute(
        "class", "state-offline"
    )
    await expect(board.get_by_test_id("board-error")).to_be_hidden()

    # A supervisor sees every agent, by team, and may pick one.
    sup = await pages.new(f"{platform.url}/wallboard")
    await sign_in(sup, "sup-1", "demo-sup-1")
    everyone = sup.get_by_test_id("wb-agents")
    await expect(sup.get_by_test_id("wb-team")).to_have_value("*")
    await expect(everyone.locator("tr[data-agent=en-1]")).to_have_attribute("data-team", "")
    await expect(everyone.locator("tr[data-agent=zh-1]")).to_have_attribute("data-team", "zh-team")
    await sup.get_by_test_id("wb-team").select_option("zh-team")
    await expect(everyone.locator("tr[data-agent=en-1]")).to_have_count(0)
    await expect(everyone.locator("tr[data-agent=zh-1]")).to_be_visible()

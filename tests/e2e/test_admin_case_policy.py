"""The admin console's Hours and SLA across chat and case: the chat's /api/admin/case-policy, with
the signed-in administrator's token, reads, checks, applies and exports the tenant's part of the
case policy file (the case service's own reader), saves the business-hours form, audits each
change; a supervisor only views; tenants stay apart. Real apps on a real nats-server, real gRPC."""

from __future__ import annotations

from datetime import date

import yaml

from switchboard.case.sla import policy, tenant_policy
from switchboard.core import auth

from .conftest import Platform
from .test_admin_console import Console


async def test_policies_are_checked_applied_at_once_exported_and_audited(
    platform: Platform,
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    status, got = await admin.call("GET", "/api/admin/case-policy")
    assert status == 200 and got["may_change"] is True and got["version"] == 0
    assert got["hours"]["calendar"] == "seoul-office"
    assert got["hours"]["timezone"] == "Asia/Seoul"
    assert "2026-12-25" in got["hours"]["holidays"]

    # The form: a holiday and Saturday mornings.
    form = dict(got["hours"])
    form["holidays"] = [*form["holidays"], "2026-10-09"]
    form["hours"] = {**form["hours"], "sat": "09:00-13:00"}
    status, saved = await admin.call(
        "POST", "/api/admin/case-policy", {"hours": form, "version": 0}
    )
    assert status == 200, saved
    assert saved["version"] >= 1 and saved["hours"]["holidays"][0] == "2026-10-09"
    calendar = platform.case.policies.business_calendar("demo")  # type: ignore[union-attr]
    assert calendar is not None and date(2026, 10, 9) in calendar.holidays
    # A bad time zone in the form is the case service's to refuse, naming the calendar.
    status, body = await admin.call(
        "POST", "/api/admin/case-policy", {"hours": {**form, "timezone": "Mars/Olympus"}}
    )
    assert status == 400 and "calendars.seoul-office" in body["error"], body

    # The YAML: a check changes nothing; a mistake names its line; an old version is refused.
    text = saved["yaml"].replace("first_response: 4h", "first_response: 2h")
    status, checked = await admin.call(
        "POST", "/api/admin/case-policy", {"yaml": text, "dry_run": True}
    )
    assert status == 200 and checked["version"] == saved["version"]
    bad = text.replace("resolution: 3d", "resolution: someday")
    line = bad.splitlines().index("  resolution: someday") + 1
    status, body = await admin.call("POST", "/api/admin/case-policy", {"yaml": bad})
    assert status == 400
    assert body["error"].startswith(f"ApplyTenantPolicy:{line}: sla_policies[1].resolution: ")
    status, _ = await admin.call("POST", "/api/admin/case-policy", {"yaml": text, "version": 0})
    assert status == 409
    status, applied = await admin.call(
        "POST", "/api/admin/case-policy", {"yaml": text, "version": saved["version"]}
    )
    assert status == 200 and applied["version"] > saved["version"]
    standard = next(p for p in platform.case.policies.sla if p.name == "demo-standard")  # type: ignore[union-attr]
    assert standard.targets["first_response"].total_seconds() == 2 * 3600

    # Export: the part as a policy file, which reads back as the same YAML.
    status, exported = await admin.call("GET", "/api/admin/case-policy.yaml")
    assert status == 200 and exported == text
    assert policy.parse(yaml.safe_load(exported)).business_calendar("demo") is not None
    part = yaml.safe_load(exported)
    assert tenant_policy.dump(part) == tenant_policy.dump(yaml.safe_load(tenant_policy.dump(part)))

    # The change log: the form's change and the YAML's, with their diffs.
    _, audit = await admin.call("GET", "/api/admin/audit")
    actions = [(e["action"], e["actor"], e["version"]) for e in audit["entries"]]
    assert actions == [
        ("policy.apply", "admin-1", applied["version"]),
        ("policy.apply", "admin-1", saved["version"]),
    ]
    assert "+  first_response: 2h" in audit["entries"][0]["changes"]["diff"]
    assert "2026-10-09" in audit["entries"][1]["changes"]["diff"]


async def test_a_supervisor_views_the_policies_and_tenants_stay_apart(platform: Platform) -> None:
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    status, mine = await sup.call("GET", "/api/admin/case-policy")
    assert status == 200 and mine["may_change"] is False
    assert (await sup.call("POST", "/api/admin/case-policy", {"yaml": mine["yaml"]}))[0] == 403
    agent = await Console(platform).login("ko-1", "demo-ko-1")
    assert (await agent.call("GET", "/api/admin/case-policy"))[0] == 403

    # acme's administrator sees and changes acme's part only.
    acme = Console(platform, auth.mint(platform.secret, "acme", "acme-admin", ["admin"]))
    status, theirs = await acme.call("GET", "/api/admin/case-policy")
    assert status == 200 and theirs["tenant"] == "acme"
    assert "seoul-office" not in theirs["yaml"] and "demo" not in theirs["yaml"]
    status, body = await acme.call(
        "POST",
        "/api/admin/case-policy",
        {"yaml": "business_hours: {demo: seoul-office}\n"},
    )
    assert status == 400 and "business_hours.demo: only acme's entry" in body["error"]
    status, body = await acme.call(
        "POST",
        "/api/admin/case-policy",
        {"hours": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "08:00-17:00"}}},
    )
    assert status == 200, body
    assert platform.case.policies.time_zone("acme").key == "Europe/Berlin"  # type: ignore[union-attr]
    assert platform.case.policies.time_zone("demo").key == "Asia/Seoul"  # type: ignore[union-attr]
    assert (await sup.call("GET", "/api/admin/case-policy"))[1]["yaml"] == mine["yaml"]
    assert (await sup.call("GET", "/api/admin/audit"))[1]["entries"] == []

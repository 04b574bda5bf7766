"""Case templates (the portal's request forms) as forms in the admin console, across chat and
case: the tenant's own templates are listed; one is changed field by field and another added,
each checked by the case service's policy reader (a wrong field kind is refused naming the
entry) and taken at once — the portal's catalogue offers the new form in Korean; a supervisor
only views; another tenant's templates are invisible and untouched. Real apps on a real
nats-server, real gRPC."""

from __future__ import annotations

from typing import Any

from switchboard.core import auth

from .conftest import Platform
from .test_admin_console import Console

VPN = {
    "subject": "VPN access",
    "case_type": "service_request",
    "priority": "normal",
    "skills": ["technical"],
    "catalogue": {
        "name": {"ko": "VPN 신청", "zh": "VPN 申请", "en": "VPN access", "ja": "VPN申請"},
        "fields": [
            {"name": "reason", "kind": "multiline", "required": True,
             "label": {"en": "Reason", "ko": "사유"}},
            {"name": "until", "kind": "date", "label": {"en": "Until", "ko": "종료일"}},
        ],
    },
}  # fmt: skip


def named(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in body["templates"] if t["name"] == name)


async def test_templates_are_edited_as_forms_checked_and_taken_at_once(platform: Platform) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    status, got = await admin.call("GET", "/api/admin/templates")
    assert status == 200 and got["may_change"] is True, got
    assert {t["name"] for t in got["templates"]} == {"billing-question", "monthly-inspection"}
    billing = named(got, "billing-question")
    assert billing["catalogue"]["fields"][0]["label"]["ko"] == "청구서 번호"

    # A field kind the policy file would refuse, named by entry and field.
    wrong = {**VPN, "catalogue": {**VPN["catalogue"], "fields": [{"name": "x", "kind": "colour"}]}}
    status, body = await admin.call(
        "PUT", "/api/admin/templates/vpn-access", {"template": wrong, "version": got["version"]}
    )
    assert status == 400 and "templates[2].catalogue.fields[0].kind" in body["error"], body

    status, body = await admin.call(
        "PUT", "/api/admin/templates/vpn-access", {"template": VPN, "version": got["version"]}
    )
    assert status == 200, body
    assert named(body, "vpn-access")["catalogue"]["fields"][1]["kind"] == "date"
    # An edit of an existing one: a new required field with labels in four languages.
    changed = dict(billing)
    changed["catalogue"] = {
        **billing["catalogue"],
        "fields": [
            *billing["catalogue"]["fields"],
            {"name": "amount", "kind": "text", "required": True,
             "label": {"ko": "금액", "zh": "金额", "en": "Amount", "ja": "金額"}},
        ],
    }  # fmt: skip
    status, again = await admin.call(
        "PUT", "/api/admin/templates/billing-question", {"template": changed, "version": 0}
    )
    assert status == 409, again  # based on an old version
    status, again = await admin.call(
        "PUT",
        "/api/admin/templates/billing-question",
        {"template": changed, "version": body["version"]},
    )
    assert status == 200, again
    assert [f["name"] for f in named(again, "billing-question")["catalogue"]["fields"]] == [
        "invoice",
        "question",
        "amount",
    ]
    # The case service's catalogue (the portal's) offers both at once.
    templates = platform.case.policies.templates  # type: ignore[union-attr]
    mine = {name: t for (owner, name), t in templates.items() if owner == "demo"}
    assert "vpn-access" in mine and mine["vpn-access"].catalogue is not None
    assert [f.name for f in mine["billing-question"].catalogue.fields][-1] == "amount"  # type: ignore[union-attr]
    audit = (await admin.call("GET", "/api/admin/audit"))[1]["entries"]
    assert [e["action"] for e in audit[:2]] == ["policy.apply", "policy.apply"]


async def test_templates_follow_roles_and_tenants(platform: Platform) -> None:
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    status, got = await sup.call("GET", "/api/admin/templates")
    assert status == 200 and got["may_change"] is False
    status, _ = await sup.call("PUT", "/api/admin/templates/vpn-access", {"template": VPN})
    assert status == 403
    agent = await Console(platform).login("ko-1", "demo-ko-1")
    assert (await agent.call("GET", "/api/admin/templates"))[0] == 403

    acme = Console(platform, auth.mint(platform.secret, "acme", "acme-admin", ["admin"]))
    status, theirs = await acme.call("GET", "/api/admin/templates")
    assert status == 200 and theirs["templates"] == []  # demo's are not acme's
    # acme naming demo's template makes acme's own; demo's stays as it was.
    status, body = await acme.call(
        "PUT", "/api/admin/templates/billing-question", {"template": VPN}
    )
    assert status == 200, body
    assert named(body, "billing-question")["tenant"] == "acme"
    mine = (await sup.call("GET", "/api/admin/templates"))[1]
    assert named(mine, "billing-question")["subject"] == "Billing question"

"""QA scoring forms in the admin console, across chat and case: an administrator lists the
tenant's forms, stores a new version of one as a form (items, fatal or weighted), a mistake is
refused with the field, older versions stay readable, the change is audited and the export reads
back as the same forms; supervisors may change them too (the role table's PutQaForm), agents see
nothing, and another tenant's forms are invisible. Real apps on a real nats-server, real gRPC."""

from __future__ import annotations

import yaml

from switchboard.case.quality import load_form
from switchboard.core import auth

from .conftest import Platform
from .test_admin_console import Console

ITEMS = [
    {"item_id": "identity_verified", "text": "본인 확인", "fatal": True, "weight": 1},
    {"item_id": "greeting", "text": "인사와 소개", "fatal": False, "weight": 2},
    {"item_id": "closing", "text": "마무리 안내", "fatal": False, "weight": 1.5},
]


async def test_an_admin_stores_a_new_version_of_a_form_audited_and_exported(
    platform: Platform,
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    status, listed = await admin.call("GET", "/api/admin/qa-forms")
    assert status == 200, listed
    assert listed["may_change"] is True and listed["tenant"] == "demo"
    default = next(f for f in listed["forms"] if f["form_id"] == "default")
    assert default["version"] == 1 and default["built_in"] is True

    # A weight the form file would refuse is refused with the item and field.
    bad = [dict(ITEMS[1], weight="heavy")]
    status, body = await admin.call(
        "POST", "/api/admin/qa-forms", {"form_id": "default", "title": "x", "items": bad}
    )
    assert status == 400 and "items[0].weight" in body["error"], body
    # A change based on a version that is not the latest is refused.
    status, body = await admin.call(
        "POST",
        "/api/admin/qa-forms",
        {"form_id": "default", "title": "상담 품질", "items": ITEMS, "version": 7},
    )
    assert status == 409, body

    status, saved = await admin.call(
        "POST",
        "/api/admin/qa-forms",
        {"form_id": "default", "title": "상담 품질", "items": ITEMS, "version": 1},
    )
    assert status == 200, saved
    assert saved["version"] == 2 and saved["created_by"] == "admin-1"
    assert [(i["item_id"], i["fatal"], i["weight"]) for i in saved["items"]] == [
        ("identity_verified", True, 1.0),
        ("greeting", False, 2.0),
        ("closing", False, 1.5),
    ]
    # A new form, and the old version still readable.
    status, new = await admin.call(
        "POST", "/api/admin/qa-forms", {"form_id": "email", "title": "이메일", "items": ITEMS[1:]}
    )
    assert status == 200 and new["version"] == 1, new
    status, old = await admin.call("GET", "/api/admin/qa-forms/default?version=1")
    assert status == 200 and old["title"] == "Contact quality" and len(old["items"]) == 9
    status, latest = await admin.call("GET", "/api/admin/qa-forms/default")
    assert latest["version"] == 2 and latest["title"] == "상담 품질"

    # Exported as form files, which read back as the forms in force.
    status, exported = await admin.call("GET", "/api/admin/qa-forms.yaml")
    assert status == 200
    docs = exported.split("---\n")
    assert len(docs) == 2
    forms = {f.id: f for f in map(load_form, docs)}
    assert [(i.id, i.text, i.fatal, i.weight) for i in forms["default"].items] == [
        ("identity_verified", "본인 확인", True, 1.0),
        ("greeting", "인사와 소개", False, 2.0),
        ("closing", "마무리 안내", False, 1.5),
    ]
    assert forms["default"].title == "상담 품질" and forms["email"].title == "이메일"
    assert yaml.safe_load(docs[1])["items"][0] == {
        "id": "greeting",
        "text": "인사와 소개",
        "weight": 2,
    }

    status, audit = await admin.call("GET", "/api/admin/audit")
    entries = [e for e in audit["entries"] if e["action"] == "qa_form.put"]
    assert [(e["target"], e["version"]) for e in entries] == [("email", 1), ("default", 2)]
    assert "+title: 상담 품질" in entries[1]["changes"]["diff"]


async def test_qa_forms_follow_the_role_table_and_stay_in_their_tenant(
    platform: Platform,
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    status, _ = await admin.call(
        "POST", "/api/admin/qa-forms", {"form_id": "demo-only", "title": "데모", "items": ITEMS}
    )
    assert status == 200
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    status, listed = await sup.call("GET", "/api/admin/qa-forms")
    assert status == 200 and listed["may_change"] is True  # PutQaForm: qa, supervisor, admin
    agent = await Console(platform).login("ko-1", "demo-ko-1")
    assert (await agent.call("GET", "/api/admin/qa-forms"))[0] == 403
    assert (await agent.call("GET", "/api/admin/qa-forms/default"))[0] == 403
    assert (await agent.call("GET", "/api/admin/qa-forms.yaml"))[0] == 403
    status, _ = await agent.call(
        "POST", "/api/admin/qa-forms", {"form_id": "x", "title": "x", "items": ITEMS}
    )
    assert status == 403

    # acme's administrator: demo's form is invisible, and acme's own change stays acme's.
    acme = Console(platform, auth.mint(platform.secret, "acme", "acme-admin", ["admin"]))
    status, theirs = await acme.call("GET", "/api/admin/qa-forms")
    assert status == 200 and theirs["tenant"] == "acme"
    assert [f["form_id"] for f in theirs["forms"]] == ["default"]
    assert (await acme.call("GET", "/api/admin/qa-forms/demo-only"))[0] == 400
    assert "demo-only" not in (await acme.call("GET", "/api/admin/qa-forms.yaml"))[1]
    status, _ = await acme.call(
        "POST", "/api/admin/qa-forms", {"form_id": "default", "title": "Acme", "items": ITEMS}
    )
    assert status == 200
    status, mine = await admin.call("GET", "/api/admin/qa-forms/default")
    assert mine["version"] == 1 and mine["title"] == "Contact quality"
    assert all(
        e["actor"] != "acme-admin"
        for e in (await admin.call("GET", "/api/admin/audit"))[1]["entries"]
    )

"""Every stored change of the case policies and of the QA forms has exactly one audit record, even
when the chat stops between the change being stored (by the case service) and its record being
published: the case service stores who made a policy change, when and what it changed with the
change itself, and keeps who made each QA form version; the chat's next start (policies) or the
next look at the change log (both) publishes what is missing, once. A refused change has no
record. Real apps on a real nats-server, real gRPC."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.chat.admin.store import AUDIT_STREAM, AdminStore, AuditRecord

from .conftest import Platform
from .test_admin_console import Console
from .test_admin_qa_forms import ITEMS


class Died(Exception):
    """The chat stopping right after the case service stored the change."""


def chat_store(platform: Platform) -> AdminStore:
    """The chat's own store (its NATS user's permissions, when each service has one)."""
    assert platform.chat.admin is not None
    return platform.chat.admin.store


async def stream_records(platform: Platform) -> list[AuditRecord]:
    """demo's records as the audit stream holds them, oldest first (nothing reconciled)."""
    return list(reversed(await chat_store(platform).audit("demo")))


async def message_ids(platform: Platform) -> list[str]:
    js = chat_store(platform).js
    last = (await js.stream_info(AUDIT_STREAM)).state.last_seq
    out = []
    for seq in range(1, last + 1):
        msg = await js.get_msg(AUDIT_STREAM, seq=seq)
        out.append((msg.headers or {}).get("Nats-Msg-Id", ""))
    return out


@pytest.mark.parametrize("nats_access", ["anonymous", "authorised"], indirect=True)
async def test_a_policy_change_stored_without_its_record_is_recorded_once_at_the_next_start(
    platform: Platform, nats_access: str
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    store = platform.chat.admin.store  # type: ignore[union-attr]
    real = store.record

    async def died(entry: AuditRecord) -> None:
        raise Died(entry.action)

    store.record = died  # type: ignore[method-assign]
    _, got = await admin.call("GET", "/api/admin/case-policy")
    text = got["yaml"].replace("first_response: 4h", "first_response: 2h")
    status, _ = await admin.call("POST", "/api/admin/case-policy", {"yaml": text, "version": 0})
    assert status == 500  # the chat "died" before answering ...
    _, now = await admin.call("GET", "/api/admin/case-policy")
    assert now["version"] >= 1 and "first_response: 2h" in now["yaml"]  # ... with it stored
    assert await stream_records(platform) == []  # and no record published
    store.record = real  # type: ignore[method-assign]

    if nats_access == "anonymous":
        replica = platform.chat_replica()  # the next chat process to start
        await replica.start()
        await replica.stop()
    else:  # the chat's own user reads the case service's bucket: the next look at the log
        assert (await admin.call("GET", "/api/admin/audit"))[0] == 200
    records = await stream_records(platform)
    assert [(r.actor, r.action, r.target, r.version) for r in records] == [
        ("admin-1", "policy.apply", "demo", now["version"])
    ]
    assert "+  first_response: 2h" in records[0].changes["diff"]
    assert "-  first_response: 4h" in records[0].changes["diff"]
    assert await message_ids(platform) == [f"policy.demo.{now['version']}"]

    # A refused change (stale version, or a mistake) is neither stored nor recorded; an
    # applied one is recorded once, however often the log is looked at.
    status, _ = await admin.call("POST", "/api/admin/case-policy", {"yaml": text, "version": 0})
    assert status == 409
    bad = text.replace("resolution: 3d", "resolution: someday")
    status, _ = await admin.call("POST", "/api/admin/case-policy", {"yaml": bad})
    assert status == 400
    again = text.replace("first_response: 2h", "first_response: 3h")
    status, applied = await admin.call(
        "POST", "/api/admin/case-policy", {"yaml": again, "version": now["version"]}
    )
    assert status == 200
    for _ in range(2):
        _, audit = await admin.call("GET", "/api/admin/audit")
        assert [(e["action"], e["version"]) for e in audit["entries"]] == [
            ("policy.apply", applied["version"]),
            ("policy.apply", now["version"]),
        ]
    assert await message_ids(platform) == [
        f"policy.demo.{now['version']}",
        f"policy.demo.{applied['version']}",
    ]


async def test_a_qa_form_version_stored_without_its_record_is_recorded_once(
    platform: Platform,
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    store = platform.chat.admin.store  # type: ignore[union-attr]
    real = store.record

    async def died(entry: AuditRecord) -> None:
        raise Died(entry.action)

    form: dict[str, Any] = {"form_id": "calls", "title": "통화 품질", "items": ITEMS}
    status, first = await admin.call("POST", "/api/admin/qa-forms", {**form, "version": 0})
    assert status == 200, first
    store.record = died  # type: ignore[method-assign]
    changed = {**form, "title": "통화 품질 2", "version": first["version"]}
    status, _ = await admin.call("POST", "/api/admin/qa-forms", changed)
    assert status == 500  # stored by the case service, the record not published
    store.record = real  # type: ignore[method-assign]
    assert [(r.target, r.version) for r in await stream_records(platform)] == [("calls", 1)]

    # A refused change (based on an old version) has no record.
    status, _ = await admin.call("POST", "/api/admin/qa-forms", {**changed, "version": 1})
    assert status == 409
    for _ in range(2):  # looking at the log publishes the missing record, once
        _, audit = await admin.call("GET", "/api/admin/audit")
        assert [(e["action"], e["target"], e["version"], e["actor"]) for e in audit["entries"]] == [
            ("qa_form.put", "calls", 2, "admin-1"),
            ("qa_form.put", "calls", 1, "admin-1"),
        ]
    assert "+title: 통화 품질 2" in audit["entries"][0]["changes"]["diff"]
    assert await message_ids(platform) == ["qa_form.demo.calls.1", "qa_form.demo.calls.2"]


async def test_a_routing_change_journaled_without_its_record_is_recorded_once(
    platform: Platform,
) -> None:
    """The router journals who applied a configuration and the lines it changed with the
    change: a chat stopping before publishing the record, and a router restarted from its
    journal, leave one record, published when the change log is looked at."""
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    store = chat_store(platform)
    real = store.record

    async def died(entry: AuditRecord) -> None:
        raise Died(entry.action)

    _, routing = await admin.call("GET", "/api/admin/routing")
    text = routing["yaml"].replace("min_proficiency: 2}", "min_proficiency: 3}")
    assert text != routing["yaml"]
    # A refused change is neither applied nor recorded.
    bad = routing["yaml"].replace("min_proficiency: 2}", "min_proficiency: 9}")
    assert (await admin.call("POST", "/api/admin/routing", {"yaml": bad}))[0] == 400
    store.record = died  # type: ignore[method-assign]
    status, _ = await admin.call("POST", "/api/admin/routing", {"yaml": text})
    assert status == 500  # applied by the router, the record not published
    store.record = real  # type: ignore[method-assign]
    _, now = await admin.call("GET", "/api/admin/routing")
    assert now["version"] == routing["version"] + 1 and now["yaml"] == text
    assert await stream_records(platform) == []

    await platform.restart_router()  # the change and who made it, from the router's journal
    for _ in range(2):
        status, audit = await admin.call("GET", "/api/admin/audit")
        assert status == 200
        assert [(e["action"], e["actor"], e["version"]) for e in audit["entries"]] == [
            ("routing.apply", "admin-1", now["version"])
        ]
    diff = audit["entries"][0]["changes"]["diff"]
    assert "min_proficiency: 3}" in diff and "min_proficiency: 2}" in diff
    assert await message_ids(platform) == [f"routing.demo.{now['version']}"]

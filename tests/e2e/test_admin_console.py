"""The admin console's routing half across chat and router: the chat's /api/admin routes, with
the signed-in administrator's token, read, check, apply and export the tenant's routing (the
router's own validator and run-time apply), preview who would take a sample contact, and audit
each change. Real apps on a real nats-server, real gRPC."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import aiohttp
import pytest
import yaml

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.router.domain import config as router_config
from switchboard.testing.agents import AgentClient
from switchboard.testing.contacts import contact_created
from switchboard.v1 import router_pb2, router_pb2_grpc

from .conftest import Platform


class Console:
    def __init__(self, platform: Platform, token: str = "") -> None:
        self.base = platform.chat_url
        self.token = token

    async def login(self, agent_id: str, password: str) -> Console:
        status, body = await self.call(
            "POST",
            "/api/agent/login",
            {"tenant": "demo", "agent_id": agent_id, "password": password},
        )
        assert status == 200, body
        self.token = body["token"]
        return self

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.base + path, json=body, headers=headers) as r:
                if r.content_type.startswith("application/json"):
                    return r.status, await r.json()
                return r.status, await r.text()


async def waiting(platform: Platform, tenant: str = "demo") -> dict[str, int]:
    token = auth.mint(platform.secret, tenant, "wallboard", ["supervisor"])
    async with sb_grpc.channel(platform.router_target, token) as ch:
        stats = await router_pb2_grpc.RouterServiceStub(ch).GetQueueStats(
            router_pb2.GetQueueStatsRequest()
        )
    return {q.queue: q.waiting for q in stats.queues}


def without_text(cfg: router_config.TenantConfig) -> router_config.TenantConfig:
    return dataclasses.replace(cfg, yaml_text="")


# "authorised": each service as its own NATS user: the chat's permissions cover the console's
# bucket and audit stream.
@pytest.mark.parametrize("nats_access", ["anonymous", "authorised"], indirect=True)
async def test_routing_is_checked_applied_live_previewed_exported_and_audited(
    platform: Platform, nats_access: str, request: pytest.FixtureRequest
) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    status, body = await admin.call(
        "POST",
        "/api/admin/agents",
        {"id": "zh-2", "password": "zh-2-password", "languages": {"zh": 5}},
    )
    assert status == 200, body
    await Console(platform).login("zh-2", "zh-2-password")
    # A skill the tenant's routing does not know would be refused at sign-in: refused here.
    status, body = await admin.call("PUT", "/api/admin/agents/zh-2", {"skills": {"cooking": 3}})
    assert status == 400
    assert body["error"].startswith("skills.cooking: unknown skill 'cooking'"), body
    status, routing = await admin.call("GET", "/api/admin/routing")
    assert status == 200 and routing["may_change"] is True and routing["tenant"] == "demo"
    original = routing["yaml"]
    assert "name: complaints" in original

    # The export is router.yaml, and reads back as the configuration in force.
    status, exported = await admin.call("GET", "/api/admin/routing.yaml")
    assert status == 200
    assert without_text(router_config.load_text(exported).tenants["demo"]) == without_text(
        router_config.load_tenant_text("demo", original)
    )
    assert yaml.safe_load(exported) == {"tenants": {"demo": yaml.safe_load(original)}}

    # A bad step is refused with the field and the reason the router.yaml file would get.
    bad = original.replace("min_proficiency: 2}", "min_proficiency: 9}")
    assert bad != original
    status, body = await admin.call("POST", "/api/admin/routing", {"yaml": bad, "dry_run": True})
    assert status == 400
    assert re.search(
        r":\d+: tenants\.demo\.queues\[2\]\.steps\[0\]\.min_proficiency: must be an integer "
        r"from 1 to 5",
        body["error"],
    ), body
    status, body = await admin.call("POST", "/api/admin/routing", {"yaml": bad})
    assert status == 400
    assert (await admin.call("GET", "/api/admin/routing"))[1]["version"] == routing["version"]

    # A Korean complaint waits (nobody signed in) ...
    bus = platform.chat.bus  # as the web chat publishes it (its NATS user, when authorised)
    assert isinstance(bus, Bus)
    await bus.publish(contact_created("waits-1", tenant="demo", language="ko", queue="complaints"))
    for _ in range(100):
        if (await waiting(platform)).get("complaints") == 1:
            break
        await asyncio.sleep(0.1)
    assert (await waiting(platform))["complaints"] == 1

    # ... and stays queued when its queue is removed: it moves to the default queue, at once.
    changed = yaml.safe_load(original)
    changed["queues"] = [q for q in changed["queues"] if q["name"] != "complaints"]
    changed["surge"][0]["raise"]["queues"].remove("complaints")
    new_text = yaml.safe_dump(changed, allow_unicode=True, sort_keys=False)
    status, checked = await admin.call(
        "POST", "/api/admin/routing", {"yaml": new_text, "dry_run": True}
    )
    assert status == 200, checked
    assert checked["version"] == routing["version"]  # only checked
    status, applied = await admin.call("POST", "/api/admin/routing", {"yaml": new_text})
    assert status == 200, applied
    assert applied["version"] == routing["version"] + 1
    counts = await waiting(platform)
    assert counts.get("complaints", 0) == 0 and counts["general"] == 1

    # The preview: who would get a Korean billing chat now, and why not the others.
    ko = AgentClient(platform.router_target, platform.secret, "demo", "ko-preview")
    ja = AgentClient(platform.router_target, platform.secret, "demo", "ja-preview")
    try:
        await ja.sign_in({"ja": 5}, {"billing": 5})
        status, preview = await admin.call(
            "POST",
            "/api/admin/preview",
            {"channel": "chat", "language": "ko", "skills": ["billing"], "queue": "general"},
        )
        assert status == 200, preview
        assert preview["outcome"] == "waiting" and preview["candidates"] == []
        assert {
            "agent_id": "ja-preview",
            "reasons": ["language"],
            "detail": "does not speak ko",
        } in (preview["excluded"])
        # The moved contact goes to the first Korean speaker: it was kept, not lost.
        await ko.sign_in({"ko": 5}, {"billing": 4})
        offer = await ko.next_offer()
        assert offer.contact.contact_id == "waits-1"
        await ko.accept(offer)
        status, preview = await admin.call(
            "POST",
            "/api/admin/preview",
            {"channel": "email", "language": "ko", "skills": "billing"},
        )
        assert preview["outcome"] == "offered" and preview["agent_id"] == "ko-preview"
        assert preview["queue"] == "general"
    finally:
        await ko.close()
        await ja.close()

    # Audited: who, when, what.
    status, audit = await admin.call("GET", "/api/admin/audit")
    assert [e["action"] for e in audit["entries"]] == [
        "routing.apply",
        "agent.add",
    ]  # the refused edit left no trace
    entry = audit["entries"][0]
    assert (entry["actor"], entry["action"], entry["version"]) == (
        "admin-1",
        "routing.apply",
        applied["version"],
    )
    removed = [line for line in entry["changes"]["diff"].splitlines() if line.startswith("-")]
    assert any("name: complaints" in line for line in removed)
    assert entry["at"] > 0
    if nats_access == "authorised":  # the chat needed nothing beyond its permissions
        assert request.getfixturevalue("secured_nats").violations() == []


async def test_a_supervisor_views_and_previews_and_tenants_stay_apart(
    platform: Platform,
) -> None:
    sup = await Console(platform).login("sup-1", "demo-sup-1")
    status, routing = await sup.call("GET", "/api/admin/routing")
    assert status == 200 and routing["may_change"] is False
    status, _ = await sup.call("POST", "/api/admin/routing", {"yaml": routing["yaml"]})
    assert status == 403
    status, _ = await sup.call("POST", "/api/admin/preview", {"channel": "chat", "language": "ko"})
    assert status == 200
    agent = await Console(platform).login("ko-1", "demo-ko-1")
    assert (await agent.call("GET", "/api/admin/routing"))[0] == 403
    assert (await agent.call("POST", "/api/admin/preview", {"language": "ko"}))[0] == 403

    # acme's administrator sees and changes acme's routing only.
    acme = Console(platform, auth.mint(platform.secret, "acme", "acme-admin", ["admin"]))
    status, theirs = await acme.call("GET", "/api/admin/routing")
    assert status == 200 and theirs["tenant"] == "acme" and "complaints" not in theirs["yaml"]
    mine_before = (await sup.call("GET", "/api/admin/routing"))[1]
    status, _ = await acme.call(
        "POST", "/api/admin/routing", {"yaml": "queues:\n  - name: general\n  - name: acme-vip\n"}
    )
    assert status == 200
    mine_after = (await sup.call("GET", "/api/admin/routing"))[1]
    assert mine_after == mine_before
    assert (await sup.call("GET", "/api/admin/audit"))[1]["entries"] == []
    assert (await acme.call("GET", "/api/admin/audit"))[1]["entries"][0]["actor"] == "acme-admin"

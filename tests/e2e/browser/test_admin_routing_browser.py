"""A routing step changed in the console takes effect while a contact waits: a Japanese email
waits in `general` while only a Korean and English speaker is signed in; an administrator adds a
step that also accepts English speakers, in the console's routing editor, and the waiting
contact is offered to the signed-in agent at once, without a restart and without being lost.
Screenshots: admin-routing-*.png."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import yaml
from playwright.async_api import expect

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.testing.contacts import contact_created
from switchboard.v1 import contact_pb2, router_pb2, router_pb2_grpc

from .conftest import SECRET
from .test_inbox_browser import sign_in


async def waiting(platform: Any) -> dict[str, int]:
    token = auth.mint(SECRET, "demo", "wallboard", ["supervisor"])
    async with sb_grpc.channel(platform.running.router_target, token) as ch:
        stats = await router_pb2_grpc.RouterServiceStub(ch).GetQueueStats(
            router_pb2.GetQueueStatsRequest()
        )
    return {q.queue: q.waiting for q in stats.queues}


async def test_a_routing_step_changed_in_the_console_reaches_a_waiting_contact(
    platform: Any, pages: Any
) -> None:
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")

    # A Japanese email: nobody signed in speaks Japanese, so it waits in general.
    event = contact_created(
        uuid.uuid4().hex,
        tenant="demo",
        channel=contact_pb2.CHANNEL_EMAIL,
        email="haruto@example.com",
        name="佐藤 陽翔",
        language="ja",
        queue="general",
        subject="請求について",
        text="請求書が二重に届きました。",
    )
    await platform.bus.publish(event)
    for _ in range(150):
        if (await waiting(platform)).get("general") == 1:
            break
        await asyncio.sleep(0.1)
    assert (await waiting(platform))["general"] == 1
    await expect(inbox.get_by_test_id("offer")).to_have_count(0)

    # The administrator adds a first step to general: English speakers too, from the start.
    admin = await pages.new(f"{platform.url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await admin.get_by_test_id("tab-routing").click()
    editor = admin.get_by_test_id("routing-yaml")
    await expect(editor).to_have_value(re.compile(r"queues:"))
    routing = yaml.safe_load(await editor.input_value())
    general = next(q for q in routing["queues"] if q["name"] == "general")
    general["steps"].insert(0, {"name": "english-too", "after": "0s", "add_languages": ["en"]})
    await editor.fill(yaml.safe_dump(routing, allow_unicode=True, sort_keys=False))
    await admin.get_by_test_id("routing-apply").click()
    await expect(admin.get_by_test_id("routing-result")).to_have_attribute("data-state", "ok")
    await pages.shot(admin, "admin-routing-applied")

    # The waiting contact is offered to the agent who speaks English, and was never lost.
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_count(1)
    await expect(offer).to_contain_text("請求について")
    await pages.shot(inbox, "admin-routing-offer")
    assert (await waiting(platform)).get("general", 0) == 0

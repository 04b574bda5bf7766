"""Supervision of a live chat in chromium against the real platform: a customer chats with
ko-1, the supervisor opens the chat from the wallboard and follows both sides live, sends the
agent a private note that shows in the agent's inbox and never in the customer's widget, and the
case's audit trail records watching, the note and the end of watching."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from playwright.async_api import expect

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc

from .conftest import SECRET, Platform
from .test_inbox_browser import start_chat
from .test_inbox_first_hour import agent
from .test_wallboard_browser import open_board

NOTE = "환불 규정을 먼저 안내해 주세요"


async def audit_actions(platform: Platform, contact_id: str, wanted: set[str]) -> list[Any]:
    """The audit trail of the contact's case once it has every action in `wanted`."""
    token = auth.mint(SECRET, "demo", "auditor", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)

        async def complete() -> list[Any]:
            while True:
                listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
                if listed.cases:
                    trail = await stub.GetAuditTrail(
                        case_pb2.GetAuditTrailRequest(case_id=listed.cases[0].case_id)
                    )
                    if wanted <= {e.action for e in trail.entries}:
                        assert trail.intact
                        return list(trail.entries)
                await asyncio.sleep(0.2)

        return await asyncio.wait_for(complete(), 15)


async def test_supervisor_watches_a_chat_and_whispers_to_the_agent(
    platform: Platform, pages: Any
) -> None:
    inbox = await agent(pages, platform)
    board = await open_board(pages, platform.url)
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    await inbox.get_by_test_id("offer").get_by_test_id("offer-accept").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)

    # The live chat on the wallboard, with its agent and the customer waiting for an answer.
    row = board.get_by_test_id("wb-live-chat").filter(has_text="김민지")
    await expect(row).to_contain_text("이수진")
    await expect(row.get_by_test_id("wb-live-waiting")).not_to_have_text("–")
    contact_id = await row.get_attribute("data-contact-id")
    assert contact_id
    await pages.shot(board, "wallboard-live-chats")
    await row.get_by_test_id("wb-watch").click()

    watch = board.get_by_test_id("watch")
    thread = watch.get_by_test_id("watch-thread")
    await expect(watch.get_by_test_id("watch-who")).to_contain_text("김민지")
    await expect(thread.locator("[data-author=customer]")).to_have_text(
        [re.compile("요금이 두 번 청구되었어요")]
    )
    # Both sides, live: the customer's next message and the agent's answer.
    await customer.locator("#text").fill("환불 가능한가요?")
    await customer.locator("#text").press("Enter")
    await expect(thread.locator("[data-author=customer]")).to_have_count(2)
    await expect(thread.locator("[data-author=customer]").last).to_contain_text("환불 가능한가요?")
    box = inbox.get_by_test_id("reply-text")
    await box.fill("확인해 보겠습니다")
    await box.press("Control+Enter")
    await expect(thread.locator("[data-author=agent]")).to_contain_text("확인해 보겠습니다")
    await expect(customer.locator("#messages li.agent .text")).to_have_text("확인해 보겠습니다")
    # Watching is read-only: the board has no way to write to the customer.
    await expect(watch.locator("#text, [data-testid=reply-text]")).to_have_count(0)

    # The private note: in the agent's inbox, marked, never at the customer's.
    await watch.get_by_test_id("note-text").fill(NOTE)
    await watch.get_by_test_id("note-send").click()
    await expect(thread.get_by_test_id("watch-note")).to_contain_text(NOTE)
    note = inbox.get_by_test_id("thread").get_by_test_id("supervisor-note")
    await expect(note).to_contain_text(NOTE)
    await expect(note).to_contain_text("관리자 메모")  # the agent's inbox is in Korean
    await pages.shot(board, "wallboard-watching-chat")
    await pages.shot(inbox, "inbox-supervisor-note")
    # The agent's next message reaches the customer after the note would have.
    await box.fill("환불은 영업일 기준 3일 걸립니다")
    await box.press("Control+Enter")
    await expect(customer.locator("#messages li.agent .text")).to_have_count(2)
    await expect(customer.locator("body")).not_to_contain_text(NOTE)
    await expect(customer.locator("body")).not_to_contain_text("관리자 메모")
    await pages.shot(customer, "widget-without-supervisor-note")

    await watch.get_by_test_id("watch-close").click()
    await expect(watch).to_be_hidden()

    entries = await audit_actions(
        platform,
        contact_id,
        {"supervision_started", "supervisor_note", "supervision_stopped", "note_added"},
    )
    acts = [(e.actor, e.action) for e in entries if e.actor.startswith("supervisor:")]
    assert acts == [
        ("supervisor:sup-1", "supervision_started"),
        ("supervisor:sup-1", "supervisor_note"),
        ("supervisor:sup-1", "supervision_stopped"),
    ]
    noted = next(e for e in entries if e.action == "supervisor_note")
    assert json.loads(noted.data_json)["agent_id"] == "ko-1"
    # The note is kept in the case as an internal note by the supervisor.
    token = auth.mint(SECRET, "demo", "auditor", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
        case = await stub.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))
    assert [(n.author, n.text) for n in case.notes] == [("sup-1", NOTE)]
    assert pages.errors == []

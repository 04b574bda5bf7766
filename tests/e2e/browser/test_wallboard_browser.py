"""The supervisors' wallboard in chromium against the real platform: who counts as available,
who counts as waiting, an agent made available or signed out from the board, the day in the tenant's time zone, a board that fits a 1600×1000 screen,
and the day's charts read from the record (they survive a restart of the chat service).

The demo tenant is a Seoul centre (the chat's default configuration gives it Asia/Seoul)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect

from switchboard.case.adapters import keyring, orm
from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.inbox import service as inbox_service
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, contact_pb2, router_pb2, router_pb2_grpc

from .test_inbox_browser import sign_in, start_chat

SEOUL = ZoneInfo("Asia/Seoul")


async def open_board(pages: Any, url: str, viewport: dict[str, int] | None = None) -> Any:
    board = await pages.new(f"{url}/wallboard")
    if viewport:
        await board.set_viewport_size(viewport)
    await sign_in(board, "sup-1", "demo-sup-1")
    await expect(board.get_by_test_id("wb-waiting")).to_have_text("0")
    return board


async def record_voice_calls(case: Any, arrivals: list[tuple[datetime, str]]) -> None:
    """Calls as the case service records them (tenant demo): ("answered-10s", "answered-40s" or
    "abandoned") at each arrival."""
    async with case.sessions.begin() as s:
        keys = keyring.of(s)
        sealed = keys.seal(s, "demo", "wb-k1", "Ana")
        s.add(
            orm.Customer(id="wb-k1", tenant="demo", display_name=sealed, created_at=arrivals[0][0])
        )
        await s.flush()
        s.add(
            orm.Case(id="wb-case1", tenant="demo", customer_id="wb-k1", reference="C-WBWBWB",
                     status=case_pb2.CASE_STATUS_IN_PROGRESS,
                     subject=keys.seal(s, "demo", "wb-k1", "billing"), assigned_agent_id="ko-1",
                     created_at=arrivals[0][0], updated_at=arrivals[0][0])
        )  # fmt: skip
        await s.flush()
        for i, (at, outcome) in enumerate(arrivals):
            extra: dict[str, Any]
            if outcome == "abandoned":
                extra = {"abandoned_at": at + timedelta(seconds=60)}
            else:
                wait = int(outcome.removeprefix("answered-").removesuffix("s"))
                extra = {
                    "agent_id": "ko-1",
                    "assigned_at": at + timedelta(seconds=wait),
                    "wait_ms": wait * 1000,
                    "ended_at": at + timedelta(seconds=wait + 120),
                    "talk_ms": 120_000,
                }
            s.add(
                orm.Contact(contact_id=f"wb-v{i}", tenant="demo", case_id="wb-case1",
                            channel=contact_pb2.CHANNEL_VOICE, language="ko", skills=[],
                            queue="general", subject="", status="ended", created_at=at,
                            queued_at=at, **extra)
            )  # fmt: skip


def earlier_today(minutes: int) -> datetime:
    """`minutes` ago, but not before the start of today in Seoul."""
    now = datetime.now(SEOUL)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return max(midnight + timedelta(seconds=1), now - timedelta(minutes=minutes)).astimezone(UTC)


def quarter_start(at: datetime) -> datetime:
    """The start of the quarter hour of `at` (plus a second: still the same local day)."""
    return at.replace(minute=at.minute - at.minute % 15, second=1, microsecond=0)


async def test_agent_with_open_contacts_is_not_available(platform: Any, pages: Any) -> None:
    board = await open_board(pages, platform.url)
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    await expect(board.get_by_test_id("wb-state-available")).to_have_text("1")

    for n in range(3):  # the chat capacity: three conversations at once
        customer = await pages.new(f"{platform.url}/?tenant=demo")
        await start_chat(customer, f"고객{n}", "요금 문의입니다")
        await inbox.get_by_test_id("offer").get_by_test_id("offer-accept").click()
        await expect(inbox.get_by_test_id("contact-item")).to_have_count(n + 1)
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")

    await expect(board.get_by_test_id("wb-state-available")).to_have_text("0")
    await expect(board.get_by_test_id("wb-state-busy")).to_have_text("1")
    row = board.get_by_test_id("wb-agents").locator("tr", has_text="이수진")
    await expect(row.locator("td").nth(1)).to_have_attribute("class", "state-busy")
    await expect(row.locator("td").nth(2)).to_have_text("3")
    await pages.shot(board, "wallboard-agent-at-capacity")
    assert pages.errors == []


async def test_a_supervisor_makes_an_agent_available_and_signs_the_agent_out(
    platform: Any, pages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox_service, "REPORT_SECONDS", 0.5)  # the day report, every minute
    board = await open_board(pages, platform.url)
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    presence = inbox.get_by_test_id("presence")
    await expect(presence).to_have_attribute("data-presence", "available")
    row = board.get_by_test_id("wb-agents").locator('tr[data-agent="ko-1"]')
    # Available: nothing to make available, only a sign-out.
    await expect(row.get_by_test_id("wb-agent-sign-out")).to_have_count(1)
    await expect(row.get_by_test_id("wb-agent-available")).to_have_count(0)

    await presence.select_option("break:lunch")
    await expect(row.get_by_test_id("wb-agent-state")).to_have_attribute("class", "state-break")
    await expect(row.get_by_test_id("wb-agent-state")).to_have_text("휴식 — 점심")  # localised
    await pages.shot(board, "wallboard-agent-on-break")
    await row.get_by_test_id("wb-agent-available").click()
    # The agent's own desk shows it at once, and so does the board.
    await expect(presence).to_have_attribute("data-presence", "available")
    await expect(row.get_by_test_id("wb-agent-state")).to_have_attribute("class", "state-available")
    await expect(row.get_by_test_id("wb-agent-available")).to_have_count(0)
    # The agent's day from the record: signed in, and one break taken.
    await expect(row.get_by_test_id("wb-agent-break-today")).to_contain_text("(1)")
    await expect(row.get_by_test_id("wb-agent-signed-in-today")).not_to_have_text("–")
    await pages.shot(board, "wallboard-agent-day")

    await row.get_by_test_id("wb-agent-sign-out").click()
    await expect(presence).to_have_attribute("data-presence", "offline")
    await expect(inbox.get_by_test_id("presence-notice")).to_contain_text("박지훈")
    await expect(row.get_by_test_id("wb-agent-state")).to_have_attribute("class", "state-offline")
    await expect(row.get_by_test_id("wb-agent-sign-out")).to_have_count(0)
    await expect(board.get_by_test_id("board-error")).to_be_hidden()
    assert pages.errors == []


async def test_offered_contact_counts_as_waiting(platform: Any, pages: Any) -> None:
    board = await open_board(pages, platform.url)
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")

    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_attribute("data-channel", "chat")
    # Offered, not accepted: the customer is still waiting.
    await expect(board.get_by_test_id("wb-waiting")).to_have_text("1")
    queue_waiting = board.get_by_test_id("wb-queues").get_by_test_id("wb-queue-waiting")
    await expect(queue_waiting.filter(has_text="1")).to_have_count(1)
    await pages.shot(board, "wallboard-offered-waiting")

    await offer.get_by_test_id("offer-accept").click()
    await expect(board.get_by_test_id("wb-waiting")).to_have_text("0")
    assert pages.errors == []


async def test_hourly_chart_is_in_the_tenant_time_zone(platform: Any, pages: Any) -> None:
    arrived = earlier_today(2)
    await record_voice_calls(platform.running.case, [(arrived, "answered-10s")])
    board = await open_board(pages, platform.url)
    seoul_hour = arrived.astimezone(SEOUL).hour
    bar = board.get_by_test_id("chart-day").locator(f"rect[data-hour='{seoul_hour}']")
    await expect(bar).to_have_attribute("data-answered", "1")
    await expect(board.get_by_test_id("chart-day")).to_contain_text("Asia/Seoul")
    await expect(board.get_by_test_id("chart-day")).not_to_contain_text("UTC")
    await pages.shot(board, "wallboard-hourly-seoul")
    assert pages.errors == []


async def test_board_fits_1600_by_1000_without_scrolling(platform: Any, pages: Any) -> None:
    await record_voice_calls(
        platform.running.case,
        [(earlier_today(9), "answered-10s"), (earlier_today(5), "abandoned")],
    )
    # A floor of twenty agents signed in, some on a break.
    for n in range(20):
        token = auth.mint(platform.running.secret, "demo", f"floor-{n}", ["agent"])
        async with sb_grpc.channel(platform.running.router_target, token) as ch:
            await router_pb2_grpc.RouterServiceStub(ch).SignIn(
                router_pb2.SignInRequest(
                    agent_id=f"floor-{n}",
                    display_name=f"상담원 {n}",
                    languages=[router_pb2.LanguageSkill(language="ko", proficiency=4)],
                    presence=router_pb2.PRESENCE_BREAK if n % 4 == 0 else 0,
                )
            )
    board = await open_board(pages, platform.url, {"width": 1600, "height": 1000})
    await expect(board.get_by_test_id("wb-agents").locator("tr")).to_have_count(20)
    await expect(board.get_by_test_id("wb-queues").locator("tr")).not_to_have_count(0)
    await expect(board.get_by_test_id("chart-day").locator("rect[data-hour]")).not_to_have_count(0)
    sizes = await board.evaluate(
        "({scroll: document.documentElement.scrollHeight, inner: window.innerHeight,"
        " scrollW: document.documentElement.scrollWidth, innerW: window.innerWidth})"
    )
    await board.screenshot(path=str(pages_dir() / "wallboard-1600x1000.png"))
    assert sizes["scroll"] <= sizes["inner"], sizes
    assert sizes["scrollW"] <= sizes["innerW"], sizes
    assert pages.errors == []


def pages_dir() -> Any:
    from .conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


async def test_day_charts_come_from_the_record_after_a_chat_restart(
    platform: Any, pages: Any
) -> None:
    # Earlier today, within one quarter hour: two calls answered (10 s within the 20 s
    # threshold, 40 s not), one abandoned after a minute. SL = 1 / 3 by the one formula.
    first = quarter_start(earlier_today(20))
    await record_voice_calls(
        platform.running.case,
        [(first, "answered-10s"), (first + timedelta(seconds=1), "answered-40s"),
         (first + timedelta(seconds=2), "abandoned")],
    )  # fmt: skip
    running = platform.running
    await running.chat.stop()
    restarted = ChatApp(running.chat.settings)
    await restarted.start()
    running.chat = restarted
    try:
        board = await open_board(pages, running.chat_url)
        points = board.get_by_test_id("chart-sl").get_by_test_id("wb-day-point")
        await expect(points).to_have_count(1)
        await expect(points).to_have_attribute("data-value", "33.3")
        bars = board.get_by_test_id("chart-day").locator("rect[data-answered]")
        answered = await bars.evaluate_all(
            "rs => rs.reduce((n, r) => n + Number(r.dataset.answered), 0)"
        )
        abandoned = await bars.evaluate_all(
            "rs => rs.reduce((n, r) => n + Number(r.dataset.abandoned), 0)"
        )
        assert (answered, abandoned) == (2, 1)
        await pages.shot(board, "wallboard-day-from-record")
        assert pages.errors == []
    finally:
        await pages.close()
        await restarted.stop()  # the platform stops the chat it started

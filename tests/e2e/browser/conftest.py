"""Browser tests of the web chat, the agent inbox and the wallboard: the real platform (case,
router and chat apps on a real nats-server, real gRPC and SQLite) driven by Debian's chromium
through Playwright. No browser is downloaded: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and
/usr/bin/chromium (`make system-deps` installs it). Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.js import api as js_api

from switchboard.chat.bootstrap import ChatApp
from switchboard.core.bus import Bus

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")

from ..conftest import Platform as RunningPlatform
from ..conftest import korean_email, running_platform

SECRET = "browser-test-secret"
CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "screenshots"
TIMEOUT_MS = 15_000


@dataclass
class Platform:
    url: str
    bus: Bus
    chat: ChatApp
    case_port: int

    running: RunningPlatform

    async def publish_article(self, title: str, body: str) -> None:
        await self.running.publish_article(title, body)

    async def email_contact(self, text: str, subject: str = "청구서 문의") -> str:
        """Publish an email contact as the email channel does."""
        event = korean_email(
            "demo", "seojun@example.com", "박서준", subject, text, "<bill-2@example.com>"
        )
        await self.bus.publish(event)
        contact_id = event.contact.contact_id
        return contact_id

    async def read(self, subject: str, stream: str, event_type: Any, count: int = 1) -> list[Any]:
        sub = await self.bus.js.pull_subscribe(
            subject,
            stream=stream,
            config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.ALL),
        )
        try:
            msgs = await sub.fetch(count, timeout=TIMEOUT_MS / 1000)
        finally:
            await sub.unsubscribe()
        return [event_type.FromString(m.data) for m in msgs]


@pytest.fixture
async def platform(nats_url: str, database_url: str) -> AsyncIterator[Platform]:
    bus = await Bus.connect(nats_url, source="test")
    try:
        async with running_platform(nats_url, database_url, SECRET) as made:
            yield Platform(made.chat_url, bus, made.chat, made.case.port, made)
    finally:
        await bus.drain()


@pytest.fixture(autouse=True)
def expect_timeout() -> None:
    """expect() waits as long as the pages' own actions do (a loaded machine is slow)."""
    from playwright.async_api import expect

    expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (Debian package chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


class Pages:
    """Browser contexts (one per person) with console errors collected, and screenshots."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []

    async def new(self, url: str, locale: str = "ko-KR") -> Any:
        context = await self.browser.new_context(
            locale=locale, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        await page.goto(url)
        return page

    async def shot(self, page: Any, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def pages(browser: Any) -> AsyncIterator[Pages]:
    p = Pages(browser)
    try:
        yield p
    finally:
        await p.close()

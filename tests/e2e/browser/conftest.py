"""Browser tests of the web chat, the agent inbox and the wallboard: the real platform (case,
router and chat apps on a real nats-server, real gRPC and SQLite) driven by Debian's chromium
through Playwright. No browser is downloaded: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 and
/usr/bin/chromium (`make system-deps` installs it). Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Each phase's report on the test, for fixtures that explain a failure (`pages`)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


class Pages:
    """Browser contexts (one per person) with every page's script errors collected (popups
    too), and screenshots. What each page did (its console, its API requests with their status
    and time, its errors) is kept, and printed when the test fails: a failure on a loaded CI
    machine explains itself."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.errors: list[str] = []
        self.log: list[str] = []
        self._started = time.monotonic()
        self._pages: list[Any] = []

    def _note(self, who: str, what: str) -> None:
        self.log.append(f"{time.monotonic() - self._started:8.3f}s {who}: {what}")

    def _watch(self, page: Any) -> None:
        who = f"page {len(self._pages) + 1}"
        self._pages.append(page)
        self._note(who, "opened")

        def error(exc: Any) -> None:
            self.errors.append(str(exc))
            self._note(who, f"error {exc}")

        def console(message: Any) -> None:
            if message.type != "verbose":
                self._note(who, f"console.{message.type} {message.text}")

        def navigated(frame: Any) -> None:
            if frame == page.main_frame:
                self._note(who, f"at {frame.url}")

        def failed(request: Any) -> None:
            self._note(who, f"{request.method} {request.url} failed: {request.failure}")

        def sent(request: Any) -> None:
            if "/api/" in request.url:
                self._note(who, f"{request.method} {request.url}")

        def answered(response: Any) -> None:
            if "/api/" in response.url or response.status >= 400:
                self._note(who, f"{response.status} {response.url}")

        for name, handler in (
            ("pageerror", error),
            ("console", console),
            ("framenavigated", navigated),
            ("requestfailed", failed),
            ("request", sent),
            ("response", answered),
        ):
            page.on(name, handler)

    async def new(self, url: str, locale: str = "ko-KR") -> Any:
        context = await self.browser.new_context(
            locale=locale, viewport={"width": 1280, "height": 800}
        )
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        context.on("page", self._watch)  # this page, and the popups it opens
        page = await context.new_page()
        await page.goto(url)
        return page

    async def explain(self) -> None:
        """What the pages did, and a screenshot of each as it is now (test-artifacts)."""
        print("---- the browser pages' log ----")
        print("\n".join(self.log))
        for n, page in enumerate(self._pages, 1):
            if page.is_closed():
                continue
            with contextlib.suppress(Exception):
                name = f"failed-page-{n}"
                await self.shot(page, name, timeout=5_000)
                print(f"page {n} ({page.url}): {SCREENSHOTS / name}.png")

    async def shot(self, page: Any, name: str, timeout: float | None = None) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(
            path=str(SCREENSHOTS / f"{name}.png"), full_page=True, timeout=timeout
        )

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def pages(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    p = Pages(browser)
    try:
        yield p
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            await p.explain()
    finally:
        await p.close()

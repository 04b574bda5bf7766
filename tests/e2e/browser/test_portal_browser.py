"""The customer portal in chromium: a customer whose case an earlier web chat opened asks for a
sign-in link, opens it from the mail the platform sent (caught by a real SMTP catcher), sees the
case with the agent's answer, replies, and the agent gets the reply in the inbox; the knowledge
base answers in the customer's language and suggests articles while a new request is typed; a
catalogue form is checked in the page, sent, and reaches an agent with the right skill as a case of
its template."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from switchboard.cli.mailcatcher import MailCatcher
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

from ..conftest import running_platform
from .conftest import SECRET, Platform
from .test_inbox_browser import start_chat
from .test_inbox_first_hour import agent

LINK_RE = re.compile(r"http://\S+/portal#login=\S+")


@pytest.fixture
async def mail(tmp_path: Path) -> AsyncIterator[MailCatcher]:
    catcher = await MailCatcher(tmp_path).start()
    try:
        yield catcher
    finally:
        await catcher.stop()


@pytest.fixture
async def platform(nats_url: str, database_url: str, mail: MailCatcher) -> AsyncIterator[Platform]:
    """The browser tests' platform, with the case service mailing through the catcher."""
    bus = await Bus.connect(nats_url, source="test")
    smtp = {"CASE_SMTP_HOST": "127.0.0.1", "CASE_SMTP_PORT": mail.smtp_port}
    try:
        async with running_platform(nats_url, database_url, SECRET, case_settings=smtp) as made:
            yield Platform(made.chat_url, bus, made.chat, made.case.port, made)
    finally:
        await bus.drain()


async def sign_in_link(mail: MailCatcher, address: str) -> str:
    for _ in range(300):
        for caught in mail.mails():
            if address in caught.recipients and (found := LINK_RE.search(caught.text)):
                return found.group(0)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no sign-in mail to {address}")


async def test_customer_signs_in_by_mail_replies_and_the_agent_sees_it(
    platform: Platform, pages: Any, mail: MailCatcher
) -> None:
    # An earlier web chat (from minji@example.com) opened the case; the agent answered in it.
    inbox = await agent(pages, platform)
    chat = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(chat, "김민지", "지난달 요금이 두 번 나갔어요.")
    await inbox.get_by_test_id("offer-accept").click()
    first = inbox.get_by_test_id("contact-item")
    await expect(first).to_have_count(1)
    chat_id = await first.get_attribute("data-contact-id")
    await inbox.get_by_test_id("reply-text").fill("확인 후 환불해 드리겠습니다.")
    await inbox.get_by_test_id("reply-send").click()
    await expect(chat.locator("#messages li.agent .text")).to_have_text(
        "확인 후 환불해 드리겠습니다."
    )

    # The customer asks for a link: the page says the same for any address.
    customer = await pages.new(f"{platform.url}/portal?tenant=demo")
    await expect(customer.locator("h1")).to_have_text("고객 센터")
    await customer.get_by_test_id("signin-email").fill("minji@example.com")
    await customer.get_by_test_id("signin-send").click()
    await expect(customer.get_by_test_id("signin-sent")).to_be_visible()
    await pages.shot(customer, "portal-link-sent")
    link = await sign_in_link(mail, "minji@example.com")
    [sent] = [m for m in mail.mails() if "minji@example.com" in m.recipients]
    assert sent.subject == "로그인 링크"

    # The link signs in (and leaves the address bar); the case is there with the answer.
    await customer.goto(link)
    await expect(customer.get_by_test_id("who")).to_contain_text("minji@example.com")
    assert "login=" not in customer.url
    item = customer.get_by_test_id("case-item")
    await expect(item).to_have_count(1)
    await expect(item.locator("[data-status]")).to_have_attribute("data-status", "assigned")
    await item.locator("button").click()
    messages = customer.get_by_test_id("case-msg")
    await expect(messages.and_(customer.locator("[data-author=customer]"))).to_contain_text(
        "지난달 요금이 두 번 나갔어요."
    )
    await expect(messages.and_(customer.locator("[data-author=agent]"))).to_contain_text(
        "확인 후 환불해 드리겠습니다."
    )
    await pages.shot(customer, "portal-case")

    # The customer replies; the reply reaches the agent as a contact of the same case.
    await customer.get_by_test_id("reply-text").fill("카드 취소로 부탁드립니다.")
    await customer.get_by_test_id("reply-send").click()
    await expect(customer.get_by_test_id("reply-sent")).to_be_visible()
    await inbox.get_by_test_id("offer-accept").click()
    items = inbox.get_by_test_id("contact-item")
    await expect(items).to_have_count(2)
    await inbox.locator(f"[data-testid=contact-item]:not([data-contact-id='{chat_id}'])").click()
    await expect(inbox.get_by_test_id("thread")).to_contain_text("카드 취소로 부탁드립니다.")
    await expect(inbox.get_by_test_id("reply-via")).to_contain_text("minji@example.com")
    await pages.shot(inbox, "portal-reply-in-inbox")

    # The used link does not sign in again.
    other = await pages.new(link)
    await expect(other.get_by_test_id("portal-error")).to_be_visible()
    await expect(other.get_by_test_id("signin")).to_be_visible()
    await expect(other.get_by_test_id("case-item")).to_have_count(0)
    assert pages.errors == []


async def test_knowledge_base_votes_and_suggestions_in_japanese(
    platform: Platform, pages: Any, mail: MailCatcher
) -> None:
    await platform.publish_article("返金について refund", "返金には三日かかります。")
    customer = await pages.new(f"{platform.url}/portal?tenant=demo", locale="ja-JP")
    await expect(customer.locator("h1")).to_have_text("ヘルプセンター")
    await customer.get_by_test_id("kb-query").fill("返金")
    await customer.get_by_test_id("kb-search").click()
    hit = customer.get_by_test_id("kb-hit")
    await expect(hit).to_have_count(1)
    await expect(hit).to_contain_text("返金には三日かかります。")
    await hit.get_by_test_id("kb-helpful").click()
    await expect(hit.get_by_test_id("kb-thanks")).to_be_visible()
    await expect(hit.get_by_test_id("kb-helpful")).to_have_text("はい (1)")
    await pages.shot(customer, "portal-kb-ja")

    # Signed in, a new request suggests the article while it is typed.
    # From seojun@example.com; recorded before the customer asks for a link (an address the
    # case store does not know yet gets no mail).
    await reference_of(platform, await platform.email_contact("문의"))
    await customer.get_by_test_id("signin-email").fill("seojun@example.com")
    await customer.get_by_test_id("signin-send").click()
    await customer.goto(await sign_in_link(mail, "seojun@example.com"))
    await customer.get_by_test_id("request-subject").fill("返金")
    await customer.get_by_test_id("request-text").fill("返金はいつですか")
    await expect(customer.get_by_test_id("suggestion")).to_have_count(1)
    await pages.shot(customer, "portal-suggestions-ja")
    await customer.get_by_test_id("request-send").click()
    await expect(customer.get_by_test_id("request-sent")).to_be_visible()
    assert pages.errors == []


async def test_customer_sends_a_catalogue_form_and_the_agent_gets_its_fields(
    platform: Platform, pages: Any, mail: MailCatcher
) -> None:
    # A known customer (a case opened by hand, so nothing is routed before the form).
    token = auth.mint(SECRET, "demo", "test-supervisor", ["supervisor"])
    async with sb_grpc.channel(platform.running.case_target, token) as ch:
        await case_pb2_grpc.CaseServiceStub(ch).CreateCase(
            case_pb2.CreateCaseRequest(
                subject="가입",
                identities=[
                    contact_pb2.CustomerIdentity(
                        kind=contact_pb2.IDENTITY_KIND_EMAIL, value="jiwoo@example.com"
                    )
                ],
                customer_name="최지우",
            )
        )
    inbox = await agent(pages, platform)  # ko-1: Korean, technical skill
    customer = await pages.new(f"{platform.url}/portal?tenant=demo")
    await customer.get_by_test_id("signin-email").fill("jiwoo@example.com")
    await customer.get_by_test_id("signin-send").click()
    await customer.goto(await sign_in_link(mail, "jiwoo@example.com"))

    # The catalogue lists the tenant's forms in the customer's language.
    items = customer.get_by_test_id("catalogue-item")
    await expect(items).to_have_count(3)
    await expect(items.nth(1)).to_contain_text("장비 요청")
    await pages.shot(customer, "portal-catalogue")
    await customer.locator("[data-template=hardware-request] button").click()
    form = customer.get_by_test_id("catalogue-form")
    await expect(customer.get_by_test_id("catalogue-name")).to_have_text("장비 요청")

    # Checked in the page: required fields and a date, each with its own message.
    await customer.get_by_test_id("field-item").select_option("laptop")
    await customer.get_by_test_id("catalogue-send").click()
    await expect(customer.get_by_test_id("catalogue-invalid")).to_be_visible()
    await expect(customer.get_by_test_id("field-error-needed_by")).to_have_text("필수 항목입니다.")
    await expect(customer.get_by_test_id("field-error-reason")).to_have_text("필수 항목입니다.")
    await expect(customer.get_by_test_id("field-error-item")).to_be_hidden()
    await pages.shot(customer, "portal-catalogue-invalid")
    await customer.get_by_test_id("field-needed_by").fill("2027-01-15")
    await customer.get_by_test_id("field-reason").fill("신규 입사자용 노트북이 필요합니다.")
    await expect(customer.get_by_test_id("field-error-reason")).to_be_hidden()
    await customer.get_by_test_id("catalogue-send").click()
    await expect(customer.get_by_test_id("catalogue-sent")).to_be_visible()
    await expect(form).to_be_hidden()

    # The agent with the skill is offered the request and sees the filled fields.
    await inbox.get_by_test_id("offer-accept").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    await inbox.get_by_test_id("contact-item").click()
    thread = inbox.get_by_test_id("thread")
    await expect(thread).to_contain_text("장비: 노트북")
    await expect(thread).to_contain_text("필요한 날짜: 2027-01-15")
    await expect(thread).to_contain_text("사유: 신규 입사자용 노트북이 필요합니다.")
    await pages.shot(inbox, "portal-catalogue-in-inbox")

    # The customer's list has the new case, named after the form.
    await expect(customer.get_by_test_id("case-item").filter(has_text="장비 요청")).to_have_count(1)
    assert pages.errors == []


async def reference_of(platform: Platform, contact_id: str) -> str:
    token = auth.mint(SECRET, "demo", "test-supervisor", ["supervisor"])
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        for _ in range(300):
            listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
            if listed.cases:
                return str(listed.cases[0].reference)
            await asyncio.sleep(0.05)
    raise AssertionError(f"contact {contact_id} never recorded")


CODE_RE = re.compile(r": ([0-9]{6})\s")


async def deflection_of(platform: Platform, name: str, wanted: float) -> dict[str, float]:
    """Today's deflection counts of demo, once `name` reached `wanted`."""
    request = case_pb2.GetReportRequest(kind=case_pb2.REPORT_KIND_DEFLECTION, interval="month")
    now = datetime.now(UTC)
    getattr(request, "from").FromDatetime(now - timedelta(days=1))
    request.to.FromDatetime(now + timedelta(days=1))
    token = auth.mint(SECRET, "demo", "test-supervisor", ["supervisor"])
    counts: dict[str, float] = {}
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        for _ in range(300):
            report = await stub.GetReport(request)
            counts = {}
            for row in report.rows:
                for v in row.values:
                    if v.name != "deflection_rate":
                        counts[v.name] = counts.get(v.name, 0) + v.value
            if counts.get(name) == wanted:
                return counts
            await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached {wanted}: {counts}")


async def mailed_code(mail: MailCatcher, address: str) -> str:
    for _ in range(300):
        for caught in mail.mails():
            if address in caught.recipients and (found := CODE_RE.search(caught.text)):
                return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no sign-in code mail to {address}")


async def test_help_centre_from_the_widget_finds_an_article_and_signs_in_by_code(
    platform: Platform, pages: Any, mail: MailCatcher
) -> None:
    await platform.publish_article("환불 안내", "환불은 영업일 기준 사흘 걸립니다.")
    reference = await reference_of(platform, await platform.email_contact("청구서가 두 번 왔어요"))
    # A customer's site embedding the widget with the help-centre entry (served here from the
    # chat's own origin, which the panel's frame-ancestors allows).
    shop = await pages.new(f"{platform.url}/healthz", locale="en-US")
    site = (
        "<!doctype html><html><head><title>Shop</title></head><body><h1>Shop</h1>"
        f'<script src="{platform.url}/widget.js" data-tenant="demo" data-language="ko" '
        'data-help-centre="true" async></script></body></html>'
    )
    await shop.route(
        "**/shop.html", lambda route: route.fulfill(body=site, content_type="text/html")
    )
    await shop.goto(f"{platform.url}/shop.html")
    launcher = shop.locator("[data-switchboard-widget] [data-sb-entry=help]")
    await expect(launcher).to_have_text("고객 센터")  # the widget's language, not the browser's
    await expect(shop.locator("[data-sb-entry=chat]")).to_have_text("상담 채팅")
    await launcher.click()
    await expect(shop.locator("[data-sb-panel=help]")).to_be_visible()
    portal = shop.frame_locator("[data-sb-panel=help]")
    await expect(portal.locator("h1")).to_have_text("고객 센터")
    await portal.get_by_test_id("kb-query").fill("환불")
    await portal.get_by_test_id("kb-search").click()
    hit = portal.get_by_test_id("kb-hit")
    await expect(hit).to_have_count(1)
    await expect(hit).to_contain_text("환불은 영업일 기준 사흘 걸립니다.")
    await pages.shot(shop, "widget-help-centre-article")

    # "My requests": signed in with the case's reference and the code mailed to its customer.
    await portal.get_by_test_id("code-reference").fill(reference)
    await portal.get_by_test_id("code-send").click()
    await expect(portal.get_by_test_id("code-sent")).to_be_visible()
    await portal.get_by_test_id("code-digits").fill("000000")
    await portal.get_by_test_id("code-signin").click()
    await expect(portal.get_by_test_id("portal-error")).to_be_visible()
    code = await mailed_code(mail, "seojun@example.com")
    await portal.get_by_test_id("code-digits").fill(code)
    await portal.get_by_test_id("code-signin").click()
    await expect(portal.get_by_test_id("who")).to_contain_text("seojun@example.com")
    await expect(portal.get_by_test_id("case-item")).to_have_count(1)
    await pages.shot(shop, "widget-help-centre-my-requests")

    # A suggested article opens in place while a new request is written.
    await portal.get_by_test_id("request-subject").fill("환불")
    await portal.get_by_test_id("request-text").fill("환불은 언제 되나요")
    suggestion = portal.get_by_test_id("suggestion")
    await expect(suggestion).to_have_count(1)
    await suggestion.get_by_test_id("suggestion-open").click()
    await expect(suggestion.locator(".body")).to_have_text("환불은 영업일 기준 사흘 걸립니다.")
    await pages.shot(shop, "widget-help-centre-suggestion")
    # The page recorded it: shown, one article opened, nothing sent yet — a deflection.
    assert await deflection_of(platform, "articles_opened", 1) == {
        "suggestions_shown": 1,
        "articles_opened": 1,
        "deflected": 1,
        "submitted_after_viewing": 0,
    }
    # Sent anyway after reading: no longer a deflection.
    await portal.get_by_test_id("request-send").click()
    await expect(portal.get_by_test_id("request-sent")).to_be_visible()
    counts = await deflection_of(platform, "submitted_after_viewing", 1)
    assert (counts["deflected"], counts["suggestions_shown"]) == (0, 1)

    # The chat entry shows the chat in the panel instead.
    await shop.locator("[data-sb-entry=chat]").click()
    await expect(shop.locator("[data-sb-panel=help]")).to_be_hidden()
    await expect(shop.locator("[data-sb-panel=chat]")).to_be_visible()
    assert pages.errors == []


async def test_a_case_opened_by_email_is_followed_and_answered_in_the_portal(
    platform: Platform, pages: Any, mail: MailCatcher
) -> None:
    # An email from seojun@example.com opens a case; the customer follows it in the portal.
    inbox = await agent(pages, platform)
    await platform.email_contact("3월 청구서가 두 번 왔습니다.")
    await inbox.get_by_test_id("offer-accept").click()
    first = inbox.get_by_test_id("contact-item")
    await expect(first).to_have_count(1)
    email_id = await first.get_attribute("data-contact-id")

    customer = await pages.new(f"{platform.url}/portal?tenant=demo")
    await customer.get_by_test_id("signin-email").fill("seojun@example.com")
    await customer.get_by_test_id("signin-send").click()
    await expect(customer.get_by_test_id("signin-sent")).to_be_visible()
    await customer.goto(await sign_in_link(mail, "seojun@example.com"))
    await expect(customer.get_by_test_id("who")).to_contain_text("seojun@example.com")
    item = customer.get_by_test_id("case-item")
    await expect(item).to_have_count(1)
    await item.locator("button").click()
    await expect(
        customer.get_by_test_id("case-msg").and_(customer.locator("[data-author=customer]"))
    ).to_contain_text("3월 청구서가 두 번 왔습니다.")
    await pages.shot(customer, "portal-email-case")

    # The reply in the portal reaches the agent, on the same case, answered by email.
    await customer.get_by_test_id("reply-text").fill("두 번째 청구를 취소해 주세요.")
    await customer.get_by_test_id("reply-send").click()
    await expect(customer.get_by_test_id("reply-sent")).to_be_visible()
    await inbox.get_by_test_id("offer-accept").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(2)
    await inbox.locator(f"[data-testid=contact-item]:not([data-contact-id='{email_id}'])").click()
    await expect(inbox.get_by_test_id("thread")).to_contain_text("두 번째 청구를 취소해 주세요.")
    await expect(inbox.get_by_test_id("reply-via")).to_contain_text("seojun@example.com")
    assert pages.errors == []

"""The customer portal over HTTP against the real platform (case, router and chat apps on a real
nats-server, real gRPC and SQL, the case service mailing through a real SMTP catcher): sign-in
links are mailed only to known customers, work once and not after they expire, and every endpoint
shows a customer only its own cases of its own tenant."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.js import api as js_api

from switchboard.cli.mailcatcher import MailCatcher
from switchboard.core import auth, portal_tokens
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.testing.contacts import contact_created
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

from .conftest import SECRET, Platform, running_platform

LINK_RE = re.compile(r"(http://\S+/portal)#login=(\S+)")


@dataclass
class Portal:
    platform: Platform
    mail: MailCatcher
    bus: Bus
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.platform.chat_url

    async def call(
        self, method: str, path: str, session: str = "", **body: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = {"authorization": f"Bearer {session}"} if session else {}
        async with self.http.request(
            method, f"{self.url}/api/portal/{path}", json=body or None, headers=headers
        ) as r:
            return r.status, await r.json()

    async def case_of(self, tenant: str, email: str, text: str) -> case_pb2.Case:
        """A case opened by an email from `email`, as the email channel publishes it."""
        contact_id = uuid.uuid4().hex
        await self.bus.publish(
            contact_created(
                contact_id,
                tenant=tenant,
                channel=contact_pb2.CHANNEL_EMAIL,
                email=email,
                name="Kim",
                language="ko",
                skills=["billing"],
                subject=f"{text} subject",
                text=text,
                conversation_id=f"<{contact_id}@example.com>",
                at=datetime.now(UTC),
                source="email-ingest",
            )
        )
        return await self.recorded(tenant, contact_id)

    async def recorded(self, tenant: str, contact_id: str) -> case_pb2.Case:
        token = auth.mint(SECRET, tenant, "test-supervisor", ["supervisor"])
        async with sb_grpc.channel(self.platform.case_target, token) as ch:
            stub = case_pb2_grpc.CaseServiceStub(ch)
            for _ in range(200):
                listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
                if listed.cases:
                    return await stub.GetCase(
                        case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id)
                    )
                await asyncio.sleep(0.05)
        raise AssertionError(f"contact {contact_id} never recorded")

    async def link_for(self, email: str, count: int = 1) -> str:
        """The link of the `count`-th sign-in mail to `email`."""
        for _ in range(300):
            mails = [m for m in self.mail.mails() if email in m.recipients]
            if len(mails) >= count:
                found = LINK_RE.search(mails[0].text)
                assert found, mails[0].text
                assert found.group(1) == f"{self.url}/portal"
                return found.group(2)
            await asyncio.sleep(0.05)
        raise AssertionError(f"no sign-in mail to {email}")

    async def sign_in(self, tenant: str, email: str) -> str:
        count = len([m for m in self.mail.mails() if email in m.recipients]) + 1
        status, _ = await self.call("POST", "link", tenant=tenant, email=email, language="ko")
        assert status == 202
        status, body = await self.call("POST", "session", token=await self.link_for(email, count))
        assert status == 200, body
        assert body["email"] == email
        return str(body["session"])


@pytest.fixture
async def portal(nats_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[Portal]:
    mail = await MailCatcher(tmp_path).start()
    bus = await Bus.connect(nats_url, source="test")
    try:
        async with (
            running_platform(
                nats_url,
                database_url,
                case_settings={
                    "CASE_SMTP_HOST": "127.0.0.1",
                    "CASE_SMTP_PORT": mail.smtp_port,
                },
            ) as platform,
            aiohttp.ClientSession() as http,
        ):
            yield Portal(platform, mail, bus, http)
    finally:
        await bus.drain()
        await mail.stop()


async def test_links_are_mailed_to_customers_only_and_work_once(portal: Portal) -> None:
    await portal.case_of("demo", "minji@example.com", "요금 문의")
    # Known and unknown addresses get the same answer; only the customer gets a mail.
    known = await portal.call("POST", "link", tenant="demo", email="minji@example.com")
    unknown = await portal.call("POST", "link", tenant="demo", email="nobody@example.com")
    assert known == unknown == (202, {"ok": True})
    link = await portal.link_for("minji@example.com")
    assert not [m for m in portal.mail.mails() if "nobody@example.com" in m.recipients]
    [mail] = [m for m in portal.mail.mails() if "minji@example.com" in m.recipients]
    assert mail.subject == "Your sign-in link"  # no language asked: English

    # A link signs in once; a second use, a forged or an expired link is refused.
    status, body = await portal.call("POST", "session", token=link)
    assert status == 200 and body["email"] == "minji@example.com"
    assert (await portal.call("POST", "session", token=link))[0] == 401
    forged = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
    assert (await portal.call("POST", "session", token=forged))[0] == 401
    grant = portal_tokens.open_link(SECRET, link)
    expired = portal_tokens.mint_link(SECRET, "demo", grant.customer_id, grant.email, ttl=-1)
    assert (await portal.call("POST", "session", token=expired))[0] == 401
    # A link is not a session, and a session is not a link.
    assert (await portal.call("GET", "cases", session=link))[0] == 401
    session = body["session"]
    assert (await portal.call("POST", "session", token=session))[0] == 401
    assert (await portal.call("GET", "cases", session=session))[0] == 200

    # Requests for one address are limited (the same answer for any address).
    statuses = [
        (await portal.call("POST", "link", tenant="demo", email="minji@example.com"))[0]
        for _ in range(4)
    ]
    assert statuses[-1] == 429 and 202 in statuses


async def test_a_customer_sees_and_answers_only_its_own_cases(portal: Portal) -> None:
    mine = await portal.case_of("demo", "minji@example.com", "환불 문의")
    theirs = await portal.case_of("demo", "seojun@example.com", "배송 문의")
    # The same address at another tenant is another customer.
    elsewhere = await portal.case_of("acme", "minji@example.com", "다른 회사 문의")
    token = auth.mint(SECRET, "demo", "test-supervisor", ["supervisor"])
    async with sb_grpc.channel(portal.platform.case_target, token) as ch:
        await case_pb2_grpc.CaseServiceStub(ch).AddNote(
            case_pb2.AddNoteRequest(case_id=mine.case_id, text="internal: VIP, refund approved")
        )
    session = await portal.sign_in("demo", "minji@example.com")

    status, listed = await portal.call("GET", "cases", session=session)
    assert status == 200
    assert [c["case_id"] for c in listed["cases"]] == [mine.case_id]
    status, case = await portal.call("GET", f"cases/{mine.case_id}", session=session)
    assert status == 200
    assert [(m["author"], m["text"]) for m in case["messages"]] == [("customer", "환불 문의")]
    assert "internal" not in str(case) and "test-supervisor" not in str(case)
    # By id or reference, another customer's case and another tenant's do not exist.
    for other in (theirs.case_id, theirs.reference, elsewhere.case_id, elsewhere.reference):
        assert (await portal.call("GET", f"cases/{other}", session=session))[0] == 404
        assert (await portal.call("POST", f"cases/{other}/reply", session=session, text="hi"))[
            0
        ] == 404
    # Without a session nothing is shown or written.
    for method, path, body in (
        ("GET", "cases", {}),
        ("GET", f"cases/{mine.case_id}", {}),
        ("POST", f"cases/{mine.case_id}/reply", {"text": "hi"}),
        ("POST", "requests", {"subject": "s", "text": "t"}),
    ):
        assert (await portal.call(method, path, **body))[0] == 401
        assert (await portal.call(method, path, session="ps1.bad.token", **body))[0] == 401

    # The customer at the other tenant sees its own case only.
    other_session = await portal.sign_in("acme", "minji@example.com")
    status, listed = await portal.call("GET", "cases", session=other_session)
    assert [c["case_id"] for c in listed["cases"]] == [elsewhere.case_id]
    assert (await portal.call("GET", f"cases/{mine.case_id}", session=other_session))[0] == 404

    # A reply is a contact threaded into the case (routed like any), recorded in its history.
    sub = await portal.bus.js.pull_subscribe(
        "contact.demo.chat.created",
        stream="EVENTS",
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW),
    )
    status, _ = await portal.call(
        "POST", f"cases/{mine.case_id}/reply", session=session, text="계좌로 환불해 주세요"
    )
    assert status == 202
    [msg] = await sub.fetch(1, timeout=15)
    created = events_pb2.ContactCreated.FromString(msg.data)
    assert created.contact.case_id == mine.case_id
    assert created.contact.identities[0].value == "minji@example.com"
    assert created.contact.language == "ko" and list(created.contact.skills) == ["billing"]
    await portal.recorded("demo", created.contact.contact_id)
    status, case = await portal.call("GET", f"cases/{mine.case_id}", session=session)
    assert [m["text"] for m in case["messages"]] == ["환불 문의", "계좌로 환불해 주세요"]

    # A new request is a contact of this customer, however its body is written.
    status, _ = await portal.call(
        "POST", "requests", session=session, subject="주소 변경", text="주소를 바꾸고 싶어요"
    )
    assert status == 202
    [msg] = await sub.fetch(1, timeout=15)
    created = events_pb2.ContactCreated.FromString(msg.data)
    assert created.contact.subject == "주소 변경" and not created.contact.case_id
    assert created.contact.identities[0].value == "minji@example.com"
    await sub.unsubscribe()


async def test_knowledge_base_search_suggestions_and_votes(portal: Portal) -> None:
    await portal.platform.publish_article("환불 안내", "환불은 사흘 걸립니다.")
    status, found = await portal.call("GET", "kb/search?tenant=demo&q=환불")
    assert status == 200
    [hit] = found["hits"]
    assert hit["title"] == "환불 안내"
    # Another tenant's knowledge base does not have it.
    assert (await portal.call("GET", "kb/search?tenant=acme&q=환불"))[1]["hits"] == []
    status, suggested = await portal.call("GET", "kb/suggest?tenant=demo&text=환불 받고 싶어요")
    assert [h["article_id"] for h in suggested["hits"]] == [hit["article_id"]]
    # One vote per voter: a visitor voting again changes its vote; a customer's counts apart.
    vote = {"tenant": "demo", "article_id": hit["article_id"]}
    assert await portal.call("POST", "kb/vote", **vote, helpful=True) == (
        200,
        {"helpful": 1, "not_helpful": 0},
    )
    assert (await portal.call("POST", "kb/vote", **vote, helpful=False))[1] == {
        "helpful": 0,
        "not_helpful": 1,
    }
    await portal.case_of("demo", "minji@example.com", "문의")
    session = await portal.sign_in("demo", "minji@example.com")
    assert (await portal.call("POST", "kb/vote", session=session, **vote, helpful=True))[1] == {
        "helpful": 1,
        "not_helpful": 1,
    }
    # A session of one tenant does not vote in another's.
    other = {"tenant": "acme", "article_id": hit["article_id"]}
    assert (await portal.call("POST", "kb/vote", session=session, **other, helpful=True))[0] == 403


async def test_catalogue_forms_per_tenant_checked_fields_and_the_case_they_open(
    portal: Portal,
) -> None:
    mine = await portal.case_of("demo", "minji@example.com", "요금 문의")
    await portal.case_of("acme", "minji@example.com", "다른 회사 문의")
    session = await portal.sign_in("demo", "minji@example.com")
    other_session = await portal.sign_in("acme", "minji@example.com")

    # Each tenant lists the forms of its own templates and of every tenant's ("*"), not another's.
    status, listed = await portal.call("GET", "catalogue", session=session)
    assert status == 200
    assert [i["template"] for i in listed["items"]] == [
        "password-reset",
        "hardware-request",
        "billing-question",
    ]
    status, elsewhere = await portal.call("GET", "catalogue", session=other_session)
    assert [i["template"] for i in elsewhere["items"]] == ["password-reset", "hardware-request"]
    hardware = listed["items"][1]
    assert hardware["name"]["ko"] == "장비 요청" and hardware["name"]["ja"] == "機器の申請"
    assert [(f["name"], f["kind"], f["required"]) for f in hardware["fields"]] == [
        ("item", "choice", True),
        ("needed_by", "date", True),
        ("reason", "multiline", True),
    ]
    assert [c["value"] for c in hardware["fields"][0]["choices"]] == [
        "laptop",
        "monitor",
        "headset",
    ]
    assert (await portal.call("GET", "catalogue"))[0] == 401
    # Another tenant's form cannot be sent either.
    status, body = await portal.call(
        "POST", "catalogue/billing-question", session=other_session, fields={"question": "?"}
    )
    assert status == 404, body

    # A wrong form is refused naming its first wrong field and the problem.
    good = {"item": "laptop", "needed_by": "2027-01-15", "reason": "새로 입사했습니다"}
    for fields, field, problem in (
        ({**good, "reason": "  "}, "reason", "is required"),
        ({k: v for k, v in good.items() if k != "needed_by"}, "needed_by", "is required"),
        ({**good, "item": "tablet"}, "item", "'tablet' is not one of laptop, monitor, headset"),
        ({**good, "needed_by": "2027-02-30"}, "needed_by", "is not a date (YYYY-MM-DD)"),
        ({**good, "colour": "red"}, "colour", "is not a field of this form"),
        ({**good, "reason": "x" * 1001}, "reason", "is longer than 1000 characters"),
    ):
        status, body = await portal.call(
            "POST", "catalogue/hardware-request", session=session, fields=fields, language="ko"
        )
        assert (status, body.get("field"), body.get("problem")) == (400, field, problem), body
    status, body = await portal.call(
        "POST", "catalogue/password-reset", session=session, fields={"user_id": "min ji"}
    )
    assert (status, body["field"], body["problem"]) == (
        400,
        "user_id",
        "is not in the expected form",
    )

    # A filled form is a contact naming the template, routed by its skills and priority, which
    # opens a case of its own of the template's type and priority.
    sub = await portal.bus.js.pull_subscribe(
        "contact.demo.chat.created",
        stream="EVENTS",
        config=js_api.ConsumerConfig(deliver_policy=js_api.DeliverPolicy.NEW),
    )
    status, body = await portal.call(
        "POST",
        "catalogue/billing-question",
        session=session,
        fields={"invoice": " INV-2026-11 ", "question": "11월 요금이 두 번 나갔어요"},
        language="ko",
    )
    assert status == 202, body
    [msg] = await sub.fetch(1, timeout=15)
    await sub.unsubscribe()
    created = events_pb2.ContactCreated.FromString(msg.data)
    contact = created.contact
    assert contact.template == "billing-question" and not contact.case_id
    assert dict(contact.form) == {
        "invoice": "INV-2026-11",
        "question": "11월 요금이 두 번 나갔어요",
    }
    assert list(contact.skills) == ["billing"] and contact.priority == 1
    assert contact.subject == "요금 문의" and contact.language == "ko"
    assert (
        contact.content[0].text == "청구서 번호: INV-2026-11\n문의 내용: 11월 요금이 두 번 나갔어요"
    )
    case = await portal.recorded("demo", contact.contact_id)
    assert case.case_id != mine.case_id  # not joined to the customer's open case
    assert case.template == "billing-question"
    assert case.case_type == case_pb2.CASE_TYPE_INQUIRY
    assert case.priority == case_pb2.CASE_PRIORITY_HIGH
    status, shown = await portal.call("GET", f"cases/{case.case_id}", session=session)
    assert [m["text"] for m in shown["messages"]] == [contact.content[0].text]

    status, _ = await portal.call(
        "POST",
        "catalogue/password-reset",
        session=session,
        fields={"user_id": "minji.kim", "system": "vpn"},
        language="en",
    )
    assert status == 202
    cases = (await portal.call("GET", "cases", session=session))[1]["cases"]
    for _ in range(200):
        if len(cases) == 3:
            break
        await asyncio.sleep(0.05)
        cases = (await portal.call("GET", "cases", session=session))[1]["cases"]
    reset = next(c for c in cases if c["subject"] == "Password reset")
    token = auth.mint(SECRET, "demo", "test-supervisor", ["supervisor"])
    async with sb_grpc.channel(portal.platform.case_target, token) as ch:
        got = await case_pb2_grpc.CaseServiceStub(ch).GetCase(
            case_pb2.GetCaseRequest(case_id=reset["case_id"])
        )
    assert got.case_type == case_pb2.CASE_TYPE_SERVICE_REQUEST
    assert got.priority == case_pb2.CASE_PRIORITY_NORMAL and got.template == "password-reset"
    assert got.contacts[0].messages[0].parts[0].text == "User ID: minji.kim\nSystem: VPN"


CODE_RE = re.compile(r": ([0-9]{6})\s")


async def code_for(portal: Portal, email: str, count: int) -> str:
    """The code of the `count`-th sign-in code mail to `email`."""
    for _ in range(300):
        mails = [m for m in portal.mail.mails() if email in m.recipients and "code" in m.subject]
        if len(mails) >= count:
            found = CODE_RE.search(mails[-count].text)  # newest first
            assert found, mails[-count].text
            return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no sign-in code mail to {email}")


async def test_sign_in_by_case_reference_and_a_mailed_code(
    portal: Portal, database_url: str
) -> None:
    from sqlalchemy import update

    from switchboard.case.adapters import database
    from switchboard.case.reports.orm import PortalCode

    mine = await portal.case_of("demo", "minji@example.com", "요금 문의")
    elsewhere = await portal.case_of("acme", "seojun@example.com", "다른 회사 문의")
    email = "minji@example.com"

    async def ask(tenant: str, reference: str) -> tuple[int, dict[str, Any]]:
        return await portal.call("POST", "code", tenant=tenant, reference=reference)

    async def verify(tenant: str, reference: str, code: str) -> tuple[int, dict[str, Any]]:
        return await portal.call(
            "POST", "code/session", tenant=tenant, reference=reference, code=code
        )

    # A known and an unknown case get the same answer; only the case's customer gets a code.
    assert await ask("demo", mine.reference) == await ask("demo", "C-NOCASE") == (202, {"ok": True})
    code = await code_for(portal, email, 1)
    [mail] = [m for m in portal.mail.mails() if email in m.recipients]
    assert mail.subject == "Your sign-in code" and mine.reference in mail.text
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    # A wrong code, or any code for an unknown case, is the same refusal.
    assert (await verify("demo", mine.reference, wrong))[0] == 401
    assert await verify("demo", "C-NOCASE", code) == await verify("demo", mine.reference, wrong)
    # The right code gives the session a link gives: the customer's own cases.
    status, body = await verify("demo", mine.reference.lower(), code)
    assert status == 200 and body["email"] == email, body
    session = body["session"]
    status, listed = await portal.call("GET", "cases", session=session)
    assert [c["case_id"] for c in listed["cases"]] == [mine.case_id]
    # A code works once.
    assert (await verify("demo", mine.reference, code))[0] == 401

    # Another tenant's case is unknown here: no mail, no session.
    before = len(portal.mail.mails())
    assert await ask("demo", elsewhere.reference) == (202, {"ok": True})
    assert (await verify("demo", elsewhere.reference, "123456"))[0] == 401
    await ask("acme", elsewhere.reference)
    other = await code_for(portal, "seojun@example.com", 1)
    assert len(portal.mail.mails()) == before + 1  # acme's, not demo's
    assert (await verify("demo", elsewhere.reference, other))[0] == 401
    status, body = await verify("acme", elsewhere.reference, other)
    assert status == 200 and body["email"] == "seojun@example.com"
    # The same code checked twice at once signs in once.
    await ask("acme", elsewhere.reference)
    other = await code_for(portal, "seojun@example.com", 2)
    both = await asyncio.gather(
        verify("acme", elsewhere.reference, other), verify("acme", elsewhere.reference, other)
    )
    assert sorted(status for status, _ in both) == [200, 401]

    # An expired code is refused.
    await ask("demo", mine.reference)
    code = await code_for(portal, email, 2)
    engine = database.create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(PortalCode)
                .where(PortalCode.tenant == "demo", PortalCode.reference == mine.reference)
                .values(expires_at=datetime(2026, 1, 1, tzinfo=UTC))
            )
    finally:
        await engine.dispose()
    assert (await verify("demo", mine.reference, code))[0] == 401

    # Five wrong codes lock the case's code: the right one is refused after them.
    await ask("demo", mine.reference)
    code = await code_for(portal, email, 3)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (await verify("demo", mine.reference, wrong))[0] == 401
    assert (await verify("demo", mine.reference, code))[0] == 401

    # Codes for one case are limited, as links for one address are.
    assert (await ask("demo", mine.reference))[0] == 429


async def test_suggestion_views_are_counted_as_deflections_in_the_report(portal: Portal) -> None:
    await portal.platform.publish_article("환불 안내", "환불은 사흘 걸립니다.")
    await portal.case_of("demo", "minji@example.com", "요금 문의")
    await portal.case_of("acme", "minji@example.com", "다른 회사 문의")
    session = await portal.sign_in("demo", "minji@example.com")
    other_session = await portal.sign_in("acme", "minji@example.com")
    [hit] = (await portal.call("GET", "kb/suggest?tenant=demo&text=환불 받고 싶어요"))[1]["hits"]
    article = hit["article_id"]

    async def seen(draft: str, event: str, who: str = session) -> int:
        status, _ = await portal.call(
            "POST", "kb/seen", session=who, draft_id=draft, event=event, article_id=article
        )
        return status

    # Read a suggestion and left: a deflection.
    assert await seen("draft-left-0001", "shown") == 202
    assert await seen("draft-left-0001", "opened") == 202
    assert await seen("draft-left-0001", "opened") == 202
    # Read a suggestion, then sent the request anyway: submitted after viewing.
    assert await seen("draft-sent-0001", "shown") == 202
    assert await seen("draft-sent-0001", "opened") == 202
    status, _ = await portal.call(
        "POST",
        "requests",
        session=session,
        subject="환불",
        text="환불 받고 싶어요",
        draft_id="draft-sent-0001",
    )
    assert status == 202
    # Shown and never opened: neither.
    assert await seen("draft-none-0001", "shown") == 202
    # Another tenant's customer counts in its own tenant; nobody counts without a session.
    assert await seen("draft-acme-0001", "shown", other_session) == 202
    assert await seen("draft-acme-0001", "opened", other_session) == 202
    assert await seen("draft-anon-0001", "shown", "") == 401
    assert await seen("x", "shown") == 400

    async def report(tenant: str) -> dict[str, float]:
        request = case_pb2.GetReportRequest(
            kind=case_pb2.REPORT_KIND_DEFLECTION, interval="day", time_zone="UTC"
        )
        request.to.FromDatetime(datetime.now(UTC).replace(microsecond=0) + timedelta(days=1))
        getattr(request, "from").FromDatetime(datetime.now(UTC) - timedelta(days=2))
        token = auth.mint(SECRET, tenant, "test-supervisor", ["supervisor"])
        async with sb_grpc.channel(portal.platform.case_target, token) as ch:
            got = await case_pb2_grpc.CaseServiceStub(ch).GetReport(request)
        totals: dict[str, float] = {}
        for row in got.rows:
            for v in row.values:
                totals[v.name] = totals.get(v.name, 0) + (v.value if v.defined else 0)
        assert "deflected" in got.columns and "submitted_after_viewing" in got.columns
        return totals

    demo = await report("demo")
    assert {k: demo[k] for k in ("suggestions_shown", "articles_opened", "deflected")} == {
        "suggestions_shown": 3,
        "articles_opened": 3,
        "deflected": 1,
    }
    assert demo["submitted_after_viewing"] == 1
    acme = await report("acme")
    assert (acme["suggestions_shown"], acme["deflected"], acme["submitted_after_viewing"]) == (
        1,
        1,
        0,
    )

"""The QA screen in chromium on the real platform: an agent handles two chats in the inbox; an
evaluator samples them (random and targeted), reviews each transcript beside the scoring form and
scores one with a fatal error; the agent sees its evaluations and disputes that one; the evaluator
who scored it may not decide, a second evaluator upholds it; the scorecard's chart shows the
fatal-error rate."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import Route, expect

from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.v1 import case_pb2, case_pb2_grpc

from .conftest import SECRET, Platform
from .test_inbox_browser import sign_in, start_chat

CHATS = (
    ("김민지", "요금이 두 번 청구되었어요", "확인 후 환불해 드리겠습니다.", "escalated"),
    ("이서연", "비밀번호를 잊었어요", "재설정 링크를 보내 드릴게요.", "resolved"),
)


async def handle_chat(pages: Any, platform: Platform, inbox: Any, chat: tuple[str, ...]) -> None:
    """A customer chats, the agent accepts, replies, the customer leaves, the agent wraps up."""
    name, text, reply, code = chat
    customer = await pages.new(f"{platform.url}/?tenant=demo")
    await start_chat(customer, name, text)
    await expect(inbox.get_by_test_id("offer")).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("conv-name")).to_have_text(name)
    box = inbox.get_by_test_id("reply-text")
    await box.fill(reply)
    await box.press("Control+Enter")
    # The agent's own thread shows the reply once the chat service took it, then the customer.
    thread = inbox.get_by_test_id("thread")
    await expect(thread.locator("[data-author=agent]")).to_contain_text(reply)
    await expect(inbox.get_by_test_id("reply-error")).to_be_hidden()
    await expect(customer.locator("#messages li.agent .text")).to_have_text(reply)
    await customer.locator("#end").click()
    await expect(inbox.get_by_test_id("conv-state")).to_have_attribute("data-state", "ended")
    await inbox.get_by_test_id("wrapup-code").select_option(code)
    await inbox.get_by_test_id("wrapup").click()
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(0)


async def recorded(platform: Platform) -> list[Any]:
    """The case service has both chats as handled, ended and wrapped up."""
    token = auth.mint(SECRET, "demo", "test-qa", ["qa"])
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    end.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    request = case_pb2.ListQaSamplesRequest(to=end, rate=1.0, targets=["escalated"])
    getattr(request, "from").CopyFrom(start)
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)
        for _ in range(150):
            found = list((await stub.ListQaSamples(request)).samples)
            if len(found) == 2 and any(s.escalated for s in found):
                return found
            await asyncio.sleep(0.1)
    raise AssertionError(f"the case service did not record both chats: {found}")


async def test_score_dispute_decide_and_the_scorecard(platform: Platform, pages: Any) -> None:
    inbox = await pages.new(f"{platform.url}/inbox")
    await sign_in(inbox, "ko-1", "demo-ko-1")
    await expect(inbox.get_by_test_id("presence")).to_have_attribute("data-presence", "available")
    for chat in CHATS:
        await handle_chat(pages, platform, inbox, chat)
    samples = await recorded(platform)
    assert {s.agent_id for s in samples} == {"ko-1"}

    # The evaluator's sample: every contact at 100 %, the escalated one marked as targeted.
    qa = await pages.new(f"{platform.url}/qa")
    # The list loaded on sign-in (5 % at random) is answered only after the evaluator's own
    # load: the page shows the answer to its latest request.
    answered, late, held = asyncio.Event(), asyncio.Event(), []

    async def samples(route: Route) -> None:
        first = not held
        held.append(route)
        if first:
            await answered.wait()
        response = await route.fetch()
        await route.fulfill(response=response)
        (late if first else answered).set()

    await qa.route("**/api/qa/samples", samples)
    await sign_in(qa, "qa-1", "demo-qa-1")
    await expect(qa.get_by_test_id("tab-samples")).to_have_text("샘플")
    # Signed in (the tabs are shown): an evaluator has no "My evaluations".
    await expect(qa.get_by_test_id("tab-samples")).to_be_visible()
    await expect(qa.get_by_test_id("tab-mine")).to_be_hidden()
    await qa.get_by_test_id("s-rate").fill("100")
    await qa.get_by_test_id("t-escalated").check()
    await qa.get_by_test_id("s-load").click()
    rows = qa.get_by_test_id("sample")
    await expect(rows).to_have_count(2)
    await asyncio.wait_for(late.wait(), 15)
    await qa.wait_for_timeout(300)  # the sign-in's late answer is in the page, and not shown
    await expect(rows).to_have_count(2)
    await qa.unroute("**/api/qa/samples")
    targeted = rows.filter(has=qa.locator("[data-reason=escalated]"))
    await expect(targeted).to_have_count(1)
    await expect(targeted.locator("[data-reason=escalated]")).to_have_text("에스컬레이션")
    await pages.shot(qa, "qa-samples")

    # Reviewing the escalated chat: its transcript beside the form; a fatal item fails.
    await targeted.get_by_test_id("review").click()
    transcript = qa.get_by_test_id("transcript")
    await expect(transcript.locator("[data-author=customer]")).to_contain_text(CHATS[0][1])
    await expect(transcript.locator("[data-author=agent]")).to_contain_text(CHATS[0][2])
    compliance = qa.locator("[data-testid=form-item][data-item=compliance]")
    await expect(compliance).to_have_attribute("data-fatal", "true")
    await compliance.locator("input[value=fail]").check()
    await qa.get_by_test_id("qa-comment").fill("녹취 고지 안내가 없었습니다")
    await expect(qa.get_by_test_id("form-version")).to_contain_text("v1")
    await pages.shot(qa, "qa-review-fatal")
    await qa.get_by_test_id("submit-score").click()
    await expect(qa.get_by_test_id("review-result")).to_contain_text("점수 0: 치명적 오류 1건")

    # The other chat passes every item.
    await qa.get_by_test_id("back").click()
    other = rows.filter(has_not=qa.locator("[data-reason=escalated]"))
    await expect(other.get_by_test_id("review")).to_have_text("평가하기")
    await other.get_by_test_id("review").click()
    await expect(qa.get_by_test_id("transcript").locator("[data-author=customer]")).to_contain_text(
        CHATS[1][1]
    )
    await qa.get_by_test_id("submit-score").click()
    await expect(qa.get_by_test_id("review-result")).to_contain_text("점수 100")
    await qa.get_by_test_id("back").click()
    await expect(rows.get_by_test_id("eval-status")).to_have_count(2)

    # The agent, from the inbox, sees both evaluations and disputes the fatal one, with a reason.
    async with inbox.expect_popup() as popup:
        await inbox.get_by_test_id("qa-link").click()
    mine = await popup.value
    evaluations = mine.get_by_test_id("my-evaluation")
    await expect(evaluations).to_have_count(2)
    await expect(mine.get_by_test_id("tab-samples")).to_be_hidden()
    fatal = evaluations.filter(
        has=mine.locator("[data-testid=my-score]", has_text=re.compile(r"^0$"))
    )
    await expect(fatal).to_have_count(1)
    await fatal.get_by_test_id("open-dispute").click()
    await expect(mine.get_by_test_id("transcript").locator("[data-author=agent]")).to_contain_text(
        CHATS[0][2]
    )
    await expect(mine.locator("[data-item=compliance]")).to_have_class("fatal failed")
    await expect(mine.get_by_test_id("dispute-info")).to_contain_text("qa-1 평가 (default v1)")
    await mine.get_by_test_id("dispute-reason").fill("고지는 IVR에서 이미 안내되었습니다")
    await mine.get_by_test_id("dispute-submit").click()
    await expect(mine.get_by_test_id("review-result")).to_contain_text("이의 신청 중")
    await pages.shot(mine, "qa-agent-dispute")

    # The evaluator who scored it may not decide its dispute.
    await qa.get_by_test_id("tab-disputes").click()
    await expect(qa.get_by_test_id("dispute")).to_have_count(1)
    await qa.get_by_test_id("decide").click()
    await qa.get_by_test_id("uphold").click()
    await expect(qa.get_by_test_id("qa-error")).to_contain_text("second evaluator")

    # A second evaluator reads the reason and upholds the score.
    sup = await pages.new(f"{platform.url}/qa")
    await sign_in(sup, "sup-1", "demo-sup-1")
    await sup.get_by_test_id("tab-disputes").click()
    dispute = sup.get_by_test_id("dispute")
    await expect(dispute).to_contain_text("고지는 IVR에서 이미 안내되었습니다")
    await dispute.get_by_test_id("decide").click()
    await expect(sup.get_by_test_id("dispute-info")).to_contain_text("IVR")
    await expect(
        sup.get_by_test_id("transcript").locator("[data-author=customer]")
    ).to_contain_text(CHATS[0][1])
    await sup.get_by_test_id("decision-note").fill("IVR 안내는 상담원 고지를 대신하지 않습니다")
    await sup.get_by_test_id("uphold").click()
    await expect(sup.get_by_test_id("review-result")).to_contain_text("유지됨")
    await expect(sup.get_by_test_id("dispute-info")).to_contain_text("sup-1의 결정 — 유지됨")
    await pages.shot(sup, "qa-decided")

    # The agent sees the decision.
    await mine.get_by_test_id("back").click()
    await expect(mine.locator("[data-status=upheld]")).to_have_count(1)

    # The scorecard: one fatal error in two evaluations today, in the tiles, the table and the
    # chart; in English too.
    await sup.get_by_test_id("tab-scorecard").click()
    await expect(sup.get_by_test_id("card-n")).to_have_text("2")
    await expect(sup.get_by_test_id("card-fatal")).to_have_text("50%")
    await expect(sup.get_by_test_id("card-avg")).to_have_text("50")
    await expect(
        sup.get_by_test_id("card-agents").locator("tr[data-key='ko-1'] [data-testid=fatal-rate]")
    ).to_have_text("50%")
    point = sup.get_by_test_id("qa-chart").get_by_test_id("qa-chart-point")
    await expect(point).to_have_count(1)
    await expect(point).to_have_attribute("data-value", "50.0")
    await expect(sup.get_by_test_id("qa-chart").get_by_test_id("qa-chart-value")).to_have_text(
        "50%"
    )
    await sup.locator("#app select.ui-lang").select_option("en")
    await expect(sup.get_by_test_id("tab-scorecard")).to_have_text("Scorecard")
    await expect(sup.get_by_test_id("qa-chart").get_by_test_id("qa-chart-value")).to_have_text(
        "50%"
    )
    await pages.shot(sup, "qa-scorecard")
    assert pages.errors == []


async def test_a_form_put_in_the_browser_is_a_new_version(platform: Platform, pages: Any) -> None:
    qa = await pages.new(f"{platform.url}/qa", locale="en-US")
    await sign_in(qa, "qa-1", "demo-qa-1")
    await qa.locator("#app select.ui-lang").select_option("zh")
    await qa.get_by_test_id("tab-forms").click()
    built_in = qa.get_by_test_id("forms-list").locator("[data-form=default]")
    await expect(built_in).to_have_attribute("data-version", "1")
    await expect(built_in).to_contain_text("共 9 项，其中致命项 3 项")
    await qa.get_by_test_id("form-yaml").fill(
        "id: default\ntitle: 服务台\nitems:\n"
        "  - {id: identity_verified, text: 核实来电人身份, fatal: true}\n"
        "  - {id: greeting, text: 规范问候, weight: 1}\n"
    )
    await qa.get_by_test_id("put-form").click()
    await expect(qa.get_by_test_id("form-result")).to_have_text("评分表 default 已保存为第 2 版。")
    await expect(built_in).to_have_attribute("data-version", "2")
    await expect(built_in).to_contain_text("服务台")
    # A form that does not parse is refused, saying where.
    await qa.get_by_test_id("form-yaml").fill("id: default\nitems: []\n")
    await qa.get_by_test_id("put-form").click()
    await expect(qa.get_by_test_id("qa-error")).to_contain_text("items")
    await expect(qa.get_by_test_id("form-result")).to_have_text("")
    await expect(built_in).to_have_attribute("data-version", "2")
    await pages.shot(qa, "qa-forms-zh")
    assert pages.errors == []
